"""MLflow is never on a sweep's critical path: the real ``mlflow server`` is stopped (by its pid) after the
first epoch is reported, kept down for 25 s and started again on the same port and store. The sweep ends on
its own, every epoch of every trial is in MLflow once, nothing is left RUNNING, and the outage was one line.

Two trials of three epochs on 4 tiny images, both at once, on the embedded local Ray; the driver is a
subprocess (as a user runs it), so its output and exit status are what a user sees.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import pytest

ray = pytest.importorskip("ray")

from servers import RestartableMlflowServer  # noqa: E402

from orchestrator.runs.schema import KIND_SWEEP, KIND_TAG, KIND_TRIAL, metric_history  # noqa: E402

pytestmark = pytest.mark.integration  # starts Ray and an MLflow server

EPOCHS = 3
OUTAGE_S = 25


def _runs(client, kind: str) -> list:
    exp = client.get_experiment_by_name("sweep-outage")
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{KIND_TAG}` = '{kind}'")


@pytest.mark.timeout(600)  # ~2 min on a quiet 2-core machine; MLflow's restart is slow on a busy one
def test_a_sweep_rides_out_an_mlflow_server_outage(tmp_path):
    import mlflow
    import psutil

    from workers.data.synth import generate_dataset

    root = tmp_path / "synth"
    generate_dataset(root, n_train=4, n_val=2, size=(32, 64), seed=5)
    cfg = tmp_path / "outage.yaml"
    cfg.write_text(f"""
name: sweep-outage
data: {{root: {root}, cache_dir: {tmp_path / 'cache'}}}
model: {{name: deeplabv3plus, variant: small}}
ans: {{enabled: false}}
slimming: {{casd_range: {{lo: 0.0, hi: 0.6}}}}
train: {{epochs: {EPOCHS}, batch_size: 2, eval_batch_size: 2, size_quantum: 32, max_failures: 0,
        storage_path: {tmp_path / 'results'}}}
scaling: {{num_workers: 1, cpus_per_worker: 0.99}}
sweep:
  name: outage
  space:
    optim.lr: {{grid: [0.02, 0.01]}}
  register_models: false
""")
    server = RestartableMlflowServer(tmp_path)
    server.start()
    client = mlflow.MlflowClient(server.uri)
    log = tmp_path / "driver.log"
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    t_start = time.monotonic()
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sweep", str(cfg), "--plain",
                                 "--tracking-uri", server.uri], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not any(
                metric_history(client, r.info.run_id, "epoch") for r in _runs(client, KIND_TRIAL)):
            assert proc.poll() is None, f"the sweep ended before the outage:\n{log.read_text()[-3000:]}"
            time.sleep(0.3)
        assert proc.poll() is None, log.read_text()[-3000:]
        server.stop()  # the outage: nobody answers on the port
        t_down = time.monotonic()
        time.sleep(OUTAGE_S)
        server.start()  # the same port, the same backend store
        t_up = time.monotonic()
        status = proc.wait(timeout=300)
        t_end = time.monotonic()
    finally:
        if proc.poll() is None:
            for p in psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            proc.wait(timeout=15)
    text = log.read_text()
    try:
        assert status == 0, text[-4000:]
        down = [ln for ln in text.splitlines() if "not answering" in ln]
        up = [ln for ln in text.splitlines() if "answering again" in ln]
        assert len(down) == 1 and len(up) == 1, text[-4000:]  # one line each way, not a stall or a traceback
        assert "Traceback" not in text, text[-4000:]

        kids = _runs(client, KIND_TRIAL)
        assert len(kids) == 2
        for r in kids:
            assert r.info.status == "FINISHED", (r.info.status, r.data.tags)
            rid = r.info.run_id
            assert sorted(m.step for m in metric_history(client, rid, "epoch")) == list(range(EPOCHS))
            for key in r.data.metrics:  # no point logged twice, under any name
                points = Counter((m.step, m.timestamp, m.value) for m in client.get_metric_history(rid, key))
                assert max(points.values()) == 1, (key, points)
                steps = Counter(m.step for m in client.get_metric_history(rid, key))
                assert max(steps.values()) == 1, (key, steps)
        (parent,) = _runs(client, KIND_SWEEP)
        assert parent.info.status == "FINISHED"
        exp = client.get_experiment_by_name("sweep-outage")
        assert not client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'")
        assert not list((tmp_path / "results").rglob("mlflow-spool.sqlite*"))  # replayed, nothing left
        m = parent.data.metrics
        print(f"\nserver down {OUTAGE_S} s after {t_down - t_start:.1f} s; sweep ended {t_end - t_up:.1f} s after it "
              f"came back (whole run {t_end - t_start:.1f} s); longest tracking hook in Tune's loop "
              f"{m.get('sweep.tracking_hook_max_s', float('nan')) * 1000:.1f} ms, longest submit "
              f"{m.get('sweep.tracking_loop_max_s', float('nan')) * 1000:.1f} ms; drain at the end "
              f"{m.get('sweep.tracking_drain_s', float('nan')):.1f} s; outages seen {m.get('sweep.tracking_outages')}")
        print("\n".join(down + up))
    finally:
        server.stop()
