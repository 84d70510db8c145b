"""The sweep's Tune callback through the writer, without Ray: its hooks return at once while MLflow is down,
and once it answers every trial has its run, params, every epoch once, and its end.

Tune's calls are made by hand on stand-in trials; the store is a real MLflow sqlite store behind a client
that raises ``ConnectionError`` while it is down.
"""
from __future__ import annotations

import hashlib
import time
from types import SimpleNamespace

from orchestrator.runs.provenance import SOURCE_SUFFIX
from orchestrator.runs.schema import (
    KIND_TAG,
    KIND_TRIAL,
    PRETRAINED_SHA256_TAG,
    PRETRAINED_SOURCE_TAG,
    metric_history,
)
from orchestrator.runs.writer import TrackingWriter
from orchestrator.storage import resolve_storage
from orchestrator.sweep import tracking
from orchestrator.sweep.space import load_sweep
from tests.orchestrator.test_tracking_writer import Flaky


def test_tune_hooks_only_submit_and_everything_lands_after_the_outage(tmp_path):
    import mlflow

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"not really weights")
    (tmp_path / f"w.pth{SOURCE_SUFFIX}").write_text("from the test\n")
    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"""
name: hooks
data: {{root: {tmp_path / 'none'}}}
model: {{name: deeplabv3plus, variant: small, pretrained_backbone: {weights}}}
ans: {{enabled: false}}
train: {{epochs: 3, storage_path: {tmp_path / 'results'}}}
sweep:
  space:
    optim.lr: {{grid: [0.02, 0.01]}}
""")
    spec = load_sweep(cfg, check_data=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp_id = client.create_experiment("hooks")
    tracker = tracking.SweepTracker(tracking_uri=uri, experiment_id=exp_id, parent_run_id="p", sweep_id="sw",
                                    spec=spec, storage=resolve_storage(tmp_path / "results"),
                                    prepared_cdf={"loc": 0.1, "scale": 0.2})
    flaky, lines = Flaky(client), []
    writer = TrackingWriter(lambda: flaky, uri=uri, spool=tmp_path / "results" / "sw" / "spool.sqlite",
                            handlers=tracker.handlers(), print_fn=lines.append, backoff_cap_s=0.3)
    tracking.WRITERS["sw"] = writer
    try:
        trials = [SimpleNamespace(trial_id=f"sw_{i:05d}", config={"optim.lr": lr}, last_result={})
                  for i, lr in enumerate((0.02, 0.01))]
        for t in trials:
            tracker.on_trial_start(0, trials, t)
        tracker.on_trial_result(0, trials, trials[0], {"epoch": 0, "miou": 0.1, "train_loss": 1.0})
        assert writer.drain(30)
        flaky.down = True
        for epoch in (0, 1, 2):
            for t in trials:
                if (t is trials[0]) and epoch == 0:
                    continue
                t.last_result = {"epoch": epoch, "miou": 0.1 * (epoch + 1), "train_loss": 1.0 / (epoch + 1)}
                tracker.on_trial_result(0, trials, t, dict(t.last_result))
        for t in trials:
            tracker.on_trial_complete(0, trials, t)
        assert tracker.longest < 0.5, tracker.longest  # Tune's loop never waited for MLflow
        time.sleep(0.5)
        assert writer.pending() >= 7
        flaky.down = False
        assert writer.close(60)
    finally:
        tracking.WRITERS.pop("sw", None)
    assert [ln for ln in lines if "not answering" in ln] and len(lines) == 2, lines
    kids = client.search_runs([exp_id], filter_string=f"tags.`{KIND_TAG}` = '{KIND_TRIAL}'")
    assert len(kids) == 2
    for r in kids:
        assert r.info.status == "FINISHED", r.data.tags
        assert r.data.params["cdf.loc"] == "0.1" and "_swept.lr" in r.data.params
        # the weights as the driver found them when the run was created (the report checks the file against it)
        assert r.data.tags[PRETRAINED_SHA256_TAG] == hashlib.sha256(b"not really weights").hexdigest()
        assert r.data.tags[PRETRAINED_SOURCE_TAG] == "from the test"
        steps = [m.step for m in metric_history(client, r.info.run_id, "epoch")]
        assert sorted(steps) == [0, 1, 2], steps
        assert [m.step for m in metric_history(client, r.info.run_id, "miou")] == [0, 1, 2]
        assert {"config.yaml", "history.json"} <= {f.path for f in client.list_artifacts(r.info.run_id)}
