"""``probe``: what this board (or host) has."""

import os
import platform
import re
import subprocess
import sys

from . import SCHEMA_VERSION, __version__, boards, sources, thermal
from .sources import find_tool, read_text, under
from .trtexec import TRTEXEC_PATHS

NVPMODEL_PATHS = ("usr/sbin/nvpmodel", "usr/bin/nvpmodel")


def board_model(fs_root):
    for rel in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        try:
            return read_text(under(fs_root, rel))
        except (OSError, IOError):
            continue
    for rel in ("sys/class/dmi/id/product_name",):
        try:
            return read_text(under(fs_root, rel))
        except (OSError, IOError):
            continue
    return None


def l4t_release(fs_root):
    """{"release": "R32", "revision": "6.1", "raw": first line} from
    /etc/nv_tegra_release, or None off a Jetson."""
    try:
        with open(under(fs_root, "etc/nv_tegra_release")) as f:
            first = f.readline().strip()
    except (OSError, IOError):
        return None
    m = re.search(r"#\s*(R\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)", first)
    out = {"raw": first}
    if m:
        out["release"] = m.group(1)
        out["revision"] = m.group(2)
        out["version"] = "%s.%s" % (m.group(1)[1:], m.group(2))
    return out


def _run(cmd, timeout=10):
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        out = p.communicate(timeout=timeout)[0]
        return p.returncode, out.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return None, ""
    except OSError as e:
        return None, str(e)


def nvpmodel_mode(fs_root):
    """{"name": "MAXN", "id": 0} from ``nvpmodel -q`` or its status file."""
    exe = find_tool(fs_root, NVPMODEL_PATHS, "nvpmodel")
    if exe:
        rc, out = _run([exe, "-q"])
        if rc == 0:
            m = re.search(r"NV Power Mode:\s*(\S+)", out)
            if m:
                res = {"name": m.group(1), "id": None, "source": exe}
                for line in out.splitlines()[1:]:
                    if line.strip().isdigit():
                        res["id"] = int(line.strip())
                        break
                return res
    try:
        txt = read_text(under(fs_root, "var/lib/nvpmodel/status"))
        m = re.search(r"pmode:(\d+)", txt)
        if m:
            return {"name": None, "id": int(m.group(1)), "source": "var/lib/nvpmodel/status"}
    except (OSError, IOError):
        pass
    return None


def runtime_info(quick=False):
    """Which runtimes import, with versions; quick only checks they are installed."""
    import importlib
    import importlib.util
    out = {}
    for mod in ("onnxruntime", "torch", "numpy"):
        spec = None
        try:
            spec = importlib.util.find_spec(mod)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            out[mod] = {"available": False, "reason": "not installed"}
            continue
        if quick:
            out[mod] = {"available": True, "version": None, "checked": "installed only"}
            continue
        try:
            m = importlib.import_module(mod)
        except Exception as e:  # noqa: BLE001
            out[mod] = {"available": False, "reason": "%s: %s" % (e.__class__.__name__, e)}
            continue
        info = {"available": True, "version": getattr(m, "__version__", None)}
        if mod == "onnxruntime":
            try:
                info["providers"] = list(m.get_available_providers())
            except Exception:  # noqa: BLE001
                pass
        if mod == "torch":
            try:
                info["cuda"] = bool(m.cuda.is_available())
                if info["cuda"]:
                    info["cuda_device"] = m.cuda.get_device_name(0)
            except Exception:  # noqa: BLE001
                pass
        out[mod] = info
    return out


def trtexec_info(fs_root):
    exe = find_tool(fs_root, TRTEXEC_PATHS, "trtexec")
    if not exe:
        return {"available": False, "reason": "not found under %s" % under(fs_root, TRTEXEC_PATHS[0])}
    rc, out = _run([exe, "--help"], timeout=20)
    m = re.search(r"TensorRT v(\d+)", out)
    return {"available": True, "path": exe, "version": m.group(1) if m else None}


def probe(fs_root="/", quick=False, tegrastats=None, nvml_lib=None):
    model = board_model(fs_root)
    src_list = sources.survey(fs_root, tegrastats=tegrastats, nvml_lib=nvml_lib)
    chosen = None
    try:
        src, _ = sources.make_source("auto", fs_root, 0.1, tegrastats=tegrastats,
                                     nvml_lib=nvml_lib)
        chosen = src.name
        src.close()
    except Exception as e:  # noqa: BLE001 - probe reports, never fails on this
        chosen = "error: %s" % e
    th = thermal.snapshot(fs_root)
    table = boards.detect(fs_root)
    return {
        "schema_version": SCHEMA_VERSION,
        "agent_version": __version__,
        "command": "probe",
        "ok": True,
        "fs_root": fs_root,
        "board": {
            "model": model,
            "compatible": boards.read_compatible(fs_root),
            "rail_table": table.describe() if table is not None else None,
            "l4t": l4t_release(fs_root),
            "nvpmodel": nvpmodel_mode(fs_root),
            "jetson": bool(model and ("jetson" in model.lower() or "quill" in model.lower()))
            or os.path.exists(under(fs_root, "etc/nv_tegra_release")),
        },
        "python": {
            "version": platform.python_version(),
            "executable": sys.executable,
            "implementation": platform.python_implementation(),
        },
        "os": {"system": platform.system(), "release": platform.release(),
               "machine": platform.machine(), "hostname": platform.node(),
               "cpus": os.cpu_count()},
        "runtimes": dict(runtime_info(quick), trtexec=trtexec_info(fs_root)),
        "power_sources": src_list,
        "power_auto": chosen,
        "thermal_zones": th["zones"],
        "board_state": _board_state(fs_root),
    }


def _board_state(fs_root):
    from .clocks import snapshot
    try:
        return snapshot(fs_root)
    except Exception as e:  # noqa: BLE001 - probe reports, never fails on this
        return {"error": "%s: %s" % (e.__class__.__name__, e)}
