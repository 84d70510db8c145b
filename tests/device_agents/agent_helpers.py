"""Helpers shared by the agent's tests (a module name unique in the test tree)."""

import glob
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

#: A waveform with smooth parts and sharp steps (watts, on the monotonic clock).
WAVEFORM = {"base_w": 6.0,
            "sines": [{"amp_w": 1.0, "freq_hz": 0.7}, {"amp_w": 0.4, "freq_hz": 3.1}],
            "square": {"amp_w": 2.0, "period_s": 1.3, "duty": 0.4}}


def python36():
    """A real Python 3.6 interpreter if this machine has one (pyenv), else None."""
    for cand in ("/root/.pyenv/versions/3.6.15/bin/python3.6",):
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    for cand in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.6*/bin/python3.6"))):
        return cand
    return None



def make_onnx(path, h=32, w=64, classes=5, dynamic=False):
    onnx = pytest.importorskip("onnx")
    np = pytest.importorskip("numpy")
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.RandomState(0)
    w1 = numpy_helper.from_array(rng.randn(8, 3, 3, 3).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.randn(classes, 8, 1, 1).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["input", "w1"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["logits"])]
    shape = [1, 3, "H", "W"] if dynamic else [1, 3, h, w]
    oshape = [1, classes, "H", "W"] if dynamic else [1, classes, h, w]
    g = helper.make_graph(nodes, "tiny",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, oshape)],
                          [w1, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    onnx.save(m, path)
    return path


def run_agent(args, out=None, python=None, cwd=None, env=None, timeout=120):
    """Run ``python -m device_agents ARGS`` in a subprocess; returns (rc, doc, stderr)."""
    cmd = [python or sys.executable, "-m", "device_agents"] + list(args)
    if out:
        cmd += ["--out", out]
    e = dict(os.environ)
    e["PYTHONPATH"] = REPO
    if env:
        e.update(env)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       cwd=cwd or REPO, env=e, timeout=timeout)
    text = open(out).read() if out and os.path.exists(out) else p.stdout.decode()
    doc = json.loads(text) if text.strip() else None
    return p.returncode, doc, p.stderr.decode()


def agent_main(args, out):
    """Run the CLI in-process (faster: runtimes stay imported); returns (rc, doc)."""
    from device_agents.cli import main
    rc = main(list(args) + ["--out", out, "--quiet"])
    with open(out) as f:
        return rc, json.load(f)


#: Short windows for tests: 0.4 s, at least 2 sensor updates (0.84 s on an emulated
#: INA3221 tree refreshing every 0.42 s), 100 Hz sampling.
FAST = ["--duration", "0.4", "--repeats", "2", "--idle", "0.3", "--warmup", "0.1",
        "--warmup-iters", "2", "--min-samples", "15", "--interval-ms", "10",
        "--min-updates", "2"]

TX2_MODULE_RAILS = {"VDD_SYS_GPU", "VDD_SYS_SOC", "VDD_4V0_WIFI", "VDD_IN", "VDD_SYS_CPU",
                    "VDD_SYS_DDR"}
TX2_CARRIER_RAILS = {"VDD_MUX", "VDD_5V0_IO_SYS", "VDD_3V3_SYS", "VDD_3V3_IO_SLP",
                     "VDD_1V8_IO", "VDD_3V3_SYS_M2"}


def sensor_slack(wf, t0, t1, r=0.42):
    """How far a window's energy from a sensor that averages over r seconds may lie
    from the true integral of waveform wf: the two periods cut by t0 and t1 can
    misplace at most r x the power's range around each edge."""
    def edge(t):
        ps = [wf.power(t - r + 2.0 * r * i / 400.0) for i in range(401)]
        return r * (max(ps) - min(ps))
    return edge(t0) + edge(t1)

