"""End-to-end ``measure`` and ``power`` against emulated boards."""

import os

import pytest
from agent_helpers import FAST, TX2_CARRIER_RAILS, TX2_MODULE_RAILS, agent_main, run_agent, sensor_slack

from device_agents import emulate

KEYS = ("schema_version", "power_source", "duration_s", "power_w_mean", "energy_j_gross",
        "energy_j_net", "energy_j_per_image_gross", "energy_j_per_image_net", "rails",
        "latency_ms", "samples", "cv", "warnings")


def test_measure_onnxruntime_on_emulated_tx2(tx2_waveform, tiny_onnx, tmp_path):
    root, wf = tx2_waveform
    out = str(tmp_path / "r.json")
    rc, doc, err = run_agent(["measure", "--model", tiny_onnx, "--runtime", "onnxruntime",
                              "--power", "auto", "--fs-root", root, "--threads", "1"] + FAST,
                             out=out)
    assert rc == 0, err
    for k in KEYS:
        assert k in doc, k
    assert doc["ok"] is True and doc["schema_version"] == 1
    assert doc["power_source"] == "iio" and doc["power"]["total"] == "VDD_IN"
    assert set(doc["rails"]) == TX2_MODULE_RAILS | TX2_CARRIER_RAILS
    assert all(doc["rails"][r]["boundary"] == "carrier" for r in TX2_CARRIER_RAILS)
    assert all(doc["rails"][r]["boundary"] == "module" for r in TX2_MODULE_RAILS)
    assert len(doc["repeats"]) == 2
    assert doc["samples"] >= 2 * 15
    lat = doc["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert doc["images"] > 0 and doc["throughput_ips"] > 0
    assert doc["workload"]["provider"] == "CPUExecutionProvider"
    assert doc["workload"]["input_shapes"] == {"input": [1, 3, 32, 64]}
    # every repeat's gross energy against the waveform the writer process follows
    for r in doc["repeats"]:
        shown = emulate.presented_energy(root, r["t_start_monotonic"], r["t_end_monotonic"])
        assert r["energy_j_gross"] == pytest.approx(shown, rel=0.01)
        assert r["energy_j_per_image_gross"] == pytest.approx(
            r["energy_j_gross"] / r["images"])
    idle = doc["idle"]
    a, b = idle["t_start_monotonic"], idle["t_end_monotonic"]
    truth = wf.energy(a, b)
    assert abs(idle["power_w"] * idle["duration_s"] - truth) <= (sensor_slack(wf, a, b)
                                                                 + 0.01 * truth)
    # net = gross - idle power x window, per image
    r0 = doc["repeats"][0]
    assert r0["energy_j_net"] == pytest.approx(
        r0["energy_j_gross"] - idle["power_w"] * r0["duration_s"])
    assert doc["rails"]["VDD_IN"]["energy_j"] == pytest.approx(doc["energy_j_gross"])
    assert doc["rails"]["VDD_SYS_GPU"]["energy_j"] == pytest.approx(
        0.25 * doc["energy_j_gross"], rel=0.02)
    assert doc["cv"] is not None and doc["cv_of"] == "energy_j_per_image_gross"
    assert doc["agent"]["sampler_cpu_fraction"] is not None


def test_power_command_on_static_tree(tx2_tree, tmp_path):
    rc, doc = agent_main(["power", "--fs-root", tx2_tree, "--duration", "0.3",
                          "--repeats", "2", "--min-samples", "10", "--min-updates", "1"], str(tmp_path / "p.json"))
    assert rc == 0
    assert doc["command"] == "power" and doc["power_source"] == "iio"
    assert doc["power_w_mean"] == pytest.approx(5.0)
    assert doc["energy_j_gross"] == pytest.approx(5.0 * doc["duration_s"])
    assert doc["rails"]["VDD_SYS_CPU"]["power_w_mean"] == pytest.approx(1.0)
    assert doc["cv"] == pytest.approx(0.0, abs=1e-9)
    assert doc["energy_j_per_image_gross"] is None and doc["latency_ms"] is None


def test_power_on_orin_hwmon_and_rapl(tmp_path):
    orin = str(tmp_path / "orin")
    emulate.build_tree(orin, "orin", power_w=12.0)
    rc, doc = agent_main(["power", "--fs-root", orin, "--duration", "0.2",
                          "--min-samples", "5", "--min-updates", "1"], str(tmp_path / "o.json"))
    assert rc == 0 and doc["power_source"] == "hwmon"
    assert doc["power_w_mean"] == pytest.approx(12.0, rel=1e-3)
    assert "NC" not in doc["rails"]
    assert doc["energy_boundary"].startswith("module total VDD_GPU_SOC + VDD_CPU_CV")


def test_measure_without_power_source_gives_null_energy(tiny_onnx, tmp_path):
    rc, doc = agent_main(["measure", "--model", tiny_onnx, "--runtime", "onnxruntime",
                          "--power", "none"] + FAST, str(tmp_path / "n.json"))
    assert rc == 0
    assert doc["power_source"] == "none"
    for k in ("power_w_mean", "energy_j_gross", "energy_j_net", "energy_j_per_image_gross",
              "energy_j_per_image_net"):
        assert doc[k] is None, k
    assert doc["latency_ms"]["p50"] > 0
    assert any("no power source" in w for w in doc["warnings"])
    assert doc["cv_of"] == "latency_ms_mean"


def test_measure_manifest_buckets_and_weighted_mean(tx2_tree, onnx_manifest, tmp_path):
    rc, doc = agent_main(["measure", "--manifest", onnx_manifest, "--runtime", "onnxruntime",
                          "--fs-root", tx2_tree, "--threads", "1"] + FAST,
                         str(tmp_path / "m.json"))
    assert rc == 0, doc.get("error")
    b = doc["buckets"]
    assert [(x["height"], x["width"], x["fraction"]) for x in b] == [(32, 64, 0.25),
                                                                  (64, 128, 0.75)]
    assert b[1]["workload"]["input_shapes"] == {"input": [1, 3, 64, 128]}
    want = 0.25 * b[0]["energy_j_per_image_gross"] + 0.75 * b[1]["energy_j_per_image_gross"]
    assert doc["energy_j_per_image_gross"] == pytest.approx(want)
    # static 5 W tree: energy per image is 5 W / throughput in every repeat
    for x in b:
        for r in x["repeats"]:
            assert r["energy_j_per_image_gross"] == pytest.approx(5.0 / r["throughput_ips"],
                                                                  rel=1e-9)
    assert doc["num_classes"] == 5 and doc["cdf"]["distribution"] == "maxwell"
    lat = doc["latency_ms"]
    assert lat["p50"] <= lat["p90"] <= lat["p99"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_measure_torchscript_inference_and_training(tx2_tree, tiny_torchscript, tmp_path):
    rc, doc = agent_main(["measure", "--model", tiny_torchscript, "--runtime", "torchscript",
                          "--input-shape", "1x3x32x32", "--fs-root", tx2_tree,
                          "--threads", "1"] + FAST, str(tmp_path / "i.json"))
    assert rc == 0, doc.get("error")
    assert doc["mode"] == "inference" and doc["workload"]["num_classes"] == 5
    assert doc["energy_j_per_image_gross"] > 0
    rc, doc = agent_main(["measure", "--model", tiny_torchscript, "--runtime", "torchscript",
                          "--input-shape", "2x3x32x32", "--train-steps", "5",
                          "--num-classes", "5", "--fs-root", tx2_tree, "--threads", "1"]
                         + FAST, str(tmp_path / "t.json"))
    assert rc == 0, doc.get("error")
    assert doc["mode"] == "train"
    assert all(r["steps"] >= 5 for r in doc["repeats"])
    assert doc["images"] == 2 * doc["steps"]
    assert doc["energy_j_per_step_gross"] == pytest.approx(
        2 * doc["energy_j_per_image_gross"])
    assert doc["workload"]["optimizer"]["name"] == "SGD"


def test_measure_trtexec_with_stand_in_tool(tx2_tools_tree, tiny_onnx, tmp_path):
    rc, doc = agent_main(["measure", "--model", tiny_onnx, "--runtime", "trtexec",
                          "--fs-root", tx2_tools_tree, "--work-dir", str(tmp_path / "eng"),
                          "--duration", "0.5", "--repeats", "2", "--idle", "0.2",
                          "--warmup", "0.1", "--min-samples", "10", "--min-updates", "1",
                          "--interval-ms", "10"], str(tmp_path / "t.json"))
    assert rc == 0, doc.get("error")
    assert doc["workload"]["engine_built_now"] is True
    assert os.path.isfile(doc["workload"]["engine"])
    r = doc["repeats"][0]
    assert r["trtexec"]["window_from"] == "exportTimes"
    assert r["images"] == r["queries"] > 10
    # the stand-in sleeps 5 ms per query
    assert 5.0 <= doc["latency_ms"]["p50"] < 50.0
    # static 5 W: exactly 5 W over the window trtexec's own trace spans
    assert r["energy_j_per_image_gross"] == pytest.approx(
        5.0 * r["duration_s"] / r["images"], rel=1e-9)
    assert 0.1 < r["duration_s"] < 2.0
    # a second run reuses the engine
    rc, doc2 = agent_main(["measure", "--model", tiny_onnx, "--runtime", "trtexec",
                           "--fs-root", tx2_tools_tree, "--work-dir", str(tmp_path / "eng"),
                           "--duration", "0.3", "--repeats", "1", "--idle", "0",
                           "--warmup", "0.05", "--min-samples", "5", "--min-updates", "1"], str(tmp_path / "u.json"))
    assert rc == 0 and doc2["workload"]["engine_built_now"] is False
    assert doc2["energy_j_net"] is None  # no idle baseline asked for


def test_power_with_tegrastats_source(tx2_tools_tree, tmp_path):
    rc, doc = agent_main(["power", "--power", "tegrastats", "--fs-root", tx2_tools_tree,
                          "--interval-ms", "20", "--duration", "0.4", "--min-samples", "5", "--min-updates", "1"],
                         str(tmp_path / "t.json"))
    assert rc == 0, doc.get("error")
    assert doc["power_source"] == "tegrastats" and doc["power"]["total"] == "VDD_IN"
    assert doc["power_w_mean"] == pytest.approx(5.0)
    assert doc["samples"] >= 5


def test_tegrastats_dying_mid_run_is_an_error(tx2_tools_tree, tmp_path):
    tool = os.path.join(tx2_tools_tree, "usr", "bin", "tegrastats")
    with open(tool, "w") as f:
        f.write("#!/bin/sh\nfor i in 1 2 3; do echo 'RAM 1/2MB VDD_IN 5000/5000 VDD_SYS_GPU "
                "100/100'; sleep 0.02; done\n")
    rc, doc = agent_main(["power", "--power", "tegrastats", "--fs-root", tx2_tools_tree,
                          "--duration", "1", "--min-samples", "20", "--min-updates", "1"], str(tmp_path / "d.json"))
    assert rc == 5 and "stopped delivering samples" in doc["error"]


def test_static_counter_warns_about_resolution(tmp_path):
    root = str(tmp_path / "rapl")
    emulate.build_tree(root, "rapl")
    rc, doc = agent_main(["power", "--power", "rapl", "--fs-root", root, "--duration", "0.2",
                          "--min-samples", "5", "--min-updates", "1"], str(tmp_path / "r.json"))
    assert rc == 0
    assert doc["energy_j_gross"] == 0.0  # the counter really did not move
    assert any("moved only 0 times" in w for w in doc["warnings"])
