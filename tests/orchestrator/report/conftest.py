"""A sweep logged straight into a temporary MLflow sqlite store, exactly as the sweep logger
lays it out (parent run tagged dance.kind=sweep; children with the flattened config as
params, per-epoch metrics under the names the sweep logs them by, checkpoint/pruning_report.json), so
the report is tested on real MLflow runs without Ray. ``grouped = False`` logs the plain names a store
written before the metric groups holds (``miou``, not ``accuracy/miou``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

BASE = {"name": "rep-test", "data": {"root": "data/none"}, "model": {"name": "deeplabv3plus", "variant": "small"},
        "train": {"epochs": 4, "batch_size": 4}, "ans": {"stages": 2, "target_ratio": 0.5}}
BASELINE = {"ans": {"enabled": False}, "slimming": {"cad": False, "casd": False, "cal": False}}
ANS_ONLY = {"slimming": {"cad": False, "casd": False, "cal": False}}


def merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def summary(ms_pruned: float, other_pruned: float, ms_before: int = 100, other_before: int = 200) -> dict:
    """A pruning report's summary block (workers.pruning_report's format)."""
    def kind(before, frac):
        after = round(before * (1 - frac))
        return {"layers": 3, "channels_before": before, "channels_after": after,
                "pruned_channel_fraction": 1 - after / before,
                "params_before": before * 100, "params_after": after * 100, "pruned_params": (before - after) * 100}
    return {"layers": [], "summary": {"multiscale": kind(ms_before, ms_pruned),
                                      "other": kind(other_before, other_pruned)}}


class SweepLogger:
    def __init__(self, tmp: Path) -> None:
        import mlflow

        self.uri = f"sqlite:///{tmp / 'mlflow.db'}"
        self.tmp = tmp
        mlflow.set_tracking_uri(self.uri)
        self.client = mlflow.MlflowClient(self.uri)
        self.exp = self.client.create_experiment("rep-test", artifact_location=(tmp / "art").as_uri())
        self.n = 0
        self.grouped = True

    def sweep(self, sweep_id: str) -> str:
        run = self.client.create_run(self.exp, run_name=f"sweep {sweep_id}",
                                     tags={"dance.kind": "sweep", "dance.sweep_id": sweep_id})
        self.client.set_terminated(run.info.run_id, "FINISHED")
        self.parent, self.sweep_id = run.info.run_id, sweep_id
        return run.info.run_id

    def trial(self, overrides: dict, miou: float, train_flops: float, infer_flops: float, *, status: str = "FINISHED",
              report: dict | None = None, extra: dict | None = None) -> str:
        from orchestrator.runs.schema import mlflow_metrics
        from orchestrator.runs.tracking import flatten, log_epoch, log_params
        from orchestrator.sweep.tracking import components
        from workers.config import ExperimentConfig

        cfg = ExperimentConfig.model_validate(merge(BASE, overrides))
        tid = f"t_{self.n:05d}"
        self.n += 1
        run = self.client.create_run(self.exp, run_name=f"{tid} {components(cfg)}", tags={
            "mlflow.parentRunId": self.parent, "dance.sweep_id": self.sweep_id, "dance.trial_id": tid,
            "dance.kind": "trial", "dance.components": components(cfg)})
        rid = run.info.run_id
        params = flatten(cfg.model_dump(mode="json"))
        params["resolved.lr"], params["resolved.batch_size"] = str(cfg.lr), str(cfg.batch_size)
        log_params(params, self.client, rid)
        epochs = cfg.train.epochs
        for e in range(epochs):  # per-epoch steps as the trainer reports them; the last one is final
            f = (e + 1) / epochs
            m = {"epoch": e, "miou": miou * f, "train_flops": train_flops * f, "infer_flops_per_image": infer_flops,
                 **((extra or {}) if e == epochs - 1 else {})}
            log_epoch(mlflow_metrics(m) if self.grouped else m, e, rid, self.client)
        if report is not None:
            d = self.tmp / f"rep{self.n}" / "checkpoint"
            d.mkdir(parents=True)
            (d / "pruning_report.json").write_text(json.dumps(report))
            self.client.log_artifacts(rid, str(d), "checkpoint")
        self.client.set_terminated(rid, status)
        return rid


@pytest.fixture(scope="module")
def sweep_logger(tmp_path_factory):
    """One store per test module (creating MLflow's sqlite schema takes seconds); each test logs its own sweep id."""
    return SweepLogger(tmp_path_factory.mktemp("mlflow"))
