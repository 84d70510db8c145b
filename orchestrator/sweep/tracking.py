"""MLflow for sweeps: one parent run per sweep, one child run per trial (DESIGN §5).

Ray's ``MLflowLoggerCallback`` makes no parent run, ends early-stopped trials FINISHED,
keeps its trial→run map in memory (a restored sweep opens new runs) and is refused by
Train V2; so the sweep logs itself from a Tune callback on the driver:

* the child of a trial is found again by tags (``dance.sweep_id``, ``dance.trial_id``) before
  one is created, so a resumed sweep re-attaches instead of duplicating;
* params: the whole resolved trial config, flattened (plus the CDF); tags: model, dataset,
  DANCE components on, trial id, and ``mlflow.parentRunId``;
* every result is one step (the worker's ``epoch`` index) under the names ``dance train`` logs
  (:func:`orchestrator.runs.schema.mlflow_metrics`: ``accuracy/miou``, ``cost/train_tflops``, ...);
* a trial the scheduler stops before its last epoch (ASHA, recorded in :data:`SCHEDULER_STOPS`)
  ends KILLED with ``dance.stop_reason``; one the sweep's interruption caught is left to
  :func:`.runner.mark_interrupted`; one that crashes ends FAILED with ``dance.error``;
  artifacts (config, history, pruning report and plot, final checkpoint) are logged for every
  trial that ended and left a checkpoint.
"""
from __future__ import annotations

import functools
import json
import logging
import tempfile
import time
from pathlib import Path

from ray.tune import Callback

from orchestrator.runs.schema import (
    ARTIFACTS_ERROR_TAG,
    COMPONENT_TAG_PREFIX,
    COMPONENTS_TAG,
    DATASET_TAG,
    ERROR_TAG,
    INTERRUPTED_TAG,
    KIND_TAG,
    KIND_TRIAL,
    MODEL_TAG,
    PARENT_RUN_TAG,
    STOP_REASON_TAG,
    SWEEP_ID_TAG,
    SWEPT_PARAM_PREFIX,
    TRAIN_MODE_TAG,
    TRIAL_ID_TAG,
    metric_history,
    mlflow_metrics,
    set_tag,
)
from orchestrator.runs.tracking import find_child, flatten, log_epoch, log_params
from orchestrator.sweep.failures import TrialCodeError, TrialLost
from orchestrator.sweep.interrupt import received
from orchestrator.training import failure_reason, log_run_artifacts

# mlflow and the torch-loading worker modules stay inside the functions that use them.

log = logging.getLogger("dance.sweep")
# Keys Tune adds to every result: bookkeeping, not the trial's metrics.
TUNE_KEYS = {"training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "time_since_restore",
             "iterations_since_restore", "pid", "done", "trial_id", "date", "hostname", "node_ip",
             "experiment_tag", "config", "checkpoint_dir_name", "should_checkpoint", "checkpoint_path"}
# What Ray Train keeps in a run's folder about its checkpoints (names and reported metrics of each).
TRAIN_SNAPSHOT = "checkpoint_manager_snapshot.json"
#: trial id → why the sweep's scheduler stopped it (written by the scheduler when it decides, in the driver)
SCHEDULER_STOPS: dict[str, str] = {}


def components(cfg) -> str:
    """``ANS+CAD+CASD+CAL`` (or ``baseline``): which DANCE components a trial has on."""
    on = [n for n, v in (("ANS", cfg.ans.enabled), ("CAD", cfg.slimming.cad), ("CASD", cfg.slimming.casd),
                         ("CAL", cfg.slimming.cal), ("RD", cfg.slimming.rd)) if v]
    name = "+".join(on) or "baseline"
    return name if cfg.train.mode == "co" else f"{name} ({cfg.train.mode})"


def _timed(hook):
    """Add the hook's wall time to ``self.seconds``: MLflow's share of the sweep's overhead."""
    @functools.wraps(hook)
    def wrapper(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return hook(self, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
    return wrapper


class SweepTracker(Callback):
    """The Tune callback that keeps the sweep's MLflow runs (picklable: Tune saves it with the sweep)."""

    def __init__(self, *, tracking_uri: str, experiment_id: str, parent_run_id: str, sweep_id: str, spec,
                 storage, prepared_cdf: dict | None) -> None:
        self.tracking_uri, self.experiment_id = tracking_uri, experiment_id
        self.parent_run_id, self.sweep_id = parent_run_id, sweep_id
        self.spec, self.storage, self.cdf = spec, storage, prepared_cdf
        self._runs: dict[str, str] = {}
        self._client = None
        self.seconds = 0.0  # time spent logging to MLflow (for the sweep's overhead figures)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_client"], state["_runs"] = None, {}
        return state

    # ------------------------------------------------------------ helpers
    @property
    def client(self):
        if self._client is None:
            import mlflow

            mlflow.set_tracking_uri(self.tracking_uri)
            self._client = mlflow.MlflowClient(self.tracking_uri)
        return self._client

    def run_id(self, trial) -> str:
        """The trial's child run: found by its tags, else created (with params) now."""
        tid = trial.trial_id
        if tid in self._runs:
            return self._runs[tid]
        found = find_child(self.client, self.experiment_id, self.sweep_id, tid)
        if found is not None:
            self._runs[tid] = found.info.run_id
            return found.info.run_id
        cfg = self.spec.resolve(trial.config)
        comp = components(cfg)
        on = {"ans": cfg.ans.enabled, "cad": cfg.slimming.cad, "casd": cfg.slimming.casd, "cal": cfg.slimming.cal,
              "rd": cfg.slimming.rd}
        tags = {PARENT_RUN_TAG: self.parent_run_id, SWEEP_ID_TAG: self.sweep_id, TRIAL_ID_TAG: tid,
                KIND_TAG: KIND_TRIAL, MODEL_TAG: f"{cfg.model.name}/{cfg.model.variant}",
                DATASET_TAG: f"{cfg.data.kind}:{cfg.data.root}", COMPONENTS_TAG: comp,
                **{COMPONENT_TAG_PREFIX + k: str(v).lower() for k, v in on.items()}, TRAIN_MODE_TAG: cfg.train.mode}
        run = self.client.create_run(self.experiment_id, run_name=self.spec.run_name(tid, trial.config, comp),
                                     tags=tags)
        rid = run.info.run_id
        # The whole resolved config stays as params (any key can be searched and filtered on); the swept
        # values again under _swept.* so they are found (and compared) first; every trial logs the same keys.
        params = flatten(cfg.model_dump(mode="json"))
        if self.cdf:
            params.update({"cdf.loc": str(self.cdf["loc"]), "cdf.scale": str(self.cdf["scale"])})
        params["resolved.lr"], params["resolved.batch_size"] = str(cfg.lr), str(cfg.batch_size)
        params.update({SWEPT_PARAM_PREFIX + k: v for k, v in self.spec.swept(trial.config).items()})
        log_params(params, self.client, rid)
        self._runs[tid] = rid
        return rid

    # ------------------------------------------------------------ Tune hooks
    @_timed
    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        rid = self.run_id(trial)
        run = self.client.get_run(rid)
        for tag in (STOP_REASON_TAG, INTERRUPTED_TAG, ERROR_TAG):  # an interrupted or failed trial resumes
            if tag in run.data.tags:
                self.client.delete_tag(rid, tag)
        self.client.update_run(rid, status="RUNNING")

    @_timed
    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._log_result(result, self.run_id(trial))

    def _log_result(self, result: dict, rid: str) -> None:
        metrics = {k: v for k, v in result.items() if k not in TUNE_KEYS}
        if "epoch" not in metrics:
            return
        # step = the worker's epoch index (0-based: the step of "epoch 1/N" is 0), names grouped for the UI
        log_epoch(mlflow_metrics(metrics), int(metrics["epoch"]), rid, self.client)

    @_timed
    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        rid = self.run_id(trial)
        epochs = self.spec.resolve(trial.config).train.epochs
        if received(self.sweep_id) is not None and int((trial.last_result or {}).get("epoch", -1)) + 1 < epochs:
            return  # cut short by the interruption: the runner marks it, --resume continues it
        stopped = trial.trial_id in SCHEDULER_STOPS  # its figures are those of the epoch the scheduler judged
        history = self._log_artifacts(trial, rid, newest=not stopped)
        if not stopped:
            self._backfill(rid, history)
        done = 1 + max([int((trial.last_result or {}).get("epoch", -1))]
                       + [int(h.get("epoch", -1)) for h in history if not stopped])
        if done >= epochs:
            self.client.set_terminated(rid, "FINISHED")
        elif stopped:
            self.client.set_tag(rid, STOP_REASON_TAG, f"stopped by the scheduler after epoch {done} of {epochs} "
                                                      f"({SCHEDULER_STOPS[trial.trial_id]})")
            self.client.set_terminated(rid, "KILLED")
        else:
            self.client.set_tag(rid, STOP_REASON_TAG, f"ended after epoch {done} of {epochs}; no scheduler "
                                                      "stopped it (its training returned early)")
            self.client.set_terminated(rid, "KILLED")

    def _backfill(self, rid: str, history: list[dict]) -> None:
        """Log the epochs the checkpoint holds that never reached MLflow: a sweep interrupted between a
        checkpoint and its report resumes past that epoch, and its report is never sent again."""
        logged = {m.step for m in metric_history(self.client, rid, "epoch")}
        for h in history:
            if "epoch" in h and int(h["epoch"]) not in logged:
                self._log_result(h, rid)

    @_timed
    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        rid = self.run_id(trial)
        set_tag(self.client, rid, ERROR_TAG, trial_error_text(trial))
        self._log_artifacts(trial, rid)
        self.client.set_terminated(rid, "FAILED")

    # ------------------------------------------------------------ artifacts
    def newest_checkpoint(self, trial) -> str | None:
        """The trial's newest checkpoint by its Train run's own record, else the last one reported to Tune
        (they differ when the sweep was interrupted between a checkpoint and its report)."""
        snapshot = self.storage.join(self.sweep_id, "train", trial.trial_id, TRAIN_SNAPSHOT)
        try:
            if self.storage.filesystem is None:
                text = Path(snapshot).read_text()
            else:
                with self.storage.filesystem.open_input_stream(snapshot) as f:
                    text = f.read().decode()
            names = [c["checkpoint_dir_name"] for c in json.loads(text).get("checkpoint_results") or []]
        except (OSError, ValueError, KeyError, TypeError):
            names = []
        if names:
            return self.storage.join(self.sweep_id, "train", trial.trial_id, max(names))
        return (trial.last_result or {}).get("checkpoint_path")

    def _log_artifacts(self, trial, rid: str, newest: bool = True) -> list[dict]:
        """Log the trial's artifacts from its newest checkpoint (else the last one reported); the epochs'
        history the checkpoint holds."""
        from workers.train_loop import CHECKPOINT_FILE  # loads torch

        ckpt = self.newest_checkpoint(trial) if newest else (trial.last_result or {}).get("checkpoint_path")
        cfg = self.spec.resolve(trial.config)
        history: list[dict] = []
        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = self.storage.download(ckpt, Path(tmp) / "ckpt") if ckpt else None
                if local is not None and not (Path(local) / CHECKPOINT_FILE).is_file():
                    local = None
                history = checkpoint_history(local) if local is not None else []
                log_run_artifacts(rid, local, cfg, history, self.client)
        except Exception as exc:  # artifacts must not take the sweep down; the run says what is missing
            log.warning("trial %s: artifacts not logged: %s", trial.trial_id, exc)
            set_tag(self.client, rid, ARTIFACTS_ERROR_TAG, exc, limit=500)
        return history


def checkpoint_history(ckpt_dir: Path) -> list[dict]:
    """Every epoch's metrics as the checkpoint carries them (complete across resumes)."""
    from workers.checkpoint import read_checkpoint
    from workers.train_loop import CHECKPOINT_FILE

    try:
        extra = read_checkpoint(Path(ckpt_dir) / CHECKPOINT_FILE).get("extra") or {}
    except Exception:
        return []
    return list(extra.get("history") or [])


def trial_error_text(trial) -> str:
    """The trial's own verdict (:mod:`.failures`: lost, or its code's error), else the first worker's own error in
    one line, out of Ray Train's wraps."""
    try:  # the exception itself (the text file's TuneError has lost its type)
        pickled = trial.get_pickled_error()
    except Exception:
        pickled = None
    own, seen = pickled, 0
    while own is not None and seen < 8:
        if isinstance(own, (TrialCodeError, TrialLost)) and own.args:
            return str(own.args[0])
        own, seen = getattr(own, "cause", None) or getattr(own, "__cause__", None), seen + 1
    try:
        err = trial.get_error()
    except Exception:
        err = None
    if err is not None:
        inner = getattr(err, "__cause__", None) or err
        return failure_reason(inner)
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
        return lines[-1] if lines else "unknown error"
    return "unknown error"
