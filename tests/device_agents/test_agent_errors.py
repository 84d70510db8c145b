"""Bad cases end with a clear reason in the JSON and a non-zero exit."""

import json

import pytest
from agent_helpers import FAST, agent_main, python36, run_agent


def _blocker(tmp_path, module):
    """A folder that makes ``import module`` fail as on a board without it."""
    d = tmp_path / ("no_" + module)
    (d / module).mkdir(parents=True)
    (d / module / "__init__.py").write_text(
        "raise ImportError(\"No module named '%s' (blocked for the test)\")\n" % module)
    return str(d)


def test_missing_onnxruntime(tmp_path, tiny_onnx, tx2_tree):
    out = str(tmp_path / "r.json")
    rc, doc, err = run_agent(["measure", "--model", tiny_onnx, "--runtime", "onnxruntime",
                              "--fs-root", tx2_tree, "--quiet"] + FAST, out=out,
                             env={"PYTHONPATH": _blocker(tmp_path, "onnxruntime") + ":"
                                  + __import__("agent_helpers").REPO})
    assert rc == 3
    assert doc["ok"] is False and doc["error_kind"] == "missing_runtime"
    assert "onnxruntime" in doc["error"] and "blocked for the test" in doc["error"]
    assert doc["schema_version"] == 1 and doc["exit_code"] == 3


def test_missing_torch(tmp_path, tiny_torchscript):
    out = str(tmp_path / "r.json")
    rc, doc, _ = run_agent(["measure", "--model", tiny_torchscript, "--runtime", "torchscript",
                            "--input-shape", "1x3x8x8", "--power", "none", "--quiet"] + FAST,
                           out=out, env={"PYTHONPATH": _blocker(tmp_path, "torch") + ":"
                                         + __import__("agent_helpers").REPO})
    assert rc == 3 and doc["error_kind"] == "missing_runtime" and "torch" in doc["error"]


def test_missing_trtexec(tmp_path, tiny_onnx, tx2_tree):
    rc, doc = agent_main(["measure", "--model", tiny_onnx, "--runtime", "trtexec",
                          "--fs-root", tx2_tree] + FAST, str(tmp_path / "r.json"))
    assert rc == 3 and doc["error_kind"] == "missing_runtime"
    assert "trtexec not found" in doc["error"]


def test_runtime_missing_under_python36(tmp_path, tiny_onnx, tx2_tree):
    py = python36()
    if py is None:
        pytest.skip("no Python 3.6 interpreter here")
    out = str(tmp_path / "r.json")
    rc, doc, err = run_agent(["measure", "--model", tiny_onnx, "--runtime", "onnxruntime",
                              "--fs-root", tx2_tree, "--quiet"] + FAST, out=out, python=py)
    assert rc == 3, err
    assert doc["error_kind"] == "missing_runtime" and "3.6" in doc["error"]


@pytest.mark.parametrize("content,needle", [
    (b"this is not an onnx model at all", "onnxruntime cannot load"),
    (b"", "empty"),
])
def test_bad_model_file(tmp_path, tx2_tree, content, needle):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    rc, doc = agent_main(["measure", "--model", str(bad), "--runtime", "onnxruntime",
                          "--fs-root", tx2_tree] + FAST, str(tmp_path / "r.json"))
    assert rc == 4 and doc["error_kind"] == "bad_model"
    assert needle in doc["error"] and "bad.onnx" in doc["error"]


def test_missing_model_file(tmp_path, tx2_tree):
    rc, doc = agent_main(["measure", "--model", str(tmp_path / "nope.onnx"), "--runtime",
                          "onnxruntime", "--fs-root", tx2_tree] + FAST, str(tmp_path / "r.json"))
    assert rc == 4 and "not found" in doc["error"]


def test_bad_torchscript_file(tmp_path, tiny_onnx):
    rc, doc = agent_main(["measure", "--model", tiny_onnx, "--runtime", "torchscript",
                          "--input-shape", "1x3x8x8", "--power", "none"] + FAST,
                         str(tmp_path / "r.json"))
    assert rc == 4 and "TorchScript" in doc["error"]


def test_trtexec_cannot_build(tmp_path, tx2_tools_tree):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    rc, doc = agent_main(["measure", "--model", str(bad), "--runtime", "trtexec",
                          "--fs-root", tx2_tools_tree, "--work-dir", str(tmp_path / "e")]
                         + FAST, str(tmp_path / "r.json"))
    assert rc == 4 and "Failed to parse ONNX" in doc["error"]


def test_demanded_power_source_missing(tmp_path, tiny_onnx):
    empty = tmp_path / "empty"
    empty.mkdir()
    for src in ("iio", "hwmon", "tegrastats", "rapl"):
        rc, doc = agent_main(["power", "--power", src, "--fs-root", str(empty),
                              "--duration", "0.1", "--min-updates", "1"], str(tmp_path / "r.json"))
        assert rc == 5 and doc["error_kind"] == "no_power_source", src
        assert src in doc["error"]
    rc, doc = agent_main(["measure", "--model", tiny_onnx, "--runtime", "onnxruntime",
                          "--fs-root", str(empty), "--nvml-lib", "/nonexistent.so",
                          "--require-energy"] + FAST, str(tmp_path / "r.json"))
    assert rc == 5 and "no power source found" in doc["error"]


def test_missing_rails(tmp_path, tx2_tree):
    rc, doc = agent_main(["power", "--fs-root", tx2_tree, "--rails", "VDD_IN,VDD_GPU_SOC",
                          "--duration", "0.1", "--min-updates", "1"], str(tmp_path / "r.json"))
    assert rc == 5
    assert "VDD_GPU_SOC" in doc["error"] and "rails found" in doc["error"]
    assert "VDD_SYS_GPU" in doc["error"]  # lists what the board has


def test_usage_errors_are_json_too(tmp_path, tiny_onnx):
    out = str(tmp_path / "r.json")
    rc, doc, _ = run_agent(["measure", "--model", tiny_onnx, "--runtime", "tensorflow"],
                           out=out)
    assert rc == 2 and doc["error_kind"] == "usage" and "tensorflow" in doc["error"]
    rc, doc = agent_main(["measure", "--model", tiny_onnx, "--runtime", "onnxruntime",
                          "--train-steps", "3"], out)
    assert rc == 2 and "torchscript" in doc["error"]


def test_manifest_problems(tmp_path, onnx_manifest):
    rc, doc = agent_main(["measure", "--manifest", onnx_manifest, "--runtime", "torchscript"],
                         str(tmp_path / "r.json"))
    assert rc == 2 and "onnx" in doc["error"]
    man = json.loads(open(onnx_manifest).read())
    man["buckets"][0]["file"] = "missing_32x64.onnx"
    p = tmp_path / "manifest.json"
    p.write_text(json.dumps(man))
    rc, doc = agent_main(["measure", "--manifest", str(p), "--runtime", "onnxruntime"],
                         str(tmp_path / "r.json"))
    assert rc == 4 and "missing_32x64.onnx" in doc["error"]
    p.write_text("{not json")
    rc, doc = agent_main(["measure", "--manifest", str(p), "--runtime", "onnxruntime"],
                         str(tmp_path / "r.json"))
    assert rc == 4 and "not valid JSON" in doc["error"]


def test_static_model_with_other_shape(tmp_path, tiny_onnx):
    rc, doc = agent_main(["measure", "--model", tiny_onnx, "--runtime", "onnxruntime",
                          "--input-shape", "1x3x64x64", "--power", "none"] + FAST,
                         str(tmp_path / "r.json"))
    assert rc == 4 and "static 1x3x32x64" in doc["error"]
