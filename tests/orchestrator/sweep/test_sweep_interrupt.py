"""Ctrl-C is a state of a sweep: SIGINT mid-trial ends `dance sweep` with 130, the exact resume command
and MLflow saying "interrupted" (parent KILLED with the tag, no RUNNING child); running that command
finishes every trial into its own child run, with every epoch.

The smallest sweep that shows it: two trials of two epochs on 4 tiny images, both at once, on the
embedded local Ray. Ctrl-C reaches the driver's whole process group, as a terminal sends it.
"""
from __future__ import annotations

import shlex
import signal
import time

import pytest

ray = pytest.importorskip("ray")

from drivers import Driver  # noqa: E402

from orchestrator.cli import main  # noqa: E402
from orchestrator.runs.schema import INTERRUPTED_TAG, KIND_SWEEP, KIND_TAG, KIND_TRIAL, TRIAL_ID_TAG  # noqa: E402

try:  # the per-epoch names are grouped in MLflow (accuracy/miou, train/epoch_index) where the schema says so
    from orchestrator.runs.schema import metric_history
except ImportError:  # plain names
    def metric_history(client, run_id: str, name: str) -> list:
        return client.get_metric_history(run_id, name)

pytestmark = [pytest.mark.integration, pytest.mark.ray]  # starts Ray: `make test`, not `make test-fast`

EPOCHS = 2


def _runs(client, exp_name: str, kind: str) -> list:
    exp = client.get_experiment_by_name(exp_name)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{KIND_TAG}` = '{kind}'")


def _first_epoch_reported(client) -> bool:
    return any(metric_history(client, r.info.run_id, "epoch") for r in _runs(client, "sweep-sigint", KIND_TRIAL))


@pytest.mark.timeout(480)
def test_sigint_marks_interrupted_and_the_printed_command_finishes_every_trial(tmp_path, monkeypatch):
    import mlflow

    from workers.data.synth import generate_dataset

    assert not ray.is_initialized()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "synth"
    generate_dataset(root, n_train=4, n_val=2, size=(32, 64), seed=5)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tmp_path / "sigint.yaml"
    cfg.write_text(f"""
name: sweep-sigint
data: {{root: {root}, cache_dir: {tmp_path / 'cache'}}}
model: {{name: deeplabv3plus, variant: small}}
ans: {{enabled: false}}
slimming: {{casd_range: {{lo: 0.0, hi: 0.6}}}}
train: {{epochs: {EPOCHS}, batch_size: 2, eval_batch_size: 2, size_quantum: 32, max_failures: 0,
        storage_path: {tmp_path / 'results'}}}
scaling: {{num_workers: 1, cpus_per_worker: 0.99}}
sweep:
  name: interrupt-me
  space:
    optim.lr: {{grid: [0.02, 0.01]}}
  register_models: false
""")
    t_start = time.monotonic()
    log = tmp_path / "driver.log"
    client = mlflow.MlflowClient(uri)
    driver = Driver(["sweep", str(cfg), "--plain", "--tracking-uri", uri], log, tmp_path)
    proc = driver.proc
    try:
        deadline = time.monotonic() + 240
        polls = 0
        while time.monotonic() < deadline and not _first_epoch_reported(client):
            assert proc.poll() is None, f"the sweep ended before Ctrl-C:\n{log.read_text()[-3000:]}"
            if polls % 10 == 0:
                driver.track()
            polls += 1
            time.sleep(0.2)
        assert _first_epoch_reported(client), f"no epoch reported:\n{log.read_text()[-3000:]}"
        driver.signal(signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        t_sig = time.monotonic()
        status = proc.wait(timeout=90)
        sigint_to_exit = time.monotonic() - t_sig
    finally:
        driver.kill_all()
    text = log.read_text()
    print(f"SIGINT to exit: {sigint_to_exit:.1f} s; sweep start to SIGINT: {t_sig - t_start:.1f} s")
    assert status == 130, text[-3000:]
    resume = next((line.split("resume with: ", 1)[1] for line in text.splitlines() if "resume with: " in line), None)
    assert resume == shlex.join(["dance", "sweep", str(cfg), "--tracking-uri", uri, "--resume", "interrupt-me",
                                 "--plain"]), text[-3000:]
    (parent,) = _runs(client, "sweep-sigint", KIND_SWEEP)
    assert parent.info.status == "KILLED" and INTERRUPTED_TAG in parent.data.tags
    kids = _runs(client, "sweep-sigint", KIND_TRIAL)
    assert kids and not [r for r in kids if r.info.status == "RUNNING"]
    for r in kids:
        if r.info.status != "FINISHED":
            assert INTERRUPTED_TAG in r.data.tags, r.data.tags
            assert "scheduler" not in r.data.tags.get("dance.stop_reason", "")

    monkeypatch.chdir(tmp_path)
    t0 = time.monotonic()
    try:
        assert main(shlex.split(resume)[1:]) == 0
    finally:
        ray.shutdown()
    print(f"resume: {time.monotonic() - t0:.1f} s; whole test {time.monotonic() - t_start:.1f} s")
    kids = _runs(client, "sweep-sigint", KIND_TRIAL)
    assert len(kids) == 2 and len({r.data.tags[TRIAL_ID_TAG] for r in kids}) == 2  # one child per trial
    for r in kids:
        assert r.info.status == "FINISHED", (r.data.tags.get(TRIAL_ID_TAG), r.info.status, r.data.tags)
        assert INTERRUPTED_TAG not in r.data.tags and "dance.stop_reason" not in r.data.tags
        steps = sorted(m.step for m in metric_history(client, r.info.run_id, "epoch"))
        assert set(steps) == set(range(EPOCHS)), steps
    (parent,) = _runs(client, "sweep-sigint", KIND_SWEEP)
    assert parent.info.status == "FINISHED"
