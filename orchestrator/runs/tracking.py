"""MLflow helpers: where runs are stored, and how a config becomes params.

Tracking URI, first match wins: the ``--tracking-uri`` flag, ``$MLFLOW_TRACKING_URI``,
the config's ``tracking.tracking_uri``, else an embedded SQLite store ``mlflow.db`` in the
current directory (nothing to install or start; ``mlflow ui --backend-store-uri
sqlite:///mlflow.db`` browses it). Artifacts of the embedded store go to ``mlartifacts/``
beside it.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from orchestrator.errors import UserError
from orchestrator.runs.schema import (
    EXPERIMENT_KIND_TAG,
    EXPERIMENT_KIND_TRAINING,
    KIND_SWEEP,
    KIND_TAG,
    KIND_TRIAL,
    RUN_ID,
    SWEEP_ID_TAG,
    TRIAL_ID_TAG,
)

# mlflow is imported inside functions: it takes ~2 s, and `dance --help` or a config check needs none of it.

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"


def resolve_tracking_uri(cli: str | None = None, config: str | None = None) -> str:
    uri = cli or os.environ.get("MLFLOW_TRACKING_URI") or config
    if uri:
        return uri
    return f"sqlite:///{(Path.cwd() / DEFAULT_DB).resolve()}"


def _is_embedded(uri: str) -> bool:
    return uri.startswith("sqlite:///")


def setup(uri: str, experiment: str) -> str:
    """Point MLflow at ``uri`` and make sure ``experiment`` exists, marked as a model-training experiment
    (MLflow 3's UI then opens it on its runs table, not on the GenAI overview); returns its id."""
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        kwargs = {"tags": {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND_TRAINING}}
        if _is_embedded(uri):
            db = Path(uri[len("sqlite:///"):])
            kwargs["artifact_location"] = (db.parent / DEFAULT_ARTIFACTS).resolve().as_uri()
        try:
            return client.create_experiment(experiment, **kwargs)
        except Exception:  # created concurrently by another process
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise
    if EXPERIMENT_KIND_TAG not in (exp.tags or {}):  # made by an earlier release, or by hand
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND_TRAINING)
    return exp.experiment_id


def experiment_of(cfg) -> str:
    """The MLflow experiment of a config: ``tracking.experiment`` where the config sets it, else its
    ``name``; `dance train C` and `dance sweep` over C land in the same one."""
    return cfg.tracking.experiment if "experiment" in cfg.tracking.model_fields_set else cfg.name


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"slimming": {"cad": True}}`` → ``{"slimming.cad": "True"}`` (lists as JSON)."""
    out: dict[str, str] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple, Mapping)):
            out[key] = json.dumps(v, default=str)[:6000]
        else:
            out[key] = str(v)[:6000]
    return out


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric entries (MLflow refuses NaN-free strings and ``None``)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool):
            v = float(v)
        if isinstance(v, (int, float)) and math.isfinite(float(v)):
            out[k] = float(v)
    return out


def log_params(params: Mapping[str, str], client=None, run_id: str | None = None) -> None:
    import mlflow
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    client = client or mlflow.MlflowClient()
    run_id = run_id or mlflow.active_run().info.run_id
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


def log_epoch(metrics: Mapping[str, Any], step: int, run_id: str, client=None) -> None:
    import mlflow
    from mlflow.entities import Metric

    client = client or mlflow.MlflowClient()
    ts = int(time.time() * 1000)
    items = [Metric(k, v, ts, step) for k, v in numeric_metrics(metrics).items()]
    for i in range(0, len(items), 500):
        client.log_batch(run_id, metrics=items[i:i + 500])


def log_artifacts(paths: Iterable[Path], run_id: str, artifact_path: str | None = None, client=None) -> None:
    import mlflow

    client = client or mlflow.MlflowClient()
    for p in paths:
        p = Path(p)
        if p.is_dir():
            client.log_artifacts(run_id, str(p), artifact_path)
        elif p.is_file():
            client.log_artifact(run_id, str(p), artifact_path)


# -- finding a sweep's runs again (by tags, so a resumed sweep re-attaches instead of duplicating)
def quote(text: str) -> str:
    """``text`` inside a single-quoted MLflow filter string."""
    return text.replace("'", "\\'")


def find_parent(client, experiment_id: str, sweep_id: str):
    """The parent run of sweep ``sweep_id`` in the experiment, or None."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_ID_TAG}` = '{quote(sweep_id)}' and "
                                                            f"tags.`{KIND_TAG}` = '{KIND_SWEEP}'", max_results=2)
    return runs[0] if runs else None


def find_sweep_run(client, target: str | None, experiment_ids: list[str] | None = None):
    """The parent run of the sweep ``target`` names: its sweep id (the ``dance.sweep_id`` tag, what
    ``--resume`` takes) or its parent run id; ``None`` names the newest sweep. Every command that takes a
    sweep finds it here. ``experiment_ids`` limits the search (default: every experiment). Raises
    :class:`UserError` when nothing matches or the run is not a sweep's parent."""
    if target and RUN_ID.match(target):
        try:
            run = client.get_run(target)
        except Exception:
            run = None  # not a run id after all: a sweep may be named with 32 hex digits
        if run is not None:
            if run.data.tags.get(KIND_TAG) != KIND_SWEEP or not run.data.tags.get(SWEEP_ID_TAG):
                raise UserError(f"run {target} is not a sweep's parent run (tag {KIND_TAG} is "
                                f"{run.data.tags.get(KIND_TAG)!r}, not {KIND_SWEEP!r})")
            if experiment_ids is not None and run.info.experiment_id not in experiment_ids:
                raise UserError(f"run {target} is a sweep of another experiment ({run.info.experiment_id})")
            return run
    exps = experiment_ids if experiment_ids is not None else [e.experiment_id for e in client.search_experiments()]
    where = f"tags.`{KIND_TAG}` = '{KIND_SWEEP}'" + (f" and tags.`{SWEEP_ID_TAG}` = '{quote(target)}'"
                                                       if target else "")
    runs = client.search_runs(exps, filter_string=where, order_by=["attributes.start_time DESC"],
                              max_results=1) if exps else []
    if not runs:
        if target and RUN_ID.match(target):
            raise UserError(f"{target}: no such run (nor a sweep with that id) in this MLflow store")
        if target:
            raise UserError(f"{target}: neither a sweep's parent run id nor a sweep id in this MLflow store")
        raise UserError("no sweep in this MLflow store yet (run `dance sweep CONFIG` or `dance quickstart`)")
    return runs[0]


def find_child(client, experiment_id: str, sweep_id: str, trial_id: str):
    """The child run of one trial of a sweep, or None."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_ID_TAG}` = '{quote(sweep_id)}' and "
                                                            f"tags.`{TRIAL_ID_TAG}` = '{quote(trial_id)}'",
                              max_results=5)
    return runs[0] if runs else None


def sweep_children(client, experiment_id: str, sweep_id: str) -> list:
    """Every trial run of a sweep."""
    return client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_ID_TAG}` = '{quote(sweep_id)}' and "
                                                            f"tags.`{KIND_TAG}` = '{KIND_TRIAL}'", max_results=10000)
