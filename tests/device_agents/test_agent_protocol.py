"""The protocol as a board operator meets it: sensor refresh accounting, the thermal
gate, active idle, confidence intervals, board state, the raw trace, and no silent
failures (--require-energy on a null result, SIGTERM keeping finished work)."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from agent_helpers import FAST, REPO, WAVEFORM, agent_main, sensor_slack

from device_agents import clocks, emulate, protocol, stats
from device_agents.sampler import Sampler
from device_agents.sources import make_source

QUICK = ["--duration", "0.2", "--repeats", "2", "--min-updates", "1", "--min-samples", "3",
         "--interval-ms", "20"]


def _tree(tmp_path, layout="tx2", p=5.0, **kw):
    root = str(tmp_path / layout)
    emulate.build_tree(root, layout, power_w=p, **kw)
    return root


# ---------------------------------------------------------------- sensor refresh
def test_refresh_period_is_read_from_sysfs(tmp_path):
    src, _ = make_source("iio", _tree(tmp_path, "tx2"))
    assert src.refresh_s() == pytest.approx(0.42)  # polling_delay_<k>, ms
    assert src.describe()["rail_refresh_s"]["VDD_IN"] == pytest.approx(0.42)
    src, _ = make_source("hwmon", _tree(tmp_path, "orin-nx"))
    assert src.refresh_s() == pytest.approx(0.42)  # update_interval, ms
    src, _ = make_source("iio", _tree(tmp_path / "x", "tx2", refresh_s=0))
    assert src.refresh_s() is None  # not declared: samples are instantaneous
    src, _ = make_source("iio", _tree(tmp_path / "y", "tx2"), refresh_s=0.0)
    assert src.refresh_s() is None  # --sensor-refresh-ms 0


def test_default_sampling_and_window_follow_the_sensor(tmp_path):
    root = _tree(tmp_path)
    rc, doc = agent_main(["power", "--fs-root", root, "--duration", "0.2", "--min-updates",
                          "3", "--repeats", "1"], str(tmp_path / "p.json"))
    assert rc == 0, doc.get("error")
    st = doc["settings"]
    assert st["interval_s"] == pytest.approx(0.105)  # 4 reads per 0.42 s update
    assert st["windows_sized_by"] == "sensor updates"
    assert st["sensor_refresh_s"] == pytest.approx(0.42) and st["min_samples"] == 2
    assert doc["duration_s"] >= 3 * 0.42  # stretched to 3 sensor updates
    assert doc["sensor_refresh_s"] == pytest.approx(0.42)
    # a static tree never changes: said plainly, not hidden
    assert any("same value throughout" in w for w in doc["warnings"])
    rc, doc = agent_main(["power", "--fs-root", root, "--duration", "0.2", "--repeats", "1",
                          "--sensor-refresh-ms", "0", "--min-samples", "5"],
                         str(tmp_path / "q.json"))
    assert rc == 0 and doc["settings"]["interval_s"] == pytest.approx(0.01)
    assert doc["duration_s"] < 1.0


def test_explicit_min_samples_keeps_the_earlier_sample_rule(tmp_path):
    """Callers of the earlier command line (--min-samples, no --min-updates) keep their
    window sizes; too few sensor updates are a warning, not a longer run."""
    root = _tree(tmp_path)
    rc, doc = agent_main(["power", "--fs-root", root, "--duration", "0.2", "--repeats", "1",
                          "--min-samples", "5", "--interval-ms", "10"], str(tmp_path / "p.json"))
    assert rc == 0, doc.get("error")
    assert doc["settings"]["windows_sized_by"] == "samples"
    assert doc["duration_s"] < 0.42
    assert doc["sensor_refresh_s"] == pytest.approx(0.42)  # still integrated as a sensor
    assert any("same value throughout" in w or "distinct sensor updates" in w
               for w in doc["warnings"])


def test_distinct_sensor_updates_are_counted(mem_dir):
    root = os.path.join(mem_dir, "tx2r")
    proc, wf = emulate.start_writer(root, "tx2", dict(WAVEFORM))
    try:
        src, _ = make_source("iio", root)
        s = Sampler(src, 0.02).start()
        time.sleep(0.5)
        t0 = time.monotonic()
        time.sleep(2.1)
        t1 = time.monotonic()
        assert s.wait_past(t1 + 0.42, 3.0)
        w = protocol.window_energy(src, s, t0, t1)
        s.stop()
    finally:
        emulate.stop_writer(proc)
    # 2.1 s at one refresh every 0.42 s: 5 updates (the edges can add or lose one),
    # although about 105 samples were read
    assert 4 <= w["sensor_updates"] <= 6, w["sensor_updates"]
    assert w["samples"] > 80
    shown = emulate.presented_energy(root, t0, t1)
    assert w["energy_j"] == pytest.approx(shown, rel=0.01)
    truth = wf.energy(t0, t1)
    assert abs(w["energy_j"] - truth) <= sensor_slack(wf, t0, t1) + 0.01 * truth


def test_too_few_updates_warns(mem_dir, tmp_path):
    root = os.path.join(mem_dir, "tx2u")
    proc, _ = emulate.start_writer(root, "tx2", dict(WAVEFORM))
    try:
        src, _ = make_source("iio", root)
        cfg = protocol.Config(interval_s=0.02, refresh_s=0.42, min_updates=8, min_samples=2)
        s = Sampler(src, 0.02).start()
        time.sleep(0.3)
        win = {"t0": time.monotonic()}
        time.sleep(0.9)
        win.update({"t1": time.monotonic(), "latencies_ms": [], "steps": 0, "images": 0})
        warnings = []
        rep = protocol._repeat_figures(src, s, win, None, cfg, warnings, 0)
        s.stop()
    finally:
        emulate.stop_writer(proc)
    assert 1 <= rep["sensor_updates"] < 8
    assert any("distinct sensor updates (< 8" in w for w in warnings), warnings
    assert not any("held" in w for w in warnings)


# ---------------------------------------------------------------- thermal gate
def test_thermal_gate_waits_for_a_cool_stable_board(tmp_path):
    root = _tree(tmp_path)
    emulate.set_zone_temp(root, 2, 85.0)  # GPU-therm hot
    cfg = protocol.Config(fs_root=root, thermal_max_c=70.0, thermal_timeout_s=5.0)
    threading.Timer(0.6, emulate.set_zone_temp, (root, 2, 40.0)).start()
    warnings = []
    gate = protocol.thermal_gate(cfg, warnings, "repeat 1")
    assert gate["passed"] and gate["waited_s"] >= 0.5
    assert gate["max_temp_c"] == pytest.approx(40.0) and not warnings


def test_thermal_gate_times_out_with_a_warning(tmp_path, tiny_onnx):
    root = _tree(tmp_path)
    emulate.set_zone_temp(root, 2, 85.0)
    rc, doc = agent_main(["measure", "--model", tiny_onnx, "--runtime", "onnxruntime",
                          "--fs-root", root, "--threads", "1", "--thermal-timeout", "0.4",
                          "--thermal-max-c", "70"] + FAST, str(tmp_path / "m.json"))
    assert rc == 0, doc.get("error")
    gates = [r["thermal_gate"] for r in doc["repeats"]]
    assert all(g["enabled"] and not g["passed"] and g["waited_s"] >= 0.4 for g in gates)
    assert any("thermal gate before repeat 1: still too hot" in w for w in doc["warnings"])
    assert doc["settings"]["thermal_gate"]["max_c"] == 70.0


# ---------------------------------------------------------------- protocol figures
def test_active_idle_ci_board_state_and_wall_clock(tmp_path, tiny_onnx):
    root = _tree(tmp_path)
    t_before = time.time()
    rc, doc = agent_main(["measure", "--model", tiny_onnx, "--runtime", "onnxruntime",
                          "--fs-root", root, "--threads", "1"] + FAST,
                         str(tmp_path / "m.json"))
    assert rc == 0, doc.get("error")
    assert doc["idle"]["power_w"] == pytest.approx(5.0)  # cold, before load
    assert doc["active_idle"]["power_w"] == pytest.approx(5.0)  # model loaded, idle
    assert doc["active_idle_power_w"] == pytest.approx(5.0)
    assert doc["active_idle"]["t_start_monotonic"] > doc["idle"]["t_end_monotonic"]
    for r in doc["repeats"]:
        assert r["energy_j_net_active"] == pytest.approx(0.0, abs=1e-9)
        assert t_before <= r["t_start_unix"] < r["t_end_unix"] <= time.time()
        assert r["t_end_unix"] - r["t_start_unix"] == pytest.approx(r["duration_s"], abs=1e-3)
        assert r["t_start_utc"].endswith("+00:00")
    ci = doc["ci95"]["energy_j_per_image_gross"]
    vals = [r["energy_j_per_image_gross"] for r in doc["repeats"]]
    assert ci["n"] == 2 and ci["mean"] == pytest.approx(sum(vals) / 2)
    assert ci["half_width"] == pytest.approx(12.706 * stats.stdev(vals) / math.sqrt(2))
    before, after = doc["board_state_before"], doc["board_state_after"]
    assert len(before["cpu_khz"]) == 6 and before["gpu_hz"] == 1300500000
    assert before["emc_hz"] == 1866000000 and before["jetson_clocks"] is False
    assert before["nvpmodel"]["id"] == 0 and after["cpu_khz"] == before["cpu_khz"]


def test_ci95_small_samples():
    # sd of (2, 4) is sqrt(2); half width = t(0.975, 1) * sd / sqrt(2)
    assert stats.ci95([2.0, 4.0])["half_width"] == pytest.approx(12.706)
    assert stats.ci95([1.0])["half_width"] is None
    assert stats.ci95([]) is None
    assert stats.t975(40) == 1.96


def test_clock_changes_are_reported(tmp_path):
    root = _tree(tmp_path)
    a = clocks.snapshot(root)
    emulate.set_clocks(root, cpus=6, gpu="17000000.gp10b", locked=True)
    b = clocks.snapshot(root)
    assert b["jetson_clocks"] is True
    assert any("jetson_clocks state changed" in w for w in clocks.changes(a, b))
    emulate.set_clocks(root, cpus=6, gpu="17000000.gp10b", cpu_khz=(345600, 1200000, 1200000))
    c = clocks.snapshot(root)
    assert any("cpu0 maximum clock lowered" in w for w in clocks.changes(a, c))


def test_no_spurious_edge_held_warning(tmp_path):
    for layout in ("tx2", "rapl"):
        root = _tree(tmp_path, layout)
        rc, doc = agent_main(["power", "--fs-root", root, "--power",
                              "iio" if layout == "tx2" else "rapl"] + QUICK,
                             str(tmp_path / ("%s.json" % layout)))
        assert rc == 0, doc.get("error")
        assert not any("held" in w for w in doc["warnings"]), doc["warnings"]


def test_raw_trace_file(tmp_path):
    root = _tree(tmp_path)
    trace = str(tmp_path / "trace.csv")
    rc, doc = agent_main(["power", "--fs-root", root, "--trace", trace] + QUICK,
                         str(tmp_path / "p.json"))
    assert rc == 0, doc.get("error")
    assert doc["trace_file"] == trace and doc["trace_rows"] > 10
    rows = [r for r in csv.reader(open(trace)) if r and not r[0].startswith("#")]
    header, body = rows[0], rows[1:]
    assert header[:2] == ["t_monotonic", "t_unix"] and header[-2:] == ["total", "carrier_total"]
    assert "VDD_IN" in header and "VDD_MUX" in header
    assert len(body) == doc["trace_rows"]
    assert all(float(r[header.index("total")]) == pytest.approx(5.0) for r in body)
    ts = [float(r[0]) for r in body]
    assert ts == sorted(ts)
    assert ts[0] <= doc["repeats"][0]["t_start_monotonic"]


# ---------------------------------------------------------------- silent failures
def _garbage_vdd_in(root):
    f = os.path.join(root, "sys/bus/i2c/drivers/ina3221x/0-0041/iio:device1/in_power0_input")
    with open(f, "w") as fh:
        fh.write("garbage\n")


def test_require_energy_with_unreadable_rails_exits_5(tmp_path, tiny_onnx):
    root = _tree(tmp_path)
    _garbage_vdd_in(root)
    rc, doc = agent_main(["power", "--fs-root", root] + QUICK, str(tmp_path / "a.json"))
    assert rc == 0 and doc["energy_j_gross"] is None  # null, never zero
    rc, doc = agent_main(["power", "--fs-root", root, "--require-energy"] + QUICK,
                         str(tmp_path / "b.json"))
    assert rc == 5 and doc["ok"] is False and doc["exit_code"] == 5
    assert doc["error_kind"] == "no_power_source" and "null" in doc["error"]
    assert "unreadable" in doc["error"]
    assert doc["samples"] == 0 and len(doc["repeats"]) == 2  # what was seen is kept
    rc, doc = agent_main(["measure", "--model", tiny_onnx, "--runtime", "onnxruntime",
                          "--fs-root", root, "--threads", "1", "--require-energy"] + FAST,
                         str(tmp_path / "c.json"))
    assert rc == 5 and doc["latency_ms"]["p50"] > 0 and doc["energy_j_per_image_gross"] is None


def _run_until(args, marker, out, timeout=60):
    env = dict(os.environ, PYTHONPATH=REPO)
    p = subprocess.Popen([sys.executable, "-m", "device_agents"] + args + ["--out", out],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, cwd=REPO)
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = p.stderr.readline().decode()
        seen.append(line)
        if marker in line:
            break
        if not line and p.poll() is not None:
            break
    p.send_signal(signal.SIGTERM)
    rest = p.communicate(timeout=30)[1].decode()
    return p.returncode, json.load(open(out)), "".join(seen) + rest


def test_sigterm_keeps_idle_and_finished_repeats(tmp_path):
    root = _tree(tmp_path)
    rc, doc, err = _run_until(["power", "--fs-root", root, "--repeats", "50"] + QUICK[:2] + QUICK[4:],
                              "power window 4/50", str(tmp_path / "p.json"))
    assert rc == 7, err
    assert doc["ok"] is False and doc["error_kind"] == "interrupted" and doc["partial"] is True
    assert len(doc["repeats"]) >= 3
    assert all(r["energy_j_gross"] == pytest.approx(5.0 * r["duration_s"])
               for r in doc["repeats"])
    assert doc["power"]["total"] == "VDD_IN"


def test_sigterm_during_measure_keeps_the_baselines(tmp_path, tiny_onnx):
    root = _tree(tmp_path)
    args = ["measure", "--model", tiny_onnx, "--runtime", "onnxruntime", "--fs-root", root,
            "--threads", "1"] + FAST
    args[args.index("--repeats") + 1] = "40"
    rc, doc, err = _run_until(args, "repeat 3/40", str(tmp_path / "m.json"))
    assert rc == 7, err
    assert doc["partial"] is True and doc["error_kind"] == "interrupted"
    assert doc["idle"]["power_w"] == pytest.approx(5.0)
    assert doc["active_idle"]["power_w"] == pytest.approx(5.0)
    assert len(doc["repeats"]) >= 2
    assert all(r["images"] > 0 and r["energy_j_per_image_gross"] > 0 for r in doc["repeats"])
