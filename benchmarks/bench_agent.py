"""Benchmark of the device agent (device_agents/): accuracy, spread, overhead, memory.

    .venv/bin/python benchmarks/bench_agent.py [--quick] [--json OUT]

1. Accuracy and repeat spread.  An emulated Jetson TX2 sysfs tree (ina3221x iio, both
   0-0040 and 0-0041) is written by a separate process so that VDD_IN follows a known
   waveform (base + two sines + a square wave with 2 W steps) on the monotonic clock.
   The real agent CLI runs ``measure`` (onnxruntime inference competing for the CPU)
   and ``power`` on that tree in a subprocess.  Each repeat's gross energy is compared
   with the exact integral of the waveform over the repeat's own window, and with the
   exact integral of what the tree actually showed (the writer logs every update).
   The waveform's periods (1.5 s, 1 s, 0.3 s) divide the 3 s window, so every window
   holds the same true energy: the repeats' spread is the agent's alone.
2. Sampler overhead at 100 Hz: CPU time of the sampling thread over its wall time
   (fraction of one core), on the TX2 (6 rails), Orin hwmon (4 rails, 2 files each)
   and RAPL trees, and the whole agent process's CPU during ``power``.
3. Agent memory: peak RSS of ``python -m device_agents power`` (no runtime loaded),
   seen by the kernel for the child process (wait4) and by the agent itself.

The targets: energy error <= 1 %, repeat CV <= 2 %, sampler <= 2 % of one core,
RSS <= 30 MB.  Figures are printed; nothing here is hard-coded.
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
def accuracy(work, duration, repeats):
    root = os.path.join(work, "tx2")
    model = tiny_onnx(os.path.join(work, "bench.onnx"))
    proc, wf = emulate.start_writer(root, "tx2", dict(WAVEFORM), rate_hz=250)
    rows = {}
    try:
        for name, args in (
                ("measure (onnxruntime)",
                 ["measure", "--model", model, "--runtime", "onnxruntime", "--threads", "1",
                  "--idle", "2", "--warmup", "1"]),
                ("power (no workload)", ["power"])):
            out = os.path.join(work, "r.json")
            run_agent(args + ["--fs-root", root, "--duration", str(duration), "--repeats",
                              str(repeats), "--out", out])
            doc = json.load(open(out))
            log = emulate.read_presented(root)
            err_wave, err_shown, power, truth_power, per_image = [], [], [], [], []
            for r in doc["repeats"]:
                t0, t1 = r["t_start_monotonic"], r["t_end_monotonic"]
                truth = wf.energy(t0, t1)
                shown = emulate.presented_energy(root, t0, t1, log=log)
                err_wave.append((r["energy_j_gross"] - truth) / truth * 100.0)
                err_shown.append((r["energy_j_gross"] - shown) / shown * 100.0)
                power.append(r["power_w_mean"])
                truth_power.append(truth / (t1 - t0))
                if r.get("energy_j_per_image_gross") is not None:
                    per_image.append(r["energy_j_per_image_gross"])
            row = {
                "repeats": len(doc["repeats"]),
                "window_s": mean([r["duration_s"] for r in doc["repeats"]]),
                "samples_per_repeat": mean([r["samples"] for r in doc["repeats"]]),
                "energy_error_pct_vs_waveform": err_wave,
                "max_abs_error_pct_vs_waveform": max(abs(e) for e in err_wave),
                "max_abs_error_pct_vs_tree": max(abs(e) for e in err_shown),
                "cv_power_pct": 100.0 * cv(power),
                "cv_true_power_pct": 100.0 * cv(truth_power),
                "cv_energy_per_image_pct": 100.0 * cv(per_image) if per_image else None,
                "agent_cv": doc["cv"],
                "achieved_rate_hz": doc["agent"]["achieved_rate_hz"],
                "warnings": doc["warnings"],
            }
            if doc.get("idle"):
                i = doc["idle"]
                tp = wf.energy(i["t_start_monotonic"], i["t_end_monotonic"]) / i["duration_s"]
                row["idle_power_error_pct"] = (i["power_w"] - tp) / tp * 100.0
            rows[name] = row
        rows["writer_update_gap_s_p50_p99_max"] = emulate.writer_lag(root)
    finally:
        emulate.stop_writer(proc)
    return rows


# ------------------------------------------------------------------------------------
def sampler_overhead(work, seconds):
    rows = {}
    for layout in ("tx2", "orin", "rapl"):
        root = os.path.join(work, "static-" + layout)
        emulate.build_tree(root, layout, power_w=5.0)
        src, _ = make_source("auto", root, 0.01, nvml_lib="/nonexistent")
        s = Sampler(src, 0.01).start()
        time.sleep(seconds)
        s.stop()
        n = len(s.times)
        rows[layout] = {"source": src.name, "rails": len(src.rails),
                        "samples": n, "rate_hz": (n - 1) / (s.times[-1] - s.times[0]),
                        "thread_cpu_pct_of_core": 100.0 * s.cpu_fraction()}
    return rows


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
    duration, repeats, over_s = (3.0, 3, 3.0) if args.quick else (3.0, 6, 10.0)
    work = scratch()
    try:
        acc = accuracy(work, duration, repeats)
        over = sampler_overhead(work, over_s)
        procs = [agent_process(work, over_s)]
        if os.path.isfile(PY36):
            procs.append(agent_process(work, over_s, python=PY36))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res = {"accuracy": acc, "sampler": over, "agent_process": procs,
           "machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()}}

    print("== device agent benchmark (%d CPUs, load %.1f %.1f %.1f) ==" % (
        (os.cpu_count(),) + os.getloadavg()))
    print("\n1. accuracy on an emulated TX2 tree, VDD_IN following a known waveform "
          "(separate writer process)")
    for name in ("measure (onnxruntime)", "power (no workload)"):
        r = acc[name]
        print("  %-22s %d repeats x %.2f s, %.0f samples/repeat (%.0f Hz)" % (
            name, r["repeats"], r["window_s"], r["samples_per_repeat"], r["achieved_rate_hz"]))
        print("    energy error vs waveform, per repeat: %s %%" % ", ".join(
            "%+.3f" % e for e in r["energy_error_pct_vs_waveform"]))
        print("    max |error| vs waveform %.3f %%  (target <= 1 %%); vs tree contents "
              "%.3f %%" % (r["max_abs_error_pct_vs_waveform"], r["max_abs_error_pct_vs_tree"]))
        print("    repeat CV of mean power %.3f %% (target <= 2 %%; true windows' CV %.4f %%)"
              % (r["cv_power_pct"], r["cv_true_power_pct"]))
        if r["cv_energy_per_image_pct"] is not None:
            print("    repeat CV of energy per image %.3f %% (includes throughput changes)"
                  % r["cv_energy_per_image_pct"])
        if "idle_power_error_pct" in r:
            print("    idle baseline error vs waveform %+.3f %%" % r["idle_power_error_pct"])
    g = acc["writer_update_gap_s_p50_p99_max"]
    print("  writer update gaps p50/p99/max: %.1f / %.1f / %.1f ms" % tuple(1000 * x for x in g))
    print("\n2. sampler overhead at 100 Hz (sampling thread CPU / wall, one core = 100 %)")
    for k, r in over.items():
        print("  %-5s %-6s %d rails: %.3f %% of a core at %.1f Hz (target <= 2 %%)" % (
            k, r["source"], r["rails"], r["thread_cpu_pct_of_core"], r["rate_hz"]))
    print("\n3. agent process, `power --duration %g` (no runtime loaded)" % over_s)
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
