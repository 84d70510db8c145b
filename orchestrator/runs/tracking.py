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

from orchestrator.runs.schema import (
    EXPERIMENT_KIND_TAG,
    EXPERIMENT_KIND_TRAINING,
    KIND_SWEEP,
    KIND_TAG,
    KIND_TRIAL,
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
