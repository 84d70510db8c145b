"""The MLflow run schema: every tag and run-level metric name the platform writes or reads.

A name that crosses rooms (the sweep writes it, the report and ``dance runs`` read it) is
defined here once. Runs are told apart by :data:`KIND_TAG`:

* ``sweep``: a sweep's parent run (tags :data:`SWEEP_ID_TAG`, :data:`SWEEP_PATH_TAG`, ...);
* ``trial``: one trial of a sweep, a child of the parent (``mlflow.parentRunId``);
* ``train``: one ``dance train`` run;
* ``bench``: a ``dance bench`` of a bare checkpoint (a run's own bench logs into that run).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from workers.metrics import (
    DIAG_GROUP,
    GROUP_SEP,
    GROUPED_AS,
    INFER_FLOPS_PER_IMAGE,
    METRIC_GROUPS,
    PER_CLASS_GROUP,
    PER_CLASS_PREFIX,
    TRAIN_FLOPS,
    is_per_class_metric,
)

#: an MLflow run id (what commands that take "a run or a path" tell apart by)
RUN_ID = re.compile(r"^[0-9a-f]{32}$")

# -- the experiment: MLflow 3's UI opens an experiment on its runs table only with this kind
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"  # (the other kind, genai_development, opens on traces)

# -- what a run is
KIND_TAG = "dance.kind"
KIND_SWEEP, KIND_TRIAL, KIND_TRAIN, KIND_BENCH, KIND_PREMISE = "sweep", "trial", "train", "bench", "premise"
PARENT_RUN_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # a run's description (Markdown) in the UI
RUN_NAME_TAG = "mlflow.runName"

# -- sweeps and their trials
SWEEP_ID_TAG = "dance.sweep_id"
SWEEP_PATH_TAG = "dance.sweep_path"
TRIAL_ID_TAG = "dance.trial_id"
CONFIG_TAG = "dance.config"
MODEL_TAG = "dance.model"
DATASET_TAG = "dance.dataset"
COMPONENTS_TAG = "dance.components"
TRAIN_MODE_TAG = "dance.train_mode"
# one "true"/"false" tag per DANCE component: dance.ans, dance.cad, dance.casd, dance.cal, dance.rd
COMPONENT_TAG_PREFIX = "dance."
# A trial's swept values again, under short keys (_swept.lr, _swept.stages). The "_" sorts them before every
# config key: MLflow's compare view plots the first three params that differ (sorted) against the first
# metric, and lists params sorted, so the swept values are what it shows first.
SWEPT_PARAM_PREFIX = "_swept."
BEST_TAG_PREFIX = "dance.best."  # + objective: "<trial> (<run id>)" of the best trial on it

# -- premise checks (`dance data premise`); the figures' names are in workers.premise
PREMISE_VERDICT_TAG = "dance.premise.verdict"
PREMISE_CHECKPOINT_TAG = "dance.premise.checkpoint"
PREMISE_SOURCE_RUN_TAG = "dance.premise.source_run"  # the MLflow run the checkpoint came from, when given by id

# -- the pretrained backbone a run loaded, as the driver found it when the run was created (runs/provenance.py)
PRETRAINED_SHA256_TAG = "dance.pretrained.sha256"
PRETRAINED_SOURCE_TAG = "dance.pretrained.source"

# -- how a run ended
STOP_REASON_TAG = "dance.stop_reason"  # a scheduler stopped the trial early (KILLED)
ERROR_TAG = "dance.error"  # the trial's own error (FAILED)
ARTIFACTS_ERROR_TAG = "dance.artifacts_error"
# Set on the parent and on every child that was running when a sweep was interrupted (Ctrl-C,
# SIGTERM, a dead driver): the time it happened. ``--resume`` reruns those trials and removes it.
INTERRUPTED_TAG = "dance.interrupted"

# -- hardware in the loop (orchestrator/hil)
HIL_STATE_TAG = "dance.hil"  # queued | measuring | measured | skipped | failed | pending
HIL_REASON_TAG = "dance.hil.reason"
HIL_ERROR_TAG = "dance.hil.error"
HIL_NOTES_TAG = "dance.hil.notes"
HIL_PREDICT_ERROR_TAG = "dance.hil.predict_error"

# -- dance bench
BENCH_CHECKPOINT_TAG = "dance.bench.checkpoint"
BENCH_MODEL_TAG = "dance.bench.model_sha256"  # a bare checkpoint's bench run is found again by it
BENCH_GENERATION_TAG = "dance.bench.generation"  # 0, 1, ...: the step the newest bench's figures are at
BENCH_SETTINGS_TAG = "dance.bench.settings"  # the newest bench's protocol settings (JSON)
BENCH_PARAM_PREFIX = "bench."  # the first bench's settings as params (MLflow keeps a param's first value)

# -- device figures: a bench logs ``device.<board group>.<figure>``; the primary group's figures are
# also logged as ``device.<figure>`` (what sweep objectives name), predictions as ``predicted.device.*``
DEVICE_PREFIX = "device."
PREDICTED_PREFIX = "predicted."
PREDICTED_ERROR_PREFIX = "predicted_error_pct."
DEVICE_FIGURES = ("energy_j_per_image", "network_energy_j_per_image", "energy_j_per_image_net", "latency_ms_p50",
                  "latency_ms_p90", "train_energy_j_per_step")
#: measured figures a sweep objective may name
DEVICE_OBJECTIVES = tuple(DEVICE_PREFIX + f for f in ("energy_j_per_image", "latency_ms_p50", "latency_ms_p90",
                                                      "train_energy_j_per_step"))

# -- run-level metrics written after the trials (step 0)
PARETO_RANK = "pareto_rank"
IS_PARETO = "is_pareto"
HYPERVOLUME = "hypervolume"
TRIALS_RANKED = "trials_ranked"
BEST_METRIC_PREFIX = "best."

# -- a trial's per-epoch metrics in MLflow: the worker's names (workers.metrics), grouped for the UI
# (``accuracy/miou``, ``cost/train_tflops``, ``train/epoch_index``, ``diag/batch_fill``, ``iou/road``); stores
# written before the groups hold the plain names, and every reader takes both (plain_metrics, metric_history)
TRAIN_TFLOPS = "train_tflops"
INFER_GFLOPS_PER_IMAGE = "infer_gflops_per_image"
#: unit-scaled copies people read at a glance: plain name -> (copy, divisor)
UNIT_COPIES = {TRAIN_FLOPS: (TRAIN_TFLOPS, 1e12), INFER_FLOPS_PER_IMAGE: (INFER_GFLOPS_PER_IMAGE, 1e9)}
# each group in the order its metrics are logged, the unit copies ahead of the raw counts they scale
_GROUPS: dict[str, tuple[str, ...]] = {
    g: (*(UNIT_COPIES[n][0] for n in names if n in UNIT_COPIES), *names) for g, names in METRIC_GROUPS.items()}
_TO_MLFLOW: dict[str, str] = {n: g + GROUP_SEP + GROUPED_AS.get(n, n) for g, names in _GROUPS.items() for n in names}
_FROM_MLFLOW: dict[str, str] = {v: k for k, v in _TO_MLFLOW.items()}
_ORDER: dict[str, int] = {n: i for i, n in enumerate(_TO_MLFLOW)}
_CLASS_GROUP = PER_CLASS_GROUP + GROUP_SEP
_DIAG = DIAG_GROUP + GROUP_SEP


def mlflow_metric_name(name: str) -> str:
    """The name a trial's per-epoch metric ``name`` (as the worker reports it) is logged under in MLflow:
    ``miou`` -> ``accuracy/miou``, ``iou_road`` -> ``iou/road``, ``batch_fill`` -> ``diag/batch_fill``; a name
    the worker does not group (one added later, e.g. ``cal_weight_q1``) is a diagnostic. For per-epoch
    figures only: names with a "." or a "/" (``device.*``, ``predicted.*``, grouped) stay as they are."""
    if name in _TO_MLFLOW:
        return _TO_MLFLOW[name]
    if "." in name or GROUP_SEP in name:
        return name
    if is_per_class_metric(name):
        return _CLASS_GROUP + name[len(PER_CLASS_PREFIX):]
    return _DIAG + name


def plain_metric_name(name: str) -> str:
    """The worker's name of an MLflow metric name (the inverse of :func:`mlflow_metric_name`); plain names
    (stores written before the groups) are returned as they are."""
    if name in _FROM_MLFLOW:
        return _FROM_MLFLOW[name]
    if name.startswith(_CLASS_GROUP) and len(name) > len(_CLASS_GROUP):
        return PER_CLASS_PREFIX + name[len(_CLASS_GROUP):]
    if name.startswith(_DIAG) and len(name) > len(_DIAG):
        return name[len(_DIAG):]
    return name


def mlflow_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One epoch's metrics as they are logged to MLflow: the unit-scaled copies added, names grouped, in
    reading order (accuracy, cost, train, diag, per class): MLflow keeps a run's metrics in the order
    they were first logged, and its compare view plots the first one all runs share."""
    out = dict(metrics)
    for name, (copy, scale) in UNIT_COPIES.items():
        if isinstance(out.get(name), (int, float)) and not isinstance(out.get(name), bool):
            out[copy] = out[name] / scale
    last = len(_ORDER)  # then the diagnostics (in the worker's order), then the classes

    def order(name: str) -> int:
        return _ORDER.get(name, last + is_per_class_metric(name))

    return {mlflow_metric_name(k): out[k] for k in sorted(out, key=order)}


def plain_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """A run's metrics (``run.data.metrics``) under the worker's names, whichever form the store holds:
    grouped names (this release) or plain ones (stores written before); the grouped one wins if both."""
    out = {plain_metric_name(k): v for k, v in metrics.items() if plain_metric_name(k) == k}
    out.update({plain_metric_name(k): v for k, v in metrics.items() if plain_metric_name(k) != k})
    return out


def metric_history(client, run_id: str, name: str) -> list:
    """``client.get_metric_history`` of the worker's metric ``name`` in either form (grouped, else plain)."""
    grouped = mlflow_metric_name(name)
    return (client.get_metric_history(run_id, grouped) if grouped != name else []) or \
        client.get_metric_history(run_id, name)


# MLflow refuses tag values over 5000 characters (8000 on newer servers; the smaller is safe).
MAX_TAG_CHARS = 5000


def tag_text(value: object, limit: int = MAX_TAG_CHARS) -> str:
    """``value`` as a tag value MLflow accepts (cut to ``limit`` characters)."""
    return str(value)[:limit]


def set_tag(client, run_id: str, key: str, value: object, limit: int = MAX_TAG_CHARS) -> None:
    """``client.set_tag`` that never fails on a long value (errors and notes can be pages long)."""
    client.set_tag(run_id, key, tag_text(value, limit))
