"""Command line: ``python3 -m device_agents measure|power|probe|emulate``.

Every command writes one JSON document (to ``--out`` or stdout) carrying
``schema_version``; a failure exits non-zero with ``ok: false``, ``error`` (the
reason) and ``error_kind`` in that JSON.
"""

import argparse
import datetime
import json
import os
import platform
import signal
import sys
import time

from . import SCHEMA_VERSION, __version__, protocol, quality
from .errors import AgentError
from .sampler import Sampler
from .sources import SOURCE_NAMES, make_source

PROG = "python3 -m device_agents"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise AgentError("usage", "%s: %s" % (self.prog, message))


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be > 0: %r" % text)
    return v


def _nonneg_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text)
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0: %r" % text)
    return v


def _add_power_args(p):
    g = p.add_argument_group("power source")
    g.add_argument("--power", default="auto", metavar="SOURCE",
                   help="auto (default), %s, or a comma list of counters such as "
                        "rapl,nvml" % ", ".join(SOURCE_NAMES))
    g.add_argument("--fs-root", default="/", metavar="DIR",
                   help="directory standing in for / when reading sys/, proc/, etc/ "
                        "and board tools (default /)")
    g.add_argument("--rails", default=None, metavar="A,B",
                   help="only these rails (error if one is missing); the total is the "
                        "input rail if kept, else their sum")
    g.add_argument("--interval-ms", type=_positive_float, default=None, metavar="MS",
                   help="sampling interval (default: a quarter of the sensor's refresh "
                        "period where the sensor declares one, e.g. 105 ms for an INA3221 "
                        "at 0.42 s; else 10 ms = 100 Hz)")
    g.add_argument("--min-samples", type=int, default=None, metavar="N",
                   help="minimum power samples per window (default 50 when the sensor's "
                        "refresh is unknown, 2 when windows are sized in sensor updates)")
    g.add_argument("--min-updates", type=int, default=None, metavar="N",
                   help="minimum distinct sensor updates per window where the sensor "
                        "declares its refresh (polling_delay_<k> / update_interval); "
                        "windows are stretched to N refresh periods (default 10; when "
                        "only --min-samples is given, windows follow that sample rule as "
                        "before and too few updates are a warning)")
    g.add_argument("--sensor-refresh-ms", type=_nonneg_float, default=None, metavar="MS",
                   help="override the sensor refresh period read from sysfs; 0 = take "
                        "every sample as an instantaneous value")
    g.add_argument("--require-energy", action="store_true",
                   help="fail (exit 5) when no power source is found, when the total would "
                        "miss part of the module (e.g. a missing input rail), or when the "
                        "result's energy is null")
    g.add_argument("--trace", default=None, metavar="FILE",
                   help="also write the raw samples (time, rails, total) as CSV here")
    g.add_argument("--tegrastats", default=None, metavar="PATH",
                   help="tegrastats executable (default <fs-root>/usr/bin/tegrastats)")
    g.add_argument("--nvml-lib", default=None, metavar="PATH",
                   help="NVML library (default libnvidia-ml.so.1)")


def _add_window_args(p, duration, repeats):
    g = p.add_argument_group("protocol")
    g.add_argument("--duration", type=_positive_float, default=duration, metavar="S",
                   help="minimum timed window per repeat, seconds (default %g)" % duration)
    g.add_argument("--repeats", type=int, default=repeats, metavar="K",
                   help="timed windows (default %d)" % repeats)
    g.add_argument("--cv-warn", type=_nonneg_float, default=0.05, metavar="X",
                   help="warn when the repeats' coefficient of variation exceeds X "
                        "(default 0.05)")


def build_parser():
    p = _Parser(prog=PROG, description="DANCE device agent: energy and latency "
                "measured on the board (schema %d)." % SCHEMA_VERSION)
    p.add_argument("--version", action="version", version="%(prog)s " + __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    m = sub.add_parser("measure", help="measure a model's inference or training steps",
                       description="Idle baseline, warm-up, then timed repeats of a "
                       "model's inference (or SGD training steps) while power is sampled.")
    src = m.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="FILE", help="ONNX or TorchScript model file")
    src.add_argument("--manifest", metavar="FILE",
                     help="export manifest.json: one measurement per resolution bucket")
    m.add_argument("--runtime", required=True,
                   choices=("onnxruntime", "trtexec", "torchscript"))
    m.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="onnxruntime execution provider / torch device (default cpu)")
    m.add_argument("--input-shape", default=None, metavar="NxCxHxW",
                   help="input shape for dynamic dims or TorchScript, e.g. 1x3x512x1024")
    m.add_argument("--batch", type=int, default=None, metavar="N",
                   help="batch size for manifest buckets (default 1; 2 for training)")
    m.add_argument("--train-steps", type=int, default=0, metavar="N",
                   help="TorchScript only: time SGD training steps (at least N per "
                        "repeat) instead of inference; reports energy per step")
    m.add_argument("--lr", type=_positive_float, default=0.01, help="SGD learning rate")
    m.add_argument("--num-classes", type=int, default=None, metavar="C",
                   help="expected class count (training labels are drawn from it)")
    m.add_argument("--threads", type=int, default=0, metavar="N",
                   help="intra-op threads for onnxruntime/torch (default: runtime's)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--warmup", type=_nonneg_float, default=2.0, metavar="S",
                   help="warm-up seconds, discarded (default 2)")
    m.add_argument("--warmup-iters", type=int, default=3, metavar="N",
                   help="minimum warm-up steps (default 3)")
    m.add_argument("--idle", type=_nonneg_float, default=3.0, metavar="S",
                   help="idle baseline seconds before the run; 0 = none, net energy "
                        "null (default 3)")
    m.add_argument("--cooldown", type=_nonneg_float, default=0.0, metavar="S",
                   help="pause between repeats (default 0)")
    m.add_argument("--active-idle", type=_nonneg_float, default=None, metavar="S",
                   help="active idle baseline after warm-up (model loaded, nothing "
                        "running); default: as --idle; 0 = none")
    t = m.add_argument_group("thermal gate (before each repeat)")
    t.add_argument("--thermal-max-c", type=float, default=70.0, metavar="C",
                   help="start a window only below this zone temperature (default 70)")
    t.add_argument("--thermal-stable-c", type=_nonneg_float, default=0.5, metavar="C",
                   help="... and with zones stable within C over 0.2 s (default 0.5)")
    t.add_argument("--thermal-timeout", type=_nonneg_float, default=30.0, metavar="S",
                   help="wait at most S, then start with a warning; 0 = no gate (default 30)")
    g = m.add_argument_group("trtexec")
    g.add_argument("--trtexec", default=None, metavar="PATH",
                   help="trtexec (default <fs-root>/usr/src/tensorrt/bin/trtexec)")
    g.add_argument("--fp16", action="store_true", help="build the TensorRT engine in FP16")
    g.add_argument("--trtexec-arg", action="append", default=[], metavar="ARG",
                   help="extra trtexec argument (repeatable), e.g. --trtexec-arg=--useSpinWait")
    g.add_argument("--work-dir", default=None, metavar="DIR",
                   help="engine cache (default ~/.cache/dance_agent/engines)")
    _add_power_args(m)
    _add_window_args(m, duration=5.0, repeats=3)
    _add_output_args(m)

    pw = sub.add_parser("power", help="average power and energy over a window, no workload")
    _add_power_args(pw)
    _add_window_args(pw, duration=5.0, repeats=1)
    _add_output_args(pw)

    pr = sub.add_parser("probe", help="print what the board has")
    pr.add_argument("--fs-root", default="/", metavar="DIR")
    pr.add_argument("--quick", action="store_true",
                    help="do not import runtimes, only check they are installed")
    pr.add_argument("--tegrastats", default=None, metavar="PATH")
    pr.add_argument("--nvml-lib", default=None, metavar="PATH")
    _add_output_args(pr)

    sub.add_parser("emulate", help="emulated sysfs trees and waveform writer "
                   "(python3 -m device_agents emulate --help)", add_help=False)
    return p


def _add_output_args(p):
    p.add_argument("--out", default=None, metavar="FILE",
                   help="write the JSON result here (default: stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


# ------------------------------------------------------------------------------------
def _now_iso():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def peak_rss_mb():
    """This process's peak resident memory (VmHWM) in MB, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, IOError, ValueError):
        pass
    return None


def _envelope(command):
    return {
        "schema_version": SCHEMA_VERSION,
        "agent_version": __version__,
        "command": command,
        "ok": True,
        "started_at": _now_iso(),
    }


def _clean(obj):
    """NaN/inf are not JSON: they become null (not measured)."""
    if isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            return None
        return obj
    if isinstance(obj, dict):
        return dict((k, _clean(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(doc, path):
    text = json.dumps(_clean(doc), indent=2, sort_keys=False, allow_nan=False)
    if not path:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        os.makedirs(d)
    tmp = os.path.join(d, ".%s.tmp%d" % (os.path.basename(path), os.getpid()))
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def _logger(quiet):
    t0 = time.monotonic()

    def log(msg):
        if not quiet:
            sys.stderr.write("[agent %6.1fs] %s\n" % (time.monotonic() - t0, msg))
            sys.stderr.flush()
    return log


class Progress(object):
    """What the running command has finished so far (cold idle, active idle, finished
    repeats and buckets): main creates it and passes it down, so that when a signal
    or a failure ends the command it can still write those figures, partial: true."""

    def __init__(self):
        #: filled as the figures come; the protocol adds to it too (Config.progress)
        self.done = {}

    def start(self, source, **extra):
        """The source being measured (and, for ``measure``, its buckets and mode)."""
        self.done.update({"power_source": source.name, "power": source.describe()})
        self.done.update(extra)

    def bucket_done(self):
        """A finished bucket holds its own repeats and active idle: they must not
        reappear beside it as the next bucket's."""
        self.done.pop("repeats", None)
        self.done.pop("active_idle", None)

    def add_to(self, doc):
        """Add what was finished to a failure document, marked partial: true, so a
        SIGTERM loses nothing already measured."""
        p = self.done
        done = [k for k in ("idle", "active_idle", "repeats", "buckets") if p.get(k)]
        if not done:
            return
        doc["partial"] = True
        for k in ("power_source", "power", "mode"):
            if k in p:
                doc[k] = p[k]
        doc["idle"] = p.get("idle")
        doc["idle_power_w"] = p["idle"]["power_w"] if p.get("idle") else None
        if "active_idle" in p:
            doc["active_idle"] = p.get("active_idle")
        doc["repeats"] = list(p.get("repeats") or [])
        if p.get("buckets"):
            buckets = []
            for b in p["buckets"]:
                b = dict(b)
                b.pop("latencies_ms_all", None)
                buckets.append(b)
            doc["buckets"] = buckets
        doc["finished_at"] = _now_iso()


def _config(args, log, source, progress):
    """Protocol settings; the sampling interval and sample rules follow the sensor's
    refresh period where the source declares one."""
    refresh = source.refresh_s() if hasattr(source, "refresh_s") else None
    if source.kind != "power":
        refresh = None
    if args.interval_ms is not None:
        interval = args.interval_ms / 1000.0
    elif refresh:
        interval = min(0.25, max(0.01, refresh / 4.0))  # 4 reads per sensor update
    else:
        interval = 0.01
    min_samples = args.min_samples if args.min_samples is not None else (2 if refresh else 50)
    # an explicit --min-samples without --min-updates keeps the sample rule of earlier
    # releases (callers sized their windows with it); updates are then only checked
    by_updates = args.min_updates is not None or args.min_samples is None
    return protocol.Config(
        duration_s=args.duration, repeats=args.repeats,
        warmup_s=getattr(args, "warmup", 0.0), warmup_iters=getattr(args, "warmup_iters", 0),
        idle_s=getattr(args, "idle", 0.0), min_samples=min_samples,
        interval_s=interval, cv_warn=args.cv_warn,
        cooldown_s=getattr(args, "cooldown", 0.0), fs_root=args.fs_root, log=log,
        refresh_s=refresh, min_updates=args.min_updates or 10, size_by_updates=by_updates,
        active_idle_s=getattr(args, "active_idle", None),
        thermal_max_c=getattr(args, "thermal_max_c", None),
        thermal_timeout_s=getattr(args, "thermal_timeout", 0.0),
        thermal_stable_c=getattr(args, "thermal_stable_c", 0.5), progress=progress.done)


def _source(args):
    rails = [r.strip() for r in args.rails.split(",") if r.strip()] if args.rails else None
    interval = (args.interval_ms or 10.0) / 1000.0
    refresh = None if args.sensor_refresh_ms is None else args.sensor_refresh_ms / 1000.0
    return make_source(args.power, args.fs_root, interval, rails=rails,
                       tegrastats=args.tegrastats, nvml_lib=args.nvml_lib,
                       require=args.require_energy, refresh_s=refresh)


def _start_sampler(source, cfg, args):
    """Start sampling (with the raw trace if asked) and wait for the first sample, so
    no window starts before the data does."""
    if source.kind == "none":
        if getattr(args, "trace", None):
            raise AgentError("no_power_source", "--trace given but no power source")
        return None
    sampler = Sampler(source, cfg.interval_s)
    if args.trace:
        try:
            sampler.open_trace(args.trace, [
                "dance device agent raw trace: source=%s kind=%s unit=%s" % (
                    source.name, source.kind, "W" if source.kind == "power" else "J (cumulative)"),
                "total=%s refresh_s=%s (a sample at t stands for [t - refresh_s, t])"
                % (source.total_label(), cfg.refresh_s)])
        except (OSError, IOError) as e:
            raise AgentError("usage", "cannot write --trace %s: %s" % (args.trace, e))
    sampler.start()
    if not sampler.wait_first(max(5.0, cfg.interval_s * 10)):
        protocol._check_sampler(sampler)
    return sampler


def _agent_info(sampler, source):
    info = {"python": platform.python_version(), "pid": os.getpid(),
            "peak_rss_mb": peak_rss_mb()}
    if sampler is not None:
        info.update({
            "sample_interval_s": sampler.interval_s if not source.blocking else None,
            "samples_total": sampler.total,
            "achieved_rate_hz": sampler.achieved_rate_hz(),
            "missed_ticks": sampler.missed,
            "samples_with_unreadable_rails": sampler.read_errors,
            "sampler_cpu_s": sampler.cpu_s,
            "sampler_cpu_fraction": sampler.cpu_fraction(),
            "sampler_nice": sampler.nice,
        })
    return info


def _sampler_warnings(sampler, source, cfg):
    out = list(getattr(source, "warnings", []))
    if source.kind == "none":
        return out
    if sampler.read_errors:
        out.append("%d of %d samples had unreadable rails (left out, never zero)"
                   % (sampler.read_errors, sampler.total))
    rate = sampler.achieved_rate_hz()
    if not source.blocking and rate is not None:
        if rate < 0.5 / cfg.interval_s:
            out.append("sampler reached %.1f Hz of the %.1f Hz asked (busy machine or "
                       "slow source)" % (rate, 1.0 / cfg.interval_s))
    return out


# ------------------------------------------------------------------------------------
def _check_runtime_installed(runtime, args):
    """Fail fast (before the idle baseline) when the runtime is clearly missing."""
    import importlib.util
    if runtime == "trtexec":
        from .sources import find_tool
        from .trtexec import TRTEXEC_PATHS
        exe = args.trtexec or find_tool(args.fs_root, TRTEXEC_PATHS, "trtexec")
        if not exe or not os.path.isfile(exe):
            raise AgentError("missing_runtime", "trtexec not found (looked for %s)"
                             % (args.trtexec or os.path.join(args.fs_root, TRTEXEC_PATHS[0])))
        return
    mod = {"onnxruntime": "onnxruntime", "torchscript": "torch"}.get(runtime)
    if mod:
        try:
            spec = importlib.util.find_spec(mod)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            raise AgentError("missing_runtime", "%s is not installed for %s (Python %s)"
                             % (mod, sys.executable, platform.python_version()))


def _make_workload(args, model, shape, log):
    if args.runtime == "onnxruntime":
        from .workloads import OnnxRuntimeWorkload
        return OnnxRuntimeWorkload(model, device=args.device, input_shape=shape,
                                   threads=args.threads, seed=args.seed)
    if args.runtime == "torchscript":
        from .workloads import TorchScriptWorkload
        return TorchScriptWorkload(model, device=args.device, input_shape=shape,
                                   train=args.train_steps > 0, lr=args.lr,
                                   num_classes=args.num_classes, threads=args.threads,
                                   seed=args.seed)
    from .trtexec import TrtexecWorkload
    return TrtexecWorkload(model, fs_root=args.fs_root, trtexec=args.trtexec,
                           fp16=args.fp16, extra_args=args.trtexec_arg,
                           work_dir=args.work_dir, input_shape=shape, log=log)


_FIGURES = ("duration_s", "power_w_mean", "idle_power_w", "energy_j_gross", "energy_j_net",
            "energy_j_per_image_gross", "energy_j_per_image_net",
            "energy_j_per_step_gross", "energy_j_per_step_net", "latency_ms",
            "throughput_ips", "images", "steps", "samples", "samples_min_per_repeat", "cv",
            "cv_of", "cv_detail", "rails")


def _mode(args):
    """The ``mode`` field: what the timed steps were."""
    return "train" if args.train_steps > 0 else "inference"


def _check_measure_args(args):
    """Fail on option combinations argparse cannot express, before anything runs."""
    if args.train_steps < 0:
        raise AgentError("usage", "--train-steps must be >= 0")
    if args.train_steps and args.runtime != "torchscript":
        raise AgentError("usage", "--train-steps needs --runtime torchscript")
    if args.repeats < 1:
        raise AgentError("usage", "--repeats must be at least 1")


def _measure_jobs(args, batch):
    """(manifest or None, [(bucket or None, model file, input shape)]); every model
    file is checked here, so a bad one fails before the idle baseline is spent."""
    from .manifest import check_runtime, load_manifest
    from .workloads import check_model_file, parse_shape
    jobs = []
    manifest = None
    if args.manifest:
        manifest = load_manifest(args.manifest)
        check_runtime(manifest, args.runtime)
        for b in manifest["buckets"]:
            jobs.append((b, b["path"], (batch, 3, b["height"], b["width"])))
        if args.num_classes is None and manifest.get("num_classes") is not None:
            args.num_classes = int(manifest["num_classes"])
    else:
        jobs.append((None, args.model, parse_shape(args.input_shape)))
    for _, path, _ in jobs:
        check_model_file(path)
    return manifest, jobs


def _measure_job(args, log, job, source, sampler, cfg, idle):
    """One model (or manifest bucket): load it, then warm up and time it."""
    bucket, path, shape = job
    label = "%dx%d" % (bucket["height"], bucket["width"]) if bucket else path
    log("model %s (%s, %s)" % (label, args.runtime, _mode(args)))
    wl = _make_workload(args, path, shape, log)
    wl.prepare()
    try:
        res = protocol.measure_workload(wl, source, sampler, cfg, idle)
        res["workload"] = wl.describe()
    finally:
        wl.close()
    res["model"] = path
    if bucket:
        for k in ("height", "width", "file", "fraction"):
            res[k] = bucket[k]
    return res


def _run_jobs(args, log, jobs, source, sampler, cfg, progress, results):
    """Cold idle baseline, then every job, each result appended to results as it
    finishes (progress holds the same list); returns the cold idle baseline."""
    idle = protocol.measure_idle(source, sampler, cfg, what="cold idle")
    progress.done["idle"] = idle
    if idle and sampler is not None:
        sampler.trim(idle["t_end_monotonic"] - 1.0)
    for job in jobs:
        results.append(_measure_job(args, log, job, source, sampler, cfg, idle))
        progress.bucket_done()
    return idle


def _manifest_figures(results, manifest, warnings):
    """The buckets' fraction-weighted figures, the buckets themselves and the
    manifest they came from; each bucket's warnings are repeated, named by bucket."""
    agg = protocol.aggregate_buckets(results)
    fsum = agg.pop("fraction_sum")
    if any(b.get("fraction") is None for b in results):
        warnings.append("some buckets have no fraction: buckets weighted equally")
    elif abs(fsum - 1.0) > 1e-3:
        warnings.append("bucket fractions sum to %.4f, not 1: normalised" % fsum)
    for b in results:
        for w in b.get("warnings", []):
            warnings.append("bucket %dx%d: %s" % (b["height"], b["width"], w))
    for b in results:
        b.pop("latencies_ms_all", None)
    agg["buckets"] = results
    agg["manifest"] = manifest["path"]
    agg["format"] = manifest["format"]
    agg["num_classes"] = manifest.get("num_classes")
    agg["cdf"] = manifest.get("cdf")
    agg["max_temp_c"] = max([b["max_temp_c"] for b in results
                             if b.get("max_temp_c") is not None] or [None])
    return agg


def _measure_figures(results, manifest, warnings):
    """The document's figures: the one model's, or the manifest's over its buckets."""
    if manifest:
        top = _manifest_figures(results, manifest, warnings)
    else:
        top = results[0]
        top.pop("latencies_ms_all", None)
        warnings.extend(top.pop("warnings", []))
    _latency_fallback(top, warnings)
    if manifest:
        for b in results:
            _latency_fallback(b, [])
        top["active_idle_power_w"] = top.get("active_idle_power_w")
    return top


def cmd_measure(args, log, progress=None):
    """``measure``: cold idle, then each model (or manifest bucket) warmed up and
    timed; one JSON document with the figures."""
    progress = progress if progress is not None else Progress()
    _check_measure_args(args)
    batch = args.batch or (2 if args.train_steps > 0 else 1)
    manifest, jobs = _measure_jobs(args, batch)
    _check_runtime_installed(args.runtime, args)
    source, notes = _source(args)
    cfg = _config(args, log, source, progress)
    cfg.min_steps = max(1, args.train_steps)
    _log_source(log, source, cfg)
    doc = _envelope("measure")
    doc.update({"power_source": source.name})
    results = []
    progress.start(source, buckets=results, mode=_mode(args))
    state_before = _board_state(args.fs_root)
    sampler = _start_sampler(source, cfg, args)
    try:
        idle = _run_jobs(args, log, jobs, source, sampler, cfg, progress, results)
    finally:
        if sampler is not None:
            sampler.stop()
    warnings = []
    if sampler is not None:
        warnings.extend(_sampler_warnings(sampler, source, cfg))
    doc.update(_order(_measure_figures(results, manifest, warnings)))
    doc["mode"] = _mode(args)
    doc["runtime"] = args.runtime
    doc["idle"] = idle
    doc["cold_idle_power_w"] = idle["power_w"] if idle else None
    return _finish(doc, args, source, notes, sampler, warnings, _settings(args, cfg, batch),
                   state_before)


def _log_source(log, source, cfg):
    log("power source: %s (rails: %s; total: %s; boundary: %s; sensor refresh %s; "
        "sampling every %.0f ms)" % (
            source.name, ", ".join(source.rails) or "none", source.total_label(),
            getattr(source, "boundary", None) or "-",
            "%.3f s" % cfg.refresh_s if cfg.refresh_s else "unknown", cfg.interval_s * 1000))


def _board_state(fs_root):
    from .clocks import snapshot
    try:
        return snapshot(fs_root)
    except Exception as e:  # noqa: BLE001 - the record is optional, the run is not
        return {"error": "%s: %s" % (e.__class__.__name__, e)}


def _finish(doc, args, source, notes, sampler, warnings, settings, state_before=None):
    """The fields every measuring command ends its JSON with; with
    --require-energy, a null energy turns the result into exit 5 (figures kept)."""
    from .clocks import changes
    doc["power"] = source.describe()
    doc["power_notes"] = notes
    doc["energy_boundary"] = getattr(source, "boundary", None)
    doc["energy_total_complete"] = getattr(source, "total_complete", True)
    doc["sensor_refresh_s"] = protocol._lag(source) or None
    doc["settings"] = settings
    doc["host"] = _host(args.fs_root)
    doc["agent"] = _agent_info(sampler, source)
    state_after = _board_state(args.fs_root)
    doc["board_state_before"] = state_before
    doc["board_state_after"] = state_after
    warnings = list(warnings) + changes(state_before, state_after)
    if getattr(args, "trace", None) and sampler is not None:
        doc["trace_file"] = os.path.abspath(args.trace)
        doc["trace_rows"] = sampler.trace_rows
    doc["partial"] = False
    doc["warnings"] = _dedupe(warnings)
    doc.update(quality.assess(doc["warnings"]))  # the same warnings as codes: ok | warn | fail
    doc["finished_at"] = _now_iso()
    if args.require_energy and doc.get("energy_j_gross") is None:
        why = [w for w in doc["warnings"] if "unreadable" in w or "sampler" in w]
        doc.update({"ok": False, "error_kind": "no_power_source", "exit_code": 5,
                    "error": "--require-energy: no energy was measured (null)%s"
                    % (": " + "; ".join(why) if why else "")})
    return doc


def _latency_fallback(res, warnings):
    """trtexec without an exportTimes trace: take its printed summary."""
    lat = res.get("latency_ms")
    if not isinstance(lat, dict) or lat.get("p50") is not None:
        return
    reps = [r for r in res.get("repeats", []) if r.get("trtexec")]
    if not reps:
        return
    from .stats import mean
    out = {}
    for k in ("p50", "p90", "p99", "mean"):
        out[k] = mean([r["trtexec"]["latency_ms"].get(k) for r in reps])
    res["latency_ms"] = out
    warnings.append("latency from trtexec's printed summary (no per-query trace)")


def _order(res):
    out = {}
    for k in _FIGURES:
        if k in res:
            out[k] = res[k]
    for k, v in res.items():
        if k not in out:
            out[k] = v
    return out


def _dedupe(items):
    seen = set()
    out = []
    for x in items:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def _settings(args, cfg, batch=None):
    s = {"duration_s": cfg.duration_s, "repeats": cfg.repeats,
         "interval_s": cfg.interval_s, "min_samples": cfg.min_samples,
         "fs_root": args.fs_root, "power": args.power, "rails": args.rails,
         "min_updates": cfg.min_updates, "sensor_refresh_s": cfg.refresh_s,
         "windows_sized_by": "sensor updates" if (cfg.refresh_s and cfg.size_by_updates)
         else "samples",
         "min_window_s": cfg.min_window_s(), "require_energy": args.require_energy}
    if getattr(args, "thermal_timeout", None) is not None:
        s["active_idle"] = cfg.active_idle_s
        s["thermal_gate"] = {"max_c": cfg.thermal_max_c, "stable_c": cfg.thermal_stable_c,
                             "timeout_s": cfg.thermal_timeout_s}
    for k in ("warmup", "warmup_iters", "idle", "cooldown", "device", "train_steps",
              "threads", "input_shape", "runtime", "fp16"):
        if hasattr(args, k):
            s[k] = getattr(args, k)
    if batch is not None and getattr(args, "manifest", None):
        s["batch"] = batch
    return s


def _host(fs_root):
    from .probe import board_model, l4t_release
    l4t = l4t_release(fs_root)
    return {"hostname": platform.node(), "board_model": board_model(fs_root),
            "l4t": l4t.get("version") if l4t else None,
            "python": platform.python_version(), "machine": platform.machine()}


def cmd_power(args, log, progress=None):
    """``power``: windows with no workload; one JSON document with the figures."""
    progress = progress if progress is not None else Progress()
    source, notes = _source(args)
    cfg = _config(args, log, source, progress)
    _log_source(log, source, cfg)
    doc = _envelope("power")
    doc["power_source"] = source.name
    progress.start(source)
    state_before = _board_state(args.fs_root)
    sampler = _start_sampler(source, cfg, args)
    try:
        res = protocol.measure_power(source, sampler, cfg)
    finally:
        if sampler is not None:
            sampler.stop()
    warnings = res.pop("warnings")
    if sampler is not None:
        warnings.extend(_sampler_warnings(sampler, source, cfg))
    doc.update(_order(res))
    return _finish(doc, args, source, notes, sampler, warnings, _settings(args, cfg),
                   state_before)


def cmd_probe(args, log):
    from .probe import probe
    return probe(args.fs_root, quick=args.quick, tegrastats=args.tegrastats,
                 nvml_lib=args.nvml_lib)


# ------------------------------------------------------------------------------------
def _argv_out(argv):
    """--out FILE from a command line that may not parse."""
    for i, a in enumerate(argv):
        if a == "--out" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--out="):
            return a[len("--out="):]
    return None


def _on_signal(signum, frame):
    raise AgentError("interrupted", "stopped by signal %d" % signum)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "emulate":
        from .emulate import main as emulate_main
        return emulate_main(argv[1:])
    command = next((a for a in argv if a in ("measure", "power", "probe")), None)
    out_path = _argv_out(argv)
    quiet = "--quiet" in argv
    log = _logger(quiet)
    try:
        signal.signal(signal.SIGTERM, _on_signal)
    except ValueError:  # not the main thread (embedded use)
        pass
    progress = Progress()
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # --help / --version
            return e.code if isinstance(e.code, int) else 0
        if args.command == "measure":
            doc = cmd_measure(args, log, progress)
        elif args.command == "power":
            doc = cmd_power(args, log, progress)
        else:
            doc = cmd_probe(args, log)
        write_json(doc, out_path)
        if not doc.get("ok", True):
            sys.stderr.write("error (%s): %s\n" % (doc["error_kind"], doc["error"]))
            return doc["exit_code"]
        if out_path and not quiet:
            _summary(doc, log)
        return 0
    except (AgentError, KeyboardInterrupt) as e:
        if isinstance(e, KeyboardInterrupt):
            e = AgentError("interrupted", "interrupted")
        doc = _envelope(command or "unknown")
        doc.update({"ok": False, "error": e.message, "error_kind": e.kind,
                    "exit_code": e.exit_code})
        progress.add_to(doc)
        _emit_failure(doc, out_path)
        return e.exit_code
    except Exception as e:  # noqa: BLE001 - the JSON must say what happened
        import traceback
        doc = _envelope(command or "unknown")
        doc.update({"ok": False, "error": "%s: %s" % (e.__class__.__name__, e),
                    "error_kind": "internal", "exit_code": 1,
                    "traceback": traceback.format_exc().splitlines()[-8:]})
        _emit_failure(doc, out_path)
        return 1


def _emit_failure(doc, out_path):
    sys.stderr.write("error (%s): %s\n" % (doc["error_kind"], doc["error"]))
    try:
        write_json(doc, out_path)
    except (OSError, IOError) as e:
        sys.stderr.write("cannot write %s: %s\n" % (out_path, e))
        write_json(doc, None)


def _summary(doc, log):
    def f(x, unit, scale=1.0, fmt="%.4g"):
        return "null" if x is None else (fmt % (x * scale)) + unit
    lat = doc.get("latency_ms") or {}
    log("done: power %s, energy/image gross %s net %s, p50 %s, samples %s, cv %s, "
        "%d warning(s)" % (
            f(doc.get("power_w_mean"), " W"),
            f(doc.get("energy_j_per_image_gross"), " J"),
            f(doc.get("energy_j_per_image_net"), " J"),
            f(lat.get("p50"), " ms"), doc.get("samples"),
            f(doc.get("cv"), ""), len(doc.get("warnings") or [])))
