"""TensorRT through ``trtexec``: build the engine once, then one trtexec run per
repeat while the sampler records power.

trtexec reports its own latency and throughput.  The energy window is placed on the
agent's monotonic clock from the moment trtexec prints ``Starting inference`` plus the
offsets of the first and last timed queries in its ``--exportTimes`` trace (or, if
that trace is missing, the warm-up time and the host walltime it prints).
"""

import hashlib
import json
import math
import os
import re
import subprocess
import tempfile
import time

from .errors import AgentError
from .sources import LineReader, Unavailable, find_tool
from .workloads import Workload, check_model_file, parse_shape

TRTEXEC_PATHS = ("usr/src/tensorrt/bin/trtexec",)

_NUM = r"([0-9.eE+-]+)"
_STAT_RE = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*"
                      + _NUM + r"\s*ms")


def _stats_line(text):
    out = {}
    for m in _STAT_RE.finditer(text):
        key = m.group(1)
        val = float(m.group(3))
        if key.startswith("percentile"):
            q = m.group(2)
            q = q[:-2] if q.endswith(".0") else q
            out["p" + q] = val
        else:
            out[key] = val
    return out


def parse_output(text):
    """Figures from trtexec's stdout (TensorRT 7.x to 10.x wording).

    Returns a dict with: version, passed (True/False/None), throughput_qps,
    latency_ms / gpu_compute_ms (min, max, mean, median, pNN), walltime_s, queries,
    trace_s, warmup_queries, warmup_ms and errors (``[E]`` lines)."""
    out = {"version": None, "passed": None, "throughput_qps": None, "latency_ms": {},
           "gpu_compute_ms": {}, "walltime_s": None, "queries": None, "trace_s": None,
           "warmup_queries": None, "warmup_ms": None, "errors": []}
    for line in text.splitlines():
        m = re.search(r"TensorRT v(\d+)", line)
        if m and out["version"] is None:
            out["version"] = m.group(1)
        if "&&&& PASSED" in line:
            out["passed"] = True
        elif "&&&& FAILED" in line:
            out["passed"] = False
        if "[E]" in line:
            out["errors"].append(line.split("[E]", 1)[1].strip())
        m = re.search(r"Throughput:\s*" + _NUM + r"\s*qps", line)
        if m:
            out["throughput_qps"] = float(m.group(1))
        m = re.search(r"\]\s*Latency:(.*)$", line) or re.search(r"^\s*Latency:(.*)$", line)
        if m:
            out["latency_ms"] = _stats_line(m.group(1))
        m = re.search(r"GPU Compute Time:(.*)$", line)
        if m and "Total" not in line:
            out["gpu_compute_ms"] = _stats_line(m.group(1))
        m = re.search(r"Total Host Walltime:\s*" + _NUM + r"\s*s", line)
        if m:
            out["walltime_s"] = float(m.group(1))
        m = re.search(r"Timing trace has (\d+) queries over " + _NUM + r"\s*s", line)
        if m:
            out["queries"] = int(m.group(1))
            out["trace_s"] = float(m.group(2))
        m = re.search(r"Warmup completed (\d+) queries over " + _NUM + r"\s*ms", line)
        if m:
            out["warmup_queries"] = int(m.group(1))
            out["warmup_ms"] = float(m.group(2))
    return out


_START_KEYS = ("startEnqMs", "startInMs", "startH2dMs", "startComputeMs")
_END_KEYS = ("endOutMs", "endD2hMs", "endComputeMs")


def parse_export_times(data, warmup_ms=None):
    """Timed queries of a ``--exportTimes`` trace (a JSON list of dicts).

    Older trtexec versions include warm-up queries: those starting compute before
    ``warmup_ms`` are dropped.  Returns (entries, latencies_ms, start_ms, end_ms)."""
    entries = [e for e in data if isinstance(e, dict) and "latencyMs" in e]
    if warmup_ms is not None and entries and "startComputeMs" in entries[0]:
        if entries[0]["startComputeMs"] < warmup_ms:
            entries = [e for e in entries if e["startComputeMs"] >= warmup_ms]
    if not entries:
        return [], [], None, None
    lat = [float(e["latencyMs"]) for e in entries]
    starts = [min(float(e[k]) for k in _START_KEYS if k in e) for e in entries
              if any(k in e for k in _START_KEYS)]
    ends = [max(float(e[k]) for k in _END_KEYS if k in e) for e in entries
            if any(k in e for k in _END_KEYS)]
    return entries, lat, (min(starts) if starts else None), (max(ends) if ends else None)


def _run_trtexec(exe, cmd, budget_s):
    """Run trtexec to its end: (output lines, exit status, t_start, t_exit) with
    t_start the agent's clock when it printed ``Starting inference`` (None if never):
    lines are read as they come so that moment is not blurred by buffering."""
    lines = []
    t_start = None
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
    except OSError as e:
        raise AgentError("missing_runtime", "cannot run %s: %s" % (exe, e))
    reader = LineReader(p.stdout.fileno())
    deadline = time.monotonic() + budget_s
    try:
        while True:
            try:
                raw = reader.readline(timeout=max(1.0, deadline - time.monotonic()))
            except Unavailable:
                raise AgentError("workload_failed", "trtexec did not finish in time")
            if raw is None:
                break
            now = time.monotonic()
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            if t_start is None and "Starting inference" in line:
                t_start = now
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
        p.stdout.close()
    return lines, p.returncode, t_start, time.monotonic()


def _parse_run(lines, returncode):
    """trtexec's figures from its output; a failed run raises with its last errors."""
    parsed = parse_output("\n".join(lines))
    if returncode != 0 or parsed["passed"] is False:
        why = "; ".join(parsed["errors"][-3:]) or (lines[-1] if lines else "")
        raise AgentError("workload_failed", "trtexec failed (exit %s): %s"
                         % (returncode, why))
    return parsed


def _read_trace(path):
    """The --exportTimes trace, or None where trtexec wrote none (or half of one)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, IOError, ValueError):
        return None


def _place_window(t_start, trace, parsed, warm_ms):
    """(t0, t1, latencies_ms, queries, window_from): the timed queries on the agent's
    clock, from the per-query trace where there is one, else from the warm-up time
    and host walltime trtexec printed (then no per-query latencies)."""
    entries, lat, s_ms, e_ms = parse_export_times(trace or [], parsed["warmup_ms"])
    if entries and s_ms is not None and e_ms is not None:
        return (t_start + s_ms / 1000.0, t_start + e_ms / 1000.0, lat, len(entries),
                "exportTimes")
    wall = parsed["walltime_s"] or parsed["trace_s"]
    queries = parsed["queries"]
    if wall is None or not queries:
        raise AgentError("workload_failed", "trtexec output has no timing trace "
                         "(queries/walltime) to measure")
    t0 = t_start + (parsed["warmup_ms"] or warm_ms) / 1000.0
    return t0, t0 + wall, [], queries, "walltime"


def _summary_latency(parsed, lat):
    """trtexec's own latency figures; with no per-query trace only its printed
    summary is known, so that is kept under the agent's key names."""
    if lat:
        return parsed["latency_ms"]
    lm = parsed["latency_ms"]
    return {"p50": lm.get("median"), "p90": lm.get("p90"), "p99": lm.get("p99"),
            "mean": lm.get("mean")}


class TrtexecWorkload(Workload):
    """ONNX model run by TensorRT's trtexec (engine built once and cached)."""

    runtime = "trtexec"
    external = True

    def __init__(self, model, fs_root="/", trtexec=None, fp16=False, extra_args=(),
                 work_dir=None, input_shape=None, build_timeout_s=3600, log=None):
        self.model = model
        self.fs_root = fs_root
        self.trtexec = trtexec
        self.fp16 = bool(fp16)
        self.extra_args = list(extra_args or [])
        self.work_dir = work_dir
        self.input_shape = parse_shape(input_shape)
        self.build_timeout_s = build_timeout_s
        self.log = log or (lambda msg: None)
        self.images_per_step = int(self.input_shape[0]) if self.input_shape else 1
        self.info = {}

    def _shape_args(self):
        if not self.input_shape:
            return []
        return ["--shapes=input:" + "x".join(str(d) for d in self.input_shape)]

    def prepare(self):
        check_model_file(self.model)
        exe = self.trtexec or find_tool(self.fs_root, TRTEXEC_PATHS, "trtexec")
        if not exe or not os.path.isfile(exe):
            raise AgentError("missing_runtime", "trtexec not found (looked for %s%s)"
                             % (", ".join(os.path.join(self.fs_root, p)
                                          for p in TRTEXEC_PATHS),
                                " and PATH" if self.fs_root in ("/", "", None) else ""))
        self.exe = exe
        work = self.work_dir or os.path.join(os.path.expanduser("~"), ".cache",
                                             "dance_agent", "engines")
        try:
            os.makedirs(work, exist_ok=True)
        except OSError as e:
            raise AgentError("internal", "cannot create work dir %s: %s" % (work, e))
        self.work = work
        h = hashlib.sha1()
        with open(self.model, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        flags = ["fp16" if self.fp16 else "fp32"] + self._shape_args() + self.extra_args
        h.update(repr((flags, os.path.realpath(exe))).encode("utf-8"))
        self.engine = os.path.join(work, "%s-%s.engine" % (
            os.path.splitext(os.path.basename(self.model))[0], h.hexdigest()[:16]))
        built = False
        if not os.path.isfile(self.engine):
            self._build()
            built = True
        self.info = {"runtime": self.runtime, "trtexec": exe, "engine": self.engine,
                     "engine_built_now": built, "precision": flags[0], "mode": self.mode,
                     "extra_args": self.extra_args}

    def _build(self):
        tmp = self.engine + ".tmp%d" % os.getpid()
        cmd = [self.exe, "--onnx=" + self.model, "--saveEngine=" + tmp]
        if self.fp16:
            cmd.append("--fp16")
        cmd += self._shape_args() + self.extra_args
        self.log("building TensorRT engine (can take minutes): %s" % " ".join(cmd))
        try:
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
        except OSError as e:
            raise AgentError("missing_runtime", "cannot run %s: %s" % (self.exe, e))
        try:
            text = p.communicate(timeout=self.build_timeout_s)[0]
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise AgentError("workload_failed", "trtexec engine build exceeded %d s"
                             % self.build_timeout_s)
        text = text.decode("utf-8", "replace")
        parsed = parse_output(text)
        if p.returncode != 0 or parsed["passed"] is False or not os.path.isfile(tmp):
            try:
                os.unlink(tmp)
            except OSError:
                pass
            why = "; ".join(parsed["errors"][-3:]) or text.strip().splitlines()[-1:] or ""
            raise AgentError("bad_model", "trtexec could not build an engine from %s "
                             "(exit %s): %s" % (self.model, p.returncode, why))
        self.version = parsed["version"]
        os.replace(tmp, self.engine)

    def run_window(self, cfg, sampler, source):
        """One trtexec run; returns the window on the agent's clock and its figures."""
        need_s = cfg.duration_s
        if source.kind != "none":
            need_s = max(cfg.min_window_s(need_s), cfg.min_samples * cfg.interval_s * 1.2)
        dur = int(math.ceil(need_s))
        warm_ms = int(round(cfg.warmup_s * 1000))
        fd, times_path = tempfile.mkstemp(prefix="trtexec-times-", suffix=".json",
                                          dir=self.work)
        os.close(fd)
        cmd = [self.exe, "--loadEngine=" + self.engine, "--warmUp=%d" % warm_ms,
               "--duration=%d" % dur, "--exportTimes=" + times_path]
        cmd += self._shape_args() + self.extra_args
        try:
            lines, returncode, t_start, t_exit = _run_trtexec(
                self.exe, cmd, dur + warm_ms / 1000.0 + 600)
            parsed = _parse_run(lines, returncode)
            trace = _read_trace(times_path)
        finally:
            try:
                os.unlink(times_path)
            except OSError:
                pass
        if t_start is None:
            raise AgentError("workload_failed", "trtexec output has no 'Starting inference' "
                             "line; cannot place the energy window")
        t0, t1, lat, queries, how = _place_window(t_start, trace, parsed, warm_ms)
        return {
            "t0": t0, "t1": min(t1, t_exit), "latencies_ms": lat, "steps": queries,
            "images": queries * self.images_per_step, "queries": queries,
            "walltime_s": parsed["walltime_s"],
            "trtexec": {"window_from": how, "throughput_qps": parsed["throughput_qps"],
                        "latency_ms": _summary_latency(parsed, lat),
                        "gpu_compute_ms": parsed["gpu_compute_ms"],
                        "version": parsed["version"]},
        }

    def describe(self):
        return dict(self.info) if self.info else {"runtime": self.runtime, "mode": self.mode}
