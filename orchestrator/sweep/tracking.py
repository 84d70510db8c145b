"""MLflow for sweeps: one parent run per sweep, one child run per trial (DESIGN §5).

Ray's ``MLflowLoggerCallback`` makes no parent run, ends early-stopped trials FINISHED,
keeps its trial→run map in memory (a restored sweep opens new runs) and is refused by
Train V2; so the sweep logs itself from a Tune callback on the driver. The callback only submits
(:class:`orchestrator.runs.writer.TrackingWriter`: a thread and a spool make the calls), so MLflow being
slow or down never stalls Tune's loop:

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

from orchestrator.runs.provenance import weights_tags
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
from orchestrator.runs.tracking import flatten, log_epoch
from orchestrator.runs.writer import TrackingWriter, transient
from orchestrator.sweep.failures import TrialCodeError, TrialLost, actor_node, dead_nodes
from orchestrator.sweep.interrupt import received
from orchestrator.training import log_run_artifacts

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
    """Add the hook's wall time to ``self.seconds``: what tracking costs Tune's loop (only submitting now)."""
    @functools.wraps(hook)
    def wrapper(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return hook(self, *args, **kwargs)
        finally:
            took = time.perf_counter() - t0
            self.seconds += took
            self.longest = max(self.longest, took)
    return wrapper


#: sweep id → the writer its tracker submits to (set by the runner; a tracker Tune restored from its saved
#: state finds the runner's writer here, not a copy of its own)
WRITERS: dict[str, TrackingWriter] = {}
END_TRIAL, FAIL_TRIAL = "trial_end", "trial_error"  # the writer's handler ops, kept by the tracker
#: sweep id → what is told a trial's id once its run is closed in MLflow (artifacts and status landed): the
#: runner adds the hardware-in-the-loop measurer, which reads the run back from MLflow
ON_ENDED: dict[str, list] = {}


class SweepTracker(Callback):
    """The Tune callback that keeps the sweep's MLflow runs (picklable: Tune saves it with the sweep).

    Its hooks only submit ops to the sweep's :class:`TrackingWriter` (which writes them to MLflow on its own
    thread); what a trial's end needs from storage and MLflow runs there too, as handlers."""

    def __init__(self, *, tracking_uri: str, experiment_id: str, parent_run_id: str, sweep_id: str, spec,
                 storage, prepared_cdf: dict | None) -> None:
        self.tracking_uri, self.experiment_id = tracking_uri, experiment_id
        self.parent_run_id, self.sweep_id = parent_run_id, sweep_id
        self.spec, self.storage, self.cdf = spec, storage, prepared_cdf
        self._started: set[str] = set()
        self._client = None
        self._writer: TrackingWriter | None = None
        self.seconds = 0.0  # time Tune's loop spent in these hooks (for the sweep's overhead figures)
        self.longest = 0.0  # the longest single hook: what an MLflow outage would show first

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_client"], state["_started"], state["_writer"] = None, set(), None
        return state

    # ------------------------------------------------------------ helpers
    @property
    def client(self):
        if self._client is None:
            import mlflow

            mlflow.set_tracking_uri(self.tracking_uri)
            self._client = mlflow.MlflowClient(self.tracking_uri)
        return self._client

    @property
    def writer(self) -> TrackingWriter:
        """The runner's writer for this sweep; without one (a tracker used on its own), an inline writer."""
        found = WRITERS.get(self.sweep_id)
        if found is not None:
            return found
        if self._writer is None:
            self._writer = TrackingWriter(lambda: self.client, uri=self.tracking_uri, spool=None,
                                          handlers=self.handlers(), background=False)
        return self._writer

    def handlers(self) -> dict:
        """The ops only this tracker knows how to apply (they read the trial's checkpoint from storage)."""
        return {END_TRIAL: self._end_trial, FAIL_TRIAL: self._fail_trial}

    def _ensure_run(self, trial) -> str:
        """Submit the trial's child run (found by its tags, else created with its params) once per driver."""
        tid = trial.trial_id
        if tid in self._started:
            return tid
        cfg = self.spec.resolve(trial.config)
        comp = components(cfg)
        on = {"ans": cfg.ans.enabled, "cad": cfg.slimming.cad, "casd": cfg.slimming.casd, "cal": cfg.slimming.cal,
              "rd": cfg.slimming.rd}
        tags = {PARENT_RUN_TAG: self.parent_run_id, SWEEP_ID_TAG: self.sweep_id, TRIAL_ID_TAG: tid,
                KIND_TAG: KIND_TRIAL, MODEL_TAG: f"{cfg.model.name}/{cfg.model.variant}",
                DATASET_TAG: f"{cfg.data.kind}:{cfg.data.root}", COMPONENTS_TAG: comp,
                **{COMPONENT_TAG_PREFIX + k: str(v).lower() for k, v in on.items()}, TRAIN_MODE_TAG: cfg.train.mode,
                **weights_tags(cfg.model.pretrained_backbone)}
        # The whole resolved config stays as params (any key can be searched and filtered on); the swept
        # values again under _swept.* so they are found (and compared) first; every trial logs the same keys.
        params = flatten(cfg.model_dump(mode="json"))
        if self.cdf:
            params.update({"cdf.loc": str(self.cdf["loc"]), "cdf.scale": str(self.cdf["scale"])})
        params["resolved.lr"], params["resolved.batch_size"] = str(cfg.lr), str(cfg.batch_size)
        params.update({SWEPT_PARAM_PREFIX + k: v for k, v in self.spec.swept(trial.config).items()})
        self.writer.run(tid, self.experiment_id, self.spec.run_name(tid, trial.config, comp), tags,
                        identity={SWEEP_ID_TAG: self.sweep_id, TRIAL_ID_TAG: tid}, params=params)
        self._started.add(tid)
        return tid

    # ------------------------------------------------------------ Tune hooks (they only submit)
    @_timed
    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        key = self._ensure_run(trial)
        # an interrupted or failed trial resumes: RUNNING again, without the tags of how it ended
        self.writer.reopen(key, [STOP_REASON_TAG, INTERRUPTED_TAG, ERROR_TAG])

    @_timed
    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        metrics = {k: v for k, v in result.items() if k not in TUNE_KEYS}
        if "epoch" not in metrics:
            return
        # step = the worker's epoch index (0-based: the step of "epoch 1/N" is 0), names grouped for the UI
        self.writer.metrics(self._ensure_run(trial), mlflow_metrics(metrics), int(metrics["epoch"]))

    @_timed
    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        key = self._ensure_run(trial)
        epochs = self.spec.resolve(trial.config).train.epochs
        last = int((trial.last_result or {}).get("epoch", -1))
        if received(self.sweep_id) is not None and last + 1 < epochs:
            return  # cut short by the interruption: the runner marks it, --resume continues it
        stop = SCHEDULER_STOPS.get(trial.trial_id)  # its figures are those of the epoch the scheduler judged
        ckpt = (trial.last_result or {}).get("checkpoint_path") if stop else self.newest_checkpoint(trial)
        self.writer.call(END_TRIAL, key, {"trial": trial.trial_id, "config": trial.config, "checkpoint": ckpt,
                                          "last_epoch": last, "stop": stop})

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        """Tune starts a lost trial again (``sweep.max_failures``): say so, with the dead node, in one line."""
        text = trial_error_text(trial)
        if "lost to the infrastructure" not in text:  # the trial's own actor died (with its node, or killed)
            nodes = dead_nodes()
            where = ", ".join(nodes) or actor_node(text)
            text = (f"trial {trial.trial_id} lost to the infrastructure: "
                    + (f"its node {where} died or stopped answering" if where else f"its actor died ({text[:200]})"))
        limit = trial.max_failures if trial.max_failures >= 0 else "unlimited"
        log.warning("%s; retry %d of %s, from its last checkpoint", text.split("; Tune retries")[0],
                    trial.run_metadata.num_failures, limit)

    @_timed
    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        key = self._ensure_run(trial)
        self.writer.call(FAIL_TRIAL, key, {"trial": trial.trial_id, "config": trial.config,
                                           "checkpoint": self.newest_checkpoint(trial),
                                           "error": trial_error_text(trial)})

    # ------------------------------------------------------------ on the writer's thread
    def _end_trial(self, client, rid: str, p: dict) -> None:
        """Artifacts, the epochs only the checkpoint holds, and how the run ended (FINISHED or KILLED)."""
        epochs = self.spec.resolve(p["config"]).train.epochs
        stop = p.get("stop")
        history = self._log_artifacts(client, p, rid)
        if not stop:
            self._backfill(client, rid, history)
        done = 1 + max([int(p["last_epoch"])] + [int(h.get("epoch", -1)) for h in history if not stop])
        if done >= epochs:
            client.set_terminated(rid, "FINISHED")
        elif stop:
            client.set_tag(rid, STOP_REASON_TAG, f"stopped by the scheduler after epoch {done} of {epochs} ({stop})")
            client.set_terminated(rid, "KILLED")
        else:
            client.set_tag(rid, STOP_REASON_TAG, f"ended after epoch {done} of {epochs}; no scheduler "
                                                 "stopped it (its training returned early)")
            client.set_terminated(rid, "KILLED")
        for told in ON_ENDED.get(self.sweep_id, []):
            told(p["trial"])

    def _fail_trial(self, client, rid: str, p: dict) -> None:
        set_tag(client, rid, ERROR_TAG, p["error"])
        self._log_artifacts(client, p, rid)
        client.set_terminated(rid, "FAILED")

    def _backfill(self, client, rid: str, history: list[dict]) -> None:
        """Log the epochs the checkpoint holds that never reached MLflow: a sweep interrupted between a
        checkpoint and its report resumes past that epoch, and its report is never sent again. (It runs after
        every report submitted before it, so what MLflow has is what was reported.)"""
        logged = {m.step for m in metric_history(client, rid, "epoch")}
        for h in history:
            metrics = {k: v for k, v in h.items() if k not in TUNE_KEYS}
            if "epoch" in metrics and int(metrics["epoch"]) not in logged:
                log_epoch(mlflow_metrics(metrics), int(metrics["epoch"]), rid, client)

    # ------------------------------------------------------------ artifacts
    def newest_checkpoint(self, trial) -> str | None:
        """The trial's newest checkpoint by its Train run's own record, else the last one reported to Tune
        (they differ when the sweep was interrupted between a checkpoint and its report)."""
        snapshot = self.storage.join(self.sweep_id, "train", trial.trial_id, TRAIN_SNAPSHOT)
        try:
            text = self.storage.read_bytes(snapshot).decode()
            names = [c["checkpoint_dir_name"] for c in json.loads(text).get("checkpoint_results") or []]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            names = []
        if names:
            return self.storage.join(self.sweep_id, "train", trial.trial_id, max(names))
        return (trial.last_result or {}).get("checkpoint_path")

    def _log_artifacts(self, client, p: dict, rid: str) -> list[dict]:
        """Log the trial's artifacts from the checkpoint ``p`` names; the epochs' history it holds. MLflow not
        answering is raised (the writer retries); any other failure is noted on the run."""
        from workers.train_loop import CHECKPOINT_FILE  # loads torch

        ckpt, cfg = p.get("checkpoint"), self.spec.resolve(p["config"])
        history: list[dict] = []
        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = self.storage.download(ckpt, Path(tmp) / "ckpt") if ckpt else None
                if local is not None and not (Path(local) / CHECKPOINT_FILE).is_file():
                    local = None
                history = checkpoint_history(local) if local is not None else []
                log_run_artifacts(rid, local, cfg, history, client)
        except Exception as exc:  # artifacts must not take the sweep down; the run says what is missing
            if transient(exc):
                raise
            log.warning("trial %s: artifacts not logged: %s", p.get("trial"), exc)
            set_tag(client, rid, ARTIFACTS_ERROR_TAG, exc, limit=500)
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
    """The trial's own verdict (:mod:`.failures`: lost, or its code's error, all its lines), else the last line of
    its latest error's text.

    Tune writes a trial's error files in the driver's staging folder and copies them to ``train.storage_path``
    only at its next sync, so this reads the driver's copy first: the storage copy may be missing, or be an
    earlier attempt's."""
    own, seen = _pickled_error(trial), 0
    while own is not None and seen < 8:
        if isinstance(own, (TrialCodeError, TrialLost)) and own.args:
            return str(own.args[0])
        own, seen = getattr(own, "cause", None) or getattr(own, "__cause__", None), seen + 1
    text = _error_file_text(trial)
    if text:
        verdict = _verdict_in(text)
        if verdict:
            return verdict
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return lines[-1] if lines else "unknown error"
    return "unknown error"


def _pickled_error(trial):
    """The trial's latest error as an exception: the driver's copy, else the one in storage, else None."""
    import cloudpickle

    path = getattr(trial, "pickled_error_file", None)
    if path and Path(path).is_file():
        try:
            return cloudpickle.loads(Path(path).read_bytes())
        except Exception:  # an error whose class cannot be loaded here: fall back to its text
            return None
    try:
        return trial.get_pickled_error()
    except Exception:
        return None


def _error_file_text(trial) -> str | None:
    """The text of the trial's latest error (the driver's copy, else storage's); Tune appends every failure."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        text = Path(path).read_text()
    else:
        try:
            text = trial.get_error()
        except Exception:
            text = None
    if not text:
        return None
    parts = text.split("Failure # ")
    return parts[-1] if len(parts) > 1 else text


def _verdict_in(text: str) -> str | None:
    """The message of the last :class:`TrialCodeError`/:class:`TrialLost` in a traceback's text, all its lines."""
    for name in (TrialCodeError.__name__, TrialLost.__name__):
        at = text.rfind(f"{name}: ")
        if at >= 0:
            return text[at + len(name) + 2:].strip() or None
    return None
