"""Benchmark of the device agent (device_agents/): accuracy, spread, overhead, memory.

    .venv/bin/python benchmarks/bench_agent.py [--quick] [--json OUT]

1. Energy accuracy at the real sensor rate.  An emulated Jetson TX2 tree (ina3221x
   iio: module 0x40/0x41 and the developer kit's carrier 0x42/0x43, 12 rails) is
   written by a separate process the way an INA3221 refreshes: every 0.42 s it
   publishes the mean power of the period that just ended (VDD_IN follows a known
   waveform: base + two sines + a square wave with 2 W steps).  The real agent CLI runs
   ``power`` (no workload) and ``measure`` (onnxruntime inference competing for the
   CPU) with its default, sensor-following sampling, at windows of >= 10 s and of 5 s.
   Each repeat's energy is compared with the exact integral of the waveform over the
   repeat's own window.  The same 10 s windows read naively (no sensor model:
   ``--sensor-refresh-ms 0``) show what the model is worth.
2. AGX Orin total: an emulated AGX Orin tree (hwmon, VDDQ_VDD2_1V8AO nested in
   VIN_SYS_5V0) follows a known module power; the agent's total against it, and what a
   sum of all four rails would have given.
3. Sampler overhead with 12 rails (TX2 module + carrier boards): CPU time of the
   sampling thread over its wall time (fraction of one core) at the sensor's own rate
   (one read per 0.42 s refresh), at the default (4 reads per refresh) and at 100 Hz;
   and at 100 Hz on the Orin hwmon and RAPL trees.
4. Agent memory: peak RSS of ``python -m device_agents power`` (no runtime loaded).

Targets: energy error <= 1 % at >= 10 s windows, AGX Orin total within 1 %, sampler
<= 2 % of one core, RSS <= 30 MB.  Figures are printed; nothing here is hard-coded.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from device_agents import emulate  # noqa: E402
from device_agents.sampler import Sampler  # noqa: E402
from device_agents.sources import make_source  # noqa: E402
from device_agents.stats import cv, mean  # noqa: E402

WAVEFORM = {"base_w": 6.0,
            "sines": [{"amp_w": 1.0, "freq_hz": 1.0}, {"amp_w": 0.5, "freq_hz": 1.0 / 0.3}],
            "square": {"amp_w": 2.0, "period_s": 1.5, "duty": 0.4}}
REFRESH_S = 0.42

PY36 = "/root/.pyenv/versions/3.6.15/bin/python3.6"


def scratch():
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix="bench-agent-", dir=base)


def tiny_onnx(path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.RandomState(0)
    w1 = numpy_helper.from_array(rng.randn(16, 3, 3, 3).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.randn(19, 16, 1, 1).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["input", "w1"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["logits"])]
    g = helper.make_graph(nodes, "bench",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                         [1, 3, 128, 256])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                         [1, 19, 128, 256])], [w1, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    onnx.save(m, path)
    return path


def _vm_hwm_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def run_agent(args, python=None):
    """Run the agent CLI; returns (rusage of the child, peak RSS in kB seen in
    /proc/<pid>/status while it ran).  (wait4's ru_maxrss is not used: Linux carries
    the parent's pre-exec RSS into it.)"""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO
    cmd = [python or sys.executable, "-m", "device_agents"] + args + ["--quiet"]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=err)
        hwm = 0
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            h = _vm_hwm_kb(p.pid)
            if h:
                hwm = max(hwm, h)
            time.sleep(0.02)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            out.seek(0)
            err.seek(0)
            raise RuntimeError("agent failed (%d): %s %s" % (
                p.returncode, out.read()[-2000:], err.read()[-2000:]))
    return ru, hwm


# ------------------------------------------------------------------------------------
def _errors(doc, wf, root):
    # the value covering a window's end is published at the next refresh after it:
    # let the writer log reach past the last window (a naive run does not wait)
    time.sleep(REFRESH_S + 0.1)
    log = emulate.read_presented(root, periods=True)
    err, err_shown, updates = [], [], []
    for r in doc["repeats"]:
        t0, t1 = r["t_start_monotonic"], r["t_end_monotonic"]
        truth = wf.energy(t0, t1)
        err.append((r["energy_j_gross"] - truth) / truth * 100.0)
        shown = emulate.presented_energy(root, t0, t1, log=log)
        err_shown.append((r["energy_j_gross"] - shown) / shown * 100.0)
        updates.append(r.get("sensor_updates"))
    return {"repeats": len(doc["repeats"]),
            "window_s": mean([r["duration_s"] for r in doc["repeats"]]),
            "samples_per_repeat": mean([r["samples"] for r in doc["repeats"]]),
            "sensor_updates_per_repeat": updates,
            "interval_s": doc["settings"]["interval_s"],
            "energy_error_pct": err,
            "max_abs_error_pct": max(abs(e) for e in err),
            "max_abs_error_pct_vs_tree": max(abs(e) for e in err_shown),
            "cv_power_pct": 100.0 * (cv([r["power_w_mean"] for r in doc["repeats"]]) or 0.0),
            "warnings": doc["warnings"]}


def _writer_alive(proc, what):
    """The waveform writer must have run through the whole measurement (a writer that
    was stopped from outside would leave the tree frozen and the figures meaningless)."""
    if proc.poll() is not None:
        raise RuntimeError("the waveform writer (pid %d) exited with %s during %s: stopped "
                           "from outside?" % (proc.pid, proc.returncode, what))


def accuracy(work, long_s, short_s, repeats, model_repeats):
    root = os.path.join(work, "tx2")
    model = tiny_onnx(os.path.join(work, "bench.onnx"))
    proc, wf = emulate.start_writer(root, "tx2", dict(WAVEFORM), refresh_s=REFRESH_S)
    rows = {}
    try:
        runs = (
            ("power, %g s windows" % long_s, ["power", "--duration", str(long_s),
                                              "--repeats", str(repeats)]),
            ("power, %g s windows" % short_s, ["power", "--duration", str(short_s),
                                               "--repeats", str(repeats)]),
            ("measure (onnxruntime), %g s windows" % long_s,
             ["measure", "--model", model, "--runtime", "onnxruntime", "--threads", "1",
              "--idle", "2", "--warmup", "1", "--duration", str(long_s), "--repeats",
              str(model_repeats)]),
            ("power, %g s windows, naive (no sensor model)" % long_s,
             ["power", "--duration", str(long_s), "--repeats", str(repeats),
              "--sensor-refresh-ms", "0", "--interval-ms", str(REFRESH_S * 250),
              "--min-samples", "2"]),
        )
        for name, args in runs:
            out = os.path.join(work, "r.json")
            run_agent(args + ["--fs-root", root, "--out", out])
            _writer_alive(proc, name)
            doc = json.load(open(out))
            row = _errors(doc, wf, root)
            if doc.get("idle"):
                i = doc["idle"]
                tp = wf.energy(i["t_start_monotonic"], i["t_end_monotonic"]) / i["duration_s"]
                row["idle_power_error_pct"] = (i["power_w"] - tp) / tp * 100.0
            rows[name] = row
        rows["writer_update_gap_s_p50_p99_max"] = emulate.writer_lag(root)
    finally:
        emulate.stop_writer(proc)
    return rows


def orin_total(work, seconds, repeats):
    root = os.path.join(work, "orin")
    proc, wf = emulate.start_writer(root, "orin", dict(WAVEFORM), refresh_s=REFRESH_S)
    try:
        out = os.path.join(work, "o.json")
        run_agent(["power", "--fs-root", root, "--duration", str(seconds), "--repeats",
                   str(repeats), "--out", out])
        _writer_alive(proc, "AGX Orin")
        doc = json.load(open(out))
    finally:
        emulate.stop_writer(proc)
    row = _errors(doc, wf, root)
    four = [sum(r["rails"][n]["energy_j"] for n in r["rails"]) for r in doc["repeats"]]
    truth = [wf.energy(r["t_start_monotonic"], r["t_end_monotonic"]) for r in doc["repeats"]]
    row["sum_of_four_rails_error_pct"] = [(a - b) / b * 100.0 for a, b in zip(four, truth)]
    row["total"] = doc["power"]["total"]
    row["boundary"] = doc["energy_boundary"]
    return row


# ------------------------------------------------------------------------------------
def sampler_overhead(work, seconds):
    rows = {}
    root = os.path.join(work, "static-tx2")
    emulate.build_tree(root, "tx2", power_w=5.0)
    for label, interval in (("TX2 12 rails, sensor rate (1 read / 0.42 s)", REFRESH_S),
                            ("TX2 12 rails, default (4 reads / refresh)", REFRESH_S / 4),
                            ("TX2 12 rails, 100 Hz", 0.01)):
        rows[label] = _overhead(root, interval, seconds)
    for layout in ("orin", "rapl"):
        r = os.path.join(work, "static-" + layout)
        emulate.build_tree(r, layout, power_w=5.0)
        rows["%s, 100 Hz" % layout] = _overhead(r, 0.01, seconds)
    return rows


def _overhead(root, interval, seconds):
    src, _ = make_source("auto", root, interval, nvml_lib="/nonexistent")
    s = Sampler(src, interval).start()
    time.sleep(seconds)
    s.stop()
    n = len(s.times)
    return {"source": src.name, "rails": len(src.rails), "samples": n,
            "rate_hz": (n - 1) / (s.times[-1] - s.times[0]) if n > 1 else None,
            "thread_cpu_pct_of_core": 100.0 * s.cpu_fraction(),
            "cpu_ms_per_read": 1000.0 * s.cpu_s / n if n else None}


def agent_process(work, seconds, python=None):
    root = os.path.join(work, "static-tx2")
    if not os.path.isdir(root):
        emulate.build_tree(root, "tx2", power_w=5.0)
    out = os.path.join(work, "p.json")
    t = time.monotonic()
    ru, hwm_kb = run_agent(["power", "--fs-root", root, "--duration", str(seconds),
                            "--out", out], python=python)
    wall = time.monotonic() - t
    doc = json.load(open(out))
    return {"python": doc["agent"]["python"],
            "peak_rss_mb_proc": hwm_kb / 1024.0,
            "peak_rss_mb_self": doc["agent"]["peak_rss_mb"],
            "sampler_thread_cpu_pct_of_core": 100.0 * doc["agent"]["sampler_cpu_fraction"],
            "process_cpu_pct_of_core_incl_startup": 100.0 * (ru.ru_utime + ru.ru_stime) / wall,
            "achieved_rate_hz": doc["agent"]["achieved_rate_hz"],
            "power_w_mean": doc["power_w_mean"]}


# ------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter windows, fewer repeats")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    if args.quick:
        long_s, short_s, repeats, model_repeats, over_s = 10.0, 5.0, 2, 2, 5.0
    else:
        long_s, short_s, repeats, model_repeats, over_s = 10.0, 5.0, 5, 3, 10.0
    work = scratch()
    try:
        acc = accuracy(work, long_s, short_s, repeats, model_repeats)
        orin = orin_total(work, long_s, repeats)
        over = sampler_overhead(work, over_s)
        procs = [agent_process(work, over_s)]
        if os.path.isfile(PY36):
            procs.append(agent_process(work, over_s, python=PY36))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res = {"accuracy": acc, "agx_orin_total": orin, "sampler": over, "agent_process": procs,
           "machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()}}

    print("== device agent benchmark (%d CPUs, load %.1f %.1f %.1f) ==" % (
        (os.cpu_count(),) + os.getloadavg()))
    print("\n1. energy accuracy, emulated TX2 tree (12 rails) refreshing every %.2f s like an "
          "INA3221; VDD_IN follows a known waveform" % REFRESH_S)
    for name, r in acc.items():
        if not isinstance(r, dict):
            continue
        print("  %s: %d repeats x %.2f s, sampling every %.0f ms, %.0f samples and %s sensor "
              "updates per repeat" % (name, r["repeats"], r["window_s"], 1000 * r["interval_s"],
                                       r["samples_per_repeat"], r["sensor_updates_per_repeat"]))
        print("    energy error vs waveform per repeat: %s %%" % ", ".join(
            "%+.3f" % e for e in r["energy_error_pct"]))
        print("    max |error| %.3f %% (vs what the sensor values stand for: %.3f %%); repeat CV "
              "of power %.3f %%" % (r["max_abs_error_pct"], r["max_abs_error_pct_vs_tree"],
                                    r["cv_power_pct"]))
        if "idle_power_error_pct" in r:
            print("    cold idle baseline error vs waveform %+.3f %%" % r["idle_power_error_pct"])
    g = acc["writer_update_gap_s_p50_p99_max"]
    print("  writer update gaps p50/p99/max: %.1f / %.1f / %.1f ms" % tuple(1000 * x for x in g))
    print("\n2. AGX Orin total (%s), emulated tree with a known module power, %d x %.1f s" % (
        orin["total"], orin["repeats"], orin["window_s"]))
    print("    error vs the module power per repeat: %s %% (target <= 1 %%)" % ", ".join(
        "%+.3f" % e for e in orin["energy_error_pct"]))
    print("    a sum of all four rails would give: %s %%" % ", ".join(
        "%+.2f" % e for e in orin["sum_of_four_rails_error_pct"]))
    print("\n3. sampler overhead (sampling thread CPU / wall, one core = 100 %)")
    for k, r in over.items():
        print("  %-46s %-6s %2d rails: %.3f %% of a core at %.2f Hz (%.3f ms CPU per read)" % (
            k, r["source"], r["rails"], r["thread_cpu_pct_of_core"], r["rate_hz"],
            r["cpu_ms_per_read"]))
    print("\n4. agent process, `power --duration %g` (no runtime loaded, default sampling)"
          % over_s)
    for r in procs:
        print("  Python %-7s peak RSS %.1f MB (/proc VmHWM) / %.1f MB (self) (target <= 30 MB); "
              "sampler %.3f %% of a core; whole process incl. start-up %.2f %%" % (
                  r["python"], r["peak_rss_mb_proc"], r["peak_rss_mb_self"] or -1,
                  r["sampler_thread_cpu_pct_of_core"],
                  r["process_cpu_pct_of_core_incl_startup"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
