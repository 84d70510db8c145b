"""The runs a report is built from: a sweep's child runs in MLflow, one :class:`Trial` each.

A sweep is named by its parent run id (32 hex digits) or its sweep id (the ``dance.sweep_id``
tag, searched in every experiment). Only FINISHED children enter the tables; the others are
listed with their status so a reader sees what is missing.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import UserError
from orchestrator.runs.schema import SWEEP_ID_TAG, TRIAL_ID_TAG, plain_metrics
from orchestrator.runs.schema import metric_history as run_metric_history
from orchestrator.runs.tracking import find_sweep_run, sweep_children

FULL = ("ANS", "CAD", "CASD", "CAL")


@dataclass
class Sweep:
    sweep_id: str
    parent_run_id: str
    experiment_id: str
    name: str


@dataclass
class Trial:
    """One child run: its flattened config (params), final metrics (under the worker's names, whichever
    form the store holds) and where it came from."""

    run_id: str
    sweep_id: str
    trial_id: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)

    # -------------------------------------------------------------- config
    def param(self, key: str, default: str | None = None) -> str | None:
        return self.params.get(key, default)

    def flag(self, key: str) -> bool:
        return str(self.params.get(key, "False")).lower() == "true"

    def num(self, key: str) -> float | None:
        v = self.params.get(key)
        try:
            return float(v) if v is not None else None
        except ValueError:
            return None

    @property
    def switches(self) -> frozenset[str]:
        """The DANCE components on: a subset of {ANS, CAD, CASD, CAL, RD}."""
        on = {"ANS": self.flag("ans.enabled"), "CAD": self.flag("slimming.cad"), "CASD": self.flag("slimming.casd"),
              "CAL": self.flag("slimming.cal"), "RD": self.flag("slimming.rd")}
        return frozenset(k for k, v in on.items() if v)

    @property
    def components(self) -> str:
        order = ("ANS", "CAD", "CASD", "CAL", "RD")
        return "+".join(k for k in order if k in self.switches) or "baseline"

    @property
    def is_dance(self) -> bool:
        return self.switches == frozenset(FULL)

    @property
    def is_baseline(self) -> bool:
        return not self.switches

    @property
    def mode(self) -> str:
        return self.param("train.mode", "co") or "co"

    @property
    def p_mode(self) -> str:
        return self.param("slimming.p_mode", "proposed") or "proposed"

    def range_of(self, name: str) -> tuple[float, float] | None:
        lo, hi = self.num(f"slimming.{name}.lo"), self.num(f"slimming.{name}.hi")
        return (lo, hi) if lo is not None and hi is not None else None

    @property
    def epochs(self) -> int | None:
        v = self.num("train.epochs")
        return int(v) if v is not None else None

    @property
    def target_ratio(self) -> float | None:
        return self.num("ans.target_ratio")

    @property
    def seed(self) -> int:
        """The run's seed: arms are paired by it (orchestrator/report/stats.py)."""
        v = self.num("seed")
        return int(v) if v is not None else 0

    @property
    def drop_budget(self) -> str:
        """``slimming.drop_budget``; a store from before the option trained ``epochs`` (shorter epochs)."""
        return self.param("slimming.drop_budget", "epochs") or "epochs"

    @property
    def is_adaptation(self) -> bool:
        """Whether the trial started from a trained model (``train.init_checkpoint``): the paper's Table 3 setting."""
        return (self.param("train.init_checkpoint") or "None") not in ("None", "", "null")

    def context(self) -> tuple:
        """What no table varies: trials compared in one table must agree on all of it. The seed is not part
        of it: seeds are replicates, averaged in a row and paired across rows."""
        keys = ("model.name", "model.variant", "data.kind", "data.root", "data.augment", "train.init_checkpoint",
                "resolved.lr", "resolved.batch_size", "ans.stages", "ans.l1_lambda", "ans.schedule",
                "slimming.cad_range.lo", "slimming.cad_range.hi", "slimming.cad_levels", "slimming.rd_prob",
                "slimming.cal_normalize", "train.size_quantum", "model.pretrained_backbone")
        options = tuple(sorted((k, v) for k, v in self.params.items() if k.startswith("model.options.")))
        return tuple(self.params.get(k) for k in keys) + options

    # -------------------------------------------------------------- results
    def metric(self, name: str) -> float | None:
        v = self.metrics.get(name)
        return None if v is None or v != v else float(v)

    @property
    def label(self) -> str:
        return f"{self.trial_id} {self.components}"


def client_for(uri: str):
    import mlflow

    # one progress bar per downloaded pruning report would bury the report's own progress lines
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise UserError(f"no MLflow store at {uri} (run the sweep first, or pass --tracking-uri)")
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def find_sweep(client, target: str) -> Sweep:
    """The sweep a report argument names: a parent run id or a sweep id. Unknown: UserError."""
    parent = find_sweep_run(client, target)  # a sweep id or a parent run id alike
    sid = parent.data.tags.get(SWEEP_ID_TAG)
    if not sid:
        raise UserError(f"run {parent.info.run_id} has no {SWEEP_ID_TAG} tag")
    return Sweep(sid, parent.info.run_id, parent.info.experiment_id, parent.info.run_name or sid)


def collect_trials(client, sweep: Sweep) -> list[Trial]:
    """Every child run of ``sweep`` (any status), params and final metric values."""
    out = []
    for r in sweep_children(client, sweep.experiment_id, sweep.sweep_id):
        out.append(Trial(run_id=r.info.run_id, sweep_id=sweep.sweep_id,
                         trial_id=r.data.tags.get(TRIAL_ID_TAG, r.info.run_id[:8]), status=r.info.status,
                         params=dict(r.data.params), metrics=plain_metrics(r.data.metrics), tags=dict(r.data.tags)))
    out.sort(key=lambda t: t.trial_id)
    return out


def metric_history(client, trial: Trial, name: str) -> list[tuple[int, float]]:
    """(step, value) of one metric over the trial's epochs."""
    return sorted((m.step, float(m.value)) for m in run_metric_history(client, trial.run_id, name))


def download_json(client, trial: Trial, artifact: str) -> dict[str, Any] | None:
    """An artifact of the trial parsed as JSON, or None when the trial has none."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(trial.run_id, artifact, tmp)
        except Exception:
            return None
        try:
            return json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return None


def download_file(client, trial: Trial, artifact: str, dest: Path) -> Path | None:
    """Copy an artifact of the trial under ``dest``; None when it has none."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        return Path(client.download_artifacts(trial.run_id, artifact, str(dest)))
    except Exception:
        return None
