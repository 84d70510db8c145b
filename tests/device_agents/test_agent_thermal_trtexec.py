"""Thermal warnings and trtexec output parsing (recorded outputs)."""

import os

from device_agents import emulate, thermal
from device_agents.trtexec import parse_export_times, parse_output

# TensorRT 8.2 (JetPack 4.6) wording: a single percentile, host walltime.
TRT82 = """&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # /usr/src/tensorrt/bin/trtexec --loadEngine=m.engine
[11/21/2023-09:52:01] [I] === Model Options ===
[11/21/2023-09:52:03] [I] Engine loaded in 1.71 sec.
[11/21/2023-09:52:04] [I] Starting inference
[11/21/2023-09:52:07] [I] Warmup completed 6 queries over 200 ms
[11/21/2023-09:52:07] [I] Timing trace has 97 queries over 3.04178 s
[11/21/2023-09:52:07] [I]
[11/21/2023-09:52:07] [I] === Trace details ===
[11/21/2023-09:52:07] [I] === Performance summary ===
[11/21/2023-09:52:07] [I] Throughput: 31.8894 qps
[11/21/2023-09:52:07] [I] Latency: min = 30.8 ms, max = 33.9 ms, mean = 31.35 ms, median = 31.2 ms, percentile(99%) = 33.7 ms
[11/21/2023-09:52:07] [I] End-to-End Host Latency: min = 30.9 ms, max = 34.0 ms, mean = 31.4 ms, median = 31.3 ms, percentile(99%) = 33.8 ms
[11/21/2023-09:52:07] [I] Enqueue Time: min = 1.2 ms, max = 2.0 ms, mean = 1.4 ms, median = 1.4 ms, percentile(99%) = 1.9 ms
[11/21/2023-09:52:07] [I] H2D Latency: min = 0.9 ms, max = 1.0 ms, mean = 0.95 ms, median = 0.95 ms, percentile(99%) = 1.0 ms
[11/21/2023-09:52:07] [I] GPU Compute Time: min = 29.5 ms, max = 32.5 ms, mean = 30.0 ms, median = 29.9 ms, percentile(99%) = 32.3 ms
[11/21/2023-09:52:07] [I] D2H Latency: min = 0.3 ms, max = 0.4 ms, mean = 0.35 ms, median = 0.35 ms, percentile(99%) = 0.4 ms
[11/21/2023-09:52:07] [I] Total Host Walltime: 3.04178 s
[11/21/2023-09:52:07] [I] Total GPU Compute Time: 2.91 s
&&&& PASSED TensorRT.trtexec [TensorRT v8201] # /usr/src/tensorrt/bin/trtexec --loadEngine=m.engine
"""

# Newer wording: several percentiles on one line.
TRT10 = """&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec --loadEngine=m.engine
[10/03/2024-10:47:59] [I] Starting inference
[10/03/2024-10:47:59] [I] === Performance summary ===
[10/03/2024-10:47:59] [I] Throughput: 130.298 qps
[10/03/2024-10:47:59] [I] Latency: min = 5.38 ms, max = 13.36 ms, mean = 7.60 ms, median = 7.16 ms, percentile(90%) = 10.29 ms, percentile(95%) = 10.86 ms, percentile(99%) = 12.96 ms
[10/03/2024-10:47:59] [I] GPU Compute Time: min = 5.3 ms, max = 13.3 ms, mean = 7.5 ms, median = 7.1 ms, percentile(90%) = 10.2 ms, percentile(95%) = 10.8 ms, percentile(99%) = 12.9 ms
[10/03/2024-10:47:59] [I] Total Host Walltime: 3.00082 s
&&&& PASSED TensorRT.trtexec [TensorRT v100300] # trtexec --loadEngine=m.engine
"""

FAILED = """&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # trtexec --onnx=bad.onnx
[11/21/2023-09:52:01] [E] [TRT] ModelImporter.cpp:720: Failed to parse ONNX model from file: bad.onnx
[11/21/2023-09:52:01] [E] Failed to parse onnx file
&&&& FAILED TensorRT.trtexec [TensorRT v8201] # trtexec --onnx=bad.onnx
"""


def test_parse_trt82_summary():
    p = parse_output(TRT82)
    assert p["version"] == "8201"
    assert p["passed"] is True
    assert p["throughput_qps"] == 31.8894
    assert p["latency_ms"] == {"min": 30.8, "max": 33.9, "mean": 31.35, "median": 31.2,
                               "p99": 33.7}
    assert p["gpu_compute_ms"]["median"] == 29.9
    assert p["walltime_s"] == 3.04178
    assert p["queries"] == 97 and p["trace_s"] == 3.04178
    assert p["warmup_queries"] == 6 and p["warmup_ms"] == 200.0


def test_parse_newer_summary_with_several_percentiles():
    p = parse_output(TRT10)
    assert p["version"] == "100300"
    assert p["latency_ms"]["p90"] == 10.29
    assert p["latency_ms"]["p95"] == 10.86
    assert p["latency_ms"]["p99"] == 12.96
    assert p["latency_ms"]["median"] == 7.16


def test_parse_failure():
    p = parse_output(FAILED)
    assert p["passed"] is False
    assert any("Failed to parse ONNX" in e for e in p["errors"])


def test_export_times_drops_warmup_of_old_versions():
    trace = [{"startInMs": 10.0 * i, "startComputeMs": 10.0 * i + 1, "endComputeMs": 10.0 * i + 9,
              "endOutMs": 10.0 * i + 10, "latencyMs": 10.0} for i in range(50)]
    entries, lat, s, e = parse_export_times(trace, warmup_ms=200.0)
    assert len(entries) == 30  # 20 queries started compute before 200 ms
    assert s == 200.0 and e == 500.0
    assert lat == [10.0] * 30
    # newer versions leave the warm-up out themselves: nothing is dropped
    entries2, _, s2, _ = parse_export_times(trace[20:], warmup_ms=200.0)
    assert len(entries2) == 30 and s2 == 200.0


# ---------------------------------------------------------------- thermal
def test_thermal_passive_trip_gives_a_warning(tx2_tree):
    before = thermal.snapshot(tx2_tree)
    assert before["zones"]["GPU-therm"] == {"temp_c": 35.0, "passive_c": 96.0}
    assert thermal.throttle_warnings(before, before) == []  # PMIC-Die at 100 C ignored
    emulate.set_zone_temp(tx2_tree, 2, 97.5)  # GPU-therm
    after = thermal.snapshot(tx2_tree)
    w = thermal.throttle_warnings(before, after)
    assert len(w) == 1 and "GPU-therm" in w[0] and "97.5" in w[0]
    assert thermal.max_temperature(after) == 97.5


def test_thermal_throttle_counters(tmp_path):
    root = str(tmp_path)
    d = os.path.join(root, "sys/devices/system/cpu/cpu0/thermal_throttle")
    os.makedirs(d)
    with open(os.path.join(d, "package_throttle_count"), "w") as f:
        f.write("3\n")
    before = thermal.snapshot(root)
    with open(os.path.join(d, "package_throttle_count"), "w") as f:
        f.write("5\n")
    w = thermal.throttle_warnings(before, thermal.snapshot(root))
    assert w and "rose by 2" in w[0]
