"""The agent's core is standard library only and valid Python 3.6, and runs from a
copy of its folder alone."""

import ast
import json
import os
import shutil
import subprocess
import sys

import pytest
from agent_helpers import REPO, python36

from device_agents import emulate

AGENT = os.path.join(REPO, "device_agents")


def _vermin():
    exe = os.path.join(os.path.dirname(sys.executable), "vermin")
    if os.path.isfile(exe):
        return [exe]
    try:
        import vermin  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "vermin"]


def test_vermin_target_36():
    cmd = _vermin()
    if cmd is None:
        pytest.skip("vermin is not installed")
    p = subprocess.run(cmd + ["-t=3.6-", "--no-tips", "--violations", "--no-config-file",
                              AGENT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.decode()
    assert p.returncode == 0, out
    assert "violation" not in out.lower() or "no violations" in out.lower(), out


def test_vermin_would_catch_a_37_feature(tmp_path):
    """The check above can fail: a 3.7-only call is reported."""
    cmd = _vermin()
    if cmd is None:
        pytest.skip("vermin is not installed")
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nprint(time.monotonic_ns())\n")
    p = subprocess.run(cmd + ["-t=3.6-", "--no-tips", "--violations", "--no-config-file",
                              str(bad)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert p.returncode != 0


def _stdlib_names():
    names = getattr(sys, "stdlib_module_names", None)
    if names is None:
        pytest.skip("needs Python 3.10+ for sys.stdlib_module_names")
    return set(names)


def test_module_level_imports_are_standard_library():
    std = _stdlib_names()
    for fn in sorted(os.listdir(AGENT)):
        if not fn.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(AGENT, fn)).read())
        for node in tree.body:  # module level only: runtimes are imported lazily
            if isinstance(node, ast.Import):
                mods = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: the agent itself
                    continue
                mods = [node.module.split(".")[0]]
            else:
                continue
            for m in mods:
                assert m in std, "%s imports %s at module level" % (fn, m)


def test_compiles_under_python36():
    py = python36()
    if py is None:
        pytest.skip("no Python 3.6 interpreter here")
    files = [os.path.join(AGENT, f) for f in os.listdir(AGENT) if f.endswith(".py")]
    p = subprocess.run([py, "-c", "import sys\n"
                        "for f in sys.argv[1:]: compile(open(f).read(), f, 'exec')"] + files,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert p.returncode == 0, p.stdout.decode()
    for f in files:  # and under this interpreter
        compile(open(f).read(), f, "exec")


def _copy_agent(tmp_path):
    dest = tmp_path / "board_home"
    shutil.copytree(AGENT, str(dest / "device_agents"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(dest)


def _clean_env():
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PYTHONNOUSERSITE"] = "1"
    return env


def test_runs_from_a_copy_of_the_folder_alone(tmp_path, tx2_tools_tree):
    home = _copy_agent(tmp_path)
    p = subprocess.run([sys.executable, "-m", "device_agents", "probe", "--quick",
                        "--fs-root", tx2_tools_tree], cwd=home, env=_clean_env(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.returncode == 0, p.stderr.decode()
    doc = json.loads(p.stdout.decode())
    assert doc["board"]["model"] == "quill"
    assert doc["board"]["rail_table"]["key"] == "tx2"
    assert doc["board"]["rail_table"]["carrier_total"] == "VDD_MUX"
    iio = [s for s in doc["power_sources"] if s["name"] == "iio"][0]
    assert iio["boundary"].startswith("module input (VDD_IN") and iio["refresh_s"] == 0.42
    assert doc["board"]["l4t"]["version"] == "32.6.1"
    assert doc["board"]["nvpmodel"]["name"] == "MAXN"
    assert doc["power_auto"] == "iio"
    avail = dict((s["name"], s["available"]) for s in doc["power_sources"])
    assert avail["iio"] and avail["tegrastats"] and not avail["hwmon"]
    assert doc["runtimes"]["trtexec"]["version"] == "8201"


def test_power_under_python36_from_a_copy(tmp_path):
    py = python36()
    if py is None:
        pytest.skip("no Python 3.6 interpreter here")
    home = _copy_agent(tmp_path)
    root = str(tmp_path / "tree")
    emulate.build_tree(root, "tx2", power_w=4.25)
    out = str(tmp_path / "p.json")
    trace = str(tmp_path / "trace.csv")
    p = subprocess.run([py, "-m", "device_agents", "power", "--fs-root", root, "--duration",
                        "0.3", "--repeats", "2", "--min-samples", "10", "--min-updates", "1",
                        "--interval-ms", "10", "--trace", trace, "--out", out],
                       cwd=home, env=_clean_env(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    assert p.returncode == 0, p.stderr.decode()
    doc = json.load(open(out))
    assert doc["agent"]["python"].startswith("3.6")
    assert doc["power_w_mean"] == pytest.approx(4.25)
    assert doc["samples"] >= 20
    # board table, carrier boundary, sensor refresh, trace and CI under 3.6 too
    assert doc["power"]["board"]["key"] == "tx2" and doc["energy_total_complete"] is True
    assert doc["carrier"]["power_w_mean"] == pytest.approx(4.25 * 0.35, rel=1e-3)
    assert doc["sensor_refresh_s"] == pytest.approx(0.42)
    assert doc["trace_rows"] > 20 and os.path.getsize(trace) > 0
    assert doc["ci95"]["power_w_mean"]["n"] == 2
    assert doc["board_state_before"]["jetson_clocks"] is False
    # the 3.6 interpreter has no runtimes: probe says so rather than failing
    p = subprocess.run([py, "-m", "device_agents", "probe", "--fs-root", root], cwd=home,
                       env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.returncode == 0, p.stderr.decode()
    doc = json.loads(p.stdout.decode())
    assert doc["python"]["version"].startswith("3.6")
    assert doc["runtimes"]["onnxruntime"]["available"] is False


FAKE_NUMPY = '''
class _Arr(object):
    def __init__(self, shape, dtype="float32"):
        self.shape, self.dtype = tuple(shape), dtype
    def astype(self, dtype):
        return _Arr(self.shape, dtype)
class random(object):
    class RandomState(object):
        def __init__(self, seed=0):
            pass
        def standard_normal(self, shape):
            return _Arr(shape)
def zeros(shape, dtype="float32"):
    return _Arr(shape, dtype)
'''

FAKE_ORT = '''
import time
__version__ = "0.0-stand-in"
def get_available_providers():
    return ["CPUExecutionProvider"]
class SessionOptions(object):
    pass
class _IO(object):
    def __init__(self, name, shape, type="tensor(float)"):
        self.name, self.shape, self.type = name, shape, type
class InferenceSession(object):
    def __init__(self, path, sess_options=None, providers=None):
        if open(path, "rb").read(1) != b"\\x08":
            raise RuntimeError("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF")
        self.providers = providers
    def get_providers(self):
        return list(self.providers)
    def get_inputs(self):
        return [_IO("input", [1, 3, 32, 64])]
    def get_outputs(self):
        return [_IO("logits", [1, 5, 32, 64])]
    def run(self, names, feeds):
        time.sleep(0.002)
        return [None]
'''


def test_measure_under_python36_with_stand_in_runtime(tmp_path, tiny_onnx):
    """The whole measure path (protocol, sampler, workload, JSON) under a real 3.6,
    with minimal stand-ins for numpy/onnxruntime (3.6 here has no wheels)."""
    py = python36()
    if py is None:
        pytest.skip("no Python 3.6 interpreter here")
    home = _copy_agent(tmp_path)
    fake = tmp_path / "fake_runtimes"
    (fake / "numpy").mkdir(parents=True)
    (fake / "numpy" / "__init__.py").write_text(FAKE_NUMPY)
    (fake / "onnxruntime").mkdir()
    (fake / "onnxruntime" / "__init__.py").write_text(FAKE_ORT)
    root = str(tmp_path / "tree")
    emulate.build_tree(root, "tx2", power_w=5.0)
    out = str(tmp_path / "m.json")
    env = _clean_env()
    env["PYTHONPATH"] = str(fake)
    p = subprocess.run([py, "-m", "device_agents", "measure", "--model", tiny_onnx,
                        "--runtime", "onnxruntime", "--fs-root", root, "--duration", "0.3",
                        "--repeats", "2", "--idle", "0.2", "--warmup", "0.05",
                        "--min-samples", "10", "--min-updates", "1", "--out", out], cwd=home, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.returncode == 0, p.stderr.decode() + open(out).read()
    doc = json.load(open(out))
    assert doc["agent"]["python"].startswith("3.6")
    assert doc["workload"]["runtime_version"] == "0.0-stand-in"
    assert doc["power_w_mean"] == pytest.approx(5.0)
    assert doc["idle_power_w"] == pytest.approx(5.0)
    for r in doc["repeats"]:
        assert r["energy_j_per_image_gross"] == pytest.approx(5.0 * r["duration_s"] / r["images"])
        assert r["energy_j_net"] == pytest.approx(0.0, abs=1e-9)
    assert doc["latency_ms"]["p50"] >= 2.0
    assert doc["active_idle_power_w"] == pytest.approx(5.0)
    assert all(r["thermal_gate"]["passed"] for r in doc["repeats"])


def test_every_command_under_python36(tmp_path):
    """probe, power (each board layout) and emulate build run under a real 3.6."""
    py = python36()
    if py is None:
        pytest.skip("no Python 3.6 interpreter here")
    home = _copy_agent(tmp_path)
    for layout in ("orin", "thor", "nano"):
        root = str(tmp_path / layout)
        p = subprocess.run([py, "-m", "device_agents", "emulate", "build", "--root", root,
                            "--layout", layout, "--power-w", "10", "--tools"], cwd=home,
                           env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.returncode == 0, p.stderr.decode()
        out = str(tmp_path / (layout + ".json"))
        p = subprocess.run([py, "-m", "device_agents", "power", "--fs-root", root,
                            "--duration", "0.2", "--min-updates", "1", "--min-samples", "3",
                            "--interval-ms", "20", "--out", out], cwd=home, env=_clean_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.returncode == 0, p.stderr.decode()
        assert json.load(open(out))["power_w_mean"] == pytest.approx(10.0, rel=1e-3), layout
        p = subprocess.run([py, "-m", "device_agents", "probe", "--quick", "--fs-root", root],
                           cwd=home, env=_clean_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        assert p.returncode == 0, p.stderr.decode()
        assert json.loads(p.stdout.decode())["power_auto"] == ("iio" if layout == "nano"
                                                               else "hwmon")
    # the waveform writer (emulate run) at the sensor rate, under 3.6 too
    root = str(tmp_path / "run")
    p = subprocess.run([py, "-m", "device_agents", "emulate", "run", "--root", root,
                        "--layout", "tx2", "--duration", "1.0", "--waveform",
                        '{"base_w": 6}'], cwd=home, env=_clean_env(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.returncode == 0, p.stderr.decode()
    ts, ps, _ = emulate.read_presented(root)
    assert 2 <= len(ts) <= 4 and all(v == pytest.approx(6.0) for v in ps)  # every 0.42 s
