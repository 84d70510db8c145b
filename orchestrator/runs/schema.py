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

#: an MLflow run id (what commands that take "a run or a path" tell apart by)
RUN_ID = re.compile(r"^[0-9a-f]{32}$")

# -- the experiment: MLflow 3's UI opens an experiment on its runs table only with this kind
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"  # (the other kind, genai_development, opens on traces)

# -- what a run is
KIND_TAG = "dance.kind"
KIND_SWEEP, KIND_TRIAL, KIND_TRAIN, KIND_BENCH = "sweep", "trial", "train", "bench"
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
SWEPT_PARAM_PREFIX = "swept."  # a trial's swept values again, under short keys (swept.lr, swept.stages)
BEST_TAG_PREFIX = "dance.best."  # + objective: "<trial> (<run id>)" of the best trial on it

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

# MLflow refuses tag values over 5000 characters (8000 on newer servers; the smaller is safe).
MAX_TAG_CHARS = 5000


def tag_text(value: object, limit: int = MAX_TAG_CHARS) -> str:
    """``value`` as a tag value MLflow accepts (cut to ``limit`` characters)."""
    return str(value)[:limit]


def set_tag(client, run_id: str, key: str, value: object, limit: int = MAX_TAG_CHARS) -> None:
    """``client.set_tag`` that never fails on a long value (errors and notes can be pages long)."""
    client.set_tag(run_id, key, tag_text(value, limit))
