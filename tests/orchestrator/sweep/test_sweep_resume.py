"""A sweep whose driver is killed (SIGKILL, no chance to clean up) continues with --resume.

The driver runs ``dance sweep`` in its own process group; once Tune's saved state shows the
first trial TERMINATED and the second trial has reported an epoch, the whole group is
killed. ``dance sweep --resume`` must then finish the second trial from its checkpoint,
leave the first alone, and MLflow must hold exactly one child run per trial.
"""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from orchestrator.cli import main  # noqa: E402
from orchestrator.runs.schema import metric_history  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.ray]  # starts Ray (and servers): `make test`, not `make test-fast`

EPOCHS = 4


def _trial_states(state_dir: Path) -> dict[str, str]:
    files = sorted(glob.glob(str(state_dir / "experiment_state-*.json")))
    if not files:
        return {}
    try:
        data = json.loads(Path(files[-1]).read_text())
    except (OSError, ValueError):  # written while we read
        return {}
    return {json.loads(t[0])["trial_id"]: json.loads(t[0])["status"] for t in data["trial_data"]}


def _group_pids(pgid: int) -> set[int]:
    import psutil

    out = set()
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid:
                out.add(p.pid)
        except OSError:
            pass
    try:
        out.update(c.pid for c in psutil.Process(pgid).children(recursive=True))
    except psutil.Error:
        pass
    return out


@pytest.mark.timeout(500)
def test_killed_driver_resumes_without_rerunning_or_duplicating(tmp_path, monkeypatch):
    import mlflow
    import psutil

    from workers.data.synth import generate_dataset

    assert not ray.is_initialized()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    root = tmp_path / "synth"
    generate_dataset(root, n_train=12, n_val=4, size=(64, 128), seed=4)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tmp_path / "resume.yaml"
    cfg.write_text(f"""
name: sweep-resume
data: {{root: {root}, cache_dir: {tmp_path / 'cache'}}}
model: {{name: deeplabv3plus, variant: small}}
slimming: {{casd_range: {{lo: 0.0, hi: 0.6}}}}
ans: {{enabled: false}}
optim: {{lr: 0.02}}
train: {{epochs: {EPOCHS}, batch_size: 2, eval_batch_size: 4, size_quantum: 32, max_failures: 0,
        storage_path: {tmp_path / 'results'}}}
scaling: {{num_workers: 1, cpus_per_worker: 0.99}}
sweep:
  name: resume-me
  space:
    optim.lr: {{grid: [0.02, 0.01]}}
  max_concurrent_trials: 1
""")
    state_dir = tmp_path / "results" / "resume-me"
    log = tmp_path / "driver.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sweep", str(cfg), "--plain",
                                 "--tracking-uri", uri], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=tmp_path,
                                env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0"))
    client = mlflow.MlflowClient(uri)
    tracked: set[int] = set()
    try:
        deadline = time.monotonic() + 300
        killed_at = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the sweep ended before it could be killed:\n{log.read_text()[-3000:]}"
            tracked |= _group_pids(proc.pid)
            states = _trial_states(state_dir)
            done = [t for t, s in states.items() if s == "TERMINATED"]
            running = [t for t, s in states.items() if s == "RUNNING"]
            if done and running:
                exp = client.get_experiment_by_name("sweep-resume")
                second = client.search_runs([exp.experiment_id],
                                            filter_string=f"tags.`dance.trial_id` = '{running[0]}'")
                if second and metric_history(client, second[0].info.run_id, "epoch"):
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed_at = (done[0], running[0])
                    break
            time.sleep(0.5)
        assert killed_at, f"never saw one trial done and one running:\n{log.read_text()[-3000:]}"
        proc.wait(timeout=30)
    finally:
        tracked |= _group_pids(proc.pid)
        for pid in tracked:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        psutil.wait_procs([psutil.Process(p) for p in tracked if psutil.pid_exists(p)], timeout=15)

    first, second = killed_at
    exp = client.get_experiment_by_name("sweep-resume")
    before = client.search_runs([exp.experiment_id], filter_string=f"tags.`dance.trial_id` = '{second}'")[0]
    epochs_before = len(metric_history(client, before.info.run_id, "epoch"))
    assert epochs_before < EPOCHS

    monkeypatch.chdir(tmp_path)
    try:
        assert main(["sweep", str(cfg), "--resume", "resume-me", "--tracking-uri", uri, "--plain"]) == 0
    finally:
        ray.shutdown()
    kids = client.search_runs([exp.experiment_id], filter_string="tags.`dance.kind` = 'trial'")
    assert sorted(r.data.tags["dance.trial_id"] for r in kids) == sorted([first, second])  # one run per trial
    by_id = {r.data.tags["dance.trial_id"]: r for r in kids}
    assert all(r.info.status == "FINISHED" for r in kids)
    # The finished trial was not trained again.
    assert sorted(m.step for m in metric_history(client, by_id[first].info.run_id, "epoch")) == list(range(EPOCHS))
    # The interrupted one went on from its checkpoint: epoch 0 was trained once, every epoch reached.
    steps = [m.step for m in metric_history(client, by_id[second].info.run_id, "epoch")]
    assert steps.count(0) == 1 and set(steps) == set(range(EPOCHS)), steps
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`dance.kind` = 'sweep'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
