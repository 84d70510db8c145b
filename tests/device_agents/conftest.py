"""Fixtures for the device agent's tests: emulated board trees, a waveform writer
process and tiny models."""

import json
import os
import shutil
import tempfile
import warnings

import pytest
from agent_helpers import WAVEFORM, make_onnx

from device_agents import emulate


@pytest.fixture
def tx2_tree(tmp_path):
    root = str(tmp_path / "tx2")
    emulate.build_tree(root, "tx2", power_w=5.0)
    return root


@pytest.fixture
def tx2_tools_tree(tmp_path):
    root = str(tmp_path / "tx2t")
    emulate.build_tree(root, "tx2", power_w=5.0, tools=True)
    return root


@pytest.fixture
def mem_dir(tmp_path):
    """A scratch folder in memory (tmpfs) when the machine has /dev/shm: emulated
    trees written many times a second belong there, as real sysfs is in memory and a
    journalled disk makes each rename take milliseconds."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        d = tempfile.mkdtemp(prefix="agent-test-", dir="/dev/shm")
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)
    else:
        yield str(tmp_path)


@pytest.fixture
def tx2_waveform(mem_dir):
    """A TX2 tree whose rails follow WAVEFORM, written by a separate process."""
    root = os.path.join(mem_dir, "tx2w")
    proc, wf = emulate.start_writer(root, "tx2", dict(WAVEFORM), rate_hz=250)
    try:
        yield root, wf
    finally:
        emulate.stop_writer(proc)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    return make_onnx(str(tmp_path_factory.mktemp("models") / "tiny.onnx"))


@pytest.fixture(scope="session")
def onnx_manifest(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    make_onnx(str(d / "model_32x64.onnx"), 32, 64)
    make_onnx(str(d / "model_64x128.onnx"), 64, 128)
    man = {"schema": 1, "format": "onnx", "num_classes": 5,
           "class_names": ["a", "b", "c", "d", "e"],
           "cdf": {"distribution": "maxwell", "loc": 1.0, "scale": 2.0},
           "buckets": [{"height": 32, "width": 64, "file": "model_32x64.onnx", "fraction": 0.25},
                       {"height": 64, "width": 128, "file": "model_64x128.onnx",
                        "fraction": 0.75}]}
    path = d / "manifest.json"
    path.write_text(json.dumps(man))
    return str(path)


@pytest.fixture(scope="session")
def tiny_torchscript(tmp_path_factory):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)
            self.head = torch.nn.Conv2d(8, 5, 1)

        def forward(self, x):
            y = torch.relu(self.bn(self.conv(x)))
            y = torch.nn.functional.avg_pool2d(y, 2)  # logits at half resolution
            return self.head(y)

    path = str(tmp_path_factory.mktemp("ts") / "tiny.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.x: jit is deprecated
        torch.jit.script(Net()).save(path)
    return path


