"""``run_sweep``: validate, score once, tune every trial on Ray, then rank and register in MLflow.

Order of events (data flows one way: config → sweep → trials → MLflow):

1. the sweep file is checked whole before Ray starts (:func:`.space.load_sweep`);
2. the driver scores the dataset (Eq. 1, cached) and fits the CDF once for every trial;
3. Ray is joined or started; the concurrency is planned from the cluster's nodes;
4. the MLflow parent run exists before the first trial (re-found on ``--resume``);
5. ``Tuner(tune.with_resources(run_trial, ...))`` runs the trials — each one a
   ``TorchTrainer`` with ``TuneReportCallback`` — while :class:`.tracking.SweepTracker`
   keeps the child runs (through a writer thread and a spool: MLflow is never on Tune's loop) and
   :class:`.live.LiveTable` shows progress; the writer is drained before what follows;
6. every child gets ``pareto_rank``/``is_pareto``; the parent gets the front (CSV, PNG),
   its hypervolume and the best trial per objective; the front's models are registered.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from orchestrator.checkpoints import checkpoint_file
from orchestrator.errors import UserError
from orchestrator.hil.measurer import start_measurer  # the sweep's one door into HIL (with .trial_ended)
from orchestrator.progress import progress_bar
from orchestrator.runs import pareto
from orchestrator.runs.schema import (
    BEST_METRIC_PREFIX,
    BEST_TAG_PREFIX,
    CONFIG_TAG,
    DATASET_TAG,
    INTERRUPTED_TAG,
    IS_PARETO,
    KIND_SWEEP,
    KIND_TAG,
    MODEL_TAG,
    STOP_REASON_TAG,
    SWEEP_ID_TAG,
    SWEEP_PATH_TAG,
    TRIAL_ID_TAG,
)
from orchestrator.runs.story import front_note, write_note
from orchestrator.runs.tracking import (
    experiment_of,
    find_parent,
    flatten,
    log_epoch,
    log_params,
    resolve_tracking_uri,
    setup,
    sweep_children,
)
from orchestrator.runs.writer import TrackingWriter, mlflow_retries_off, spool_path
from orchestrator.storage import resolve_storage
from orchestrator.sweep.interrupt import InterruptWatch, forget, handlers_restored, received
from orchestrator.sweep.live import LiveTable
from orchestrator.sweep.preflight import resume_sweep_id
from orchestrator.sweep.replan import PLANS, Plan, Replanner
from orchestrator.sweep.resources import cluster_nodes, needs_of, plan_concurrency
from orchestrator.sweep.space import SweepSpec, count_trials, tune_space
from orchestrator.sweep.tracking import ON_ENDED, SCHEDULER_STOPS, WRITERS, SweepTracker
from orchestrator.sweep.trial import run_trial
from orchestrator.training import ensure_ray, preflight

# This module drives Ray Tune and loads ray.tune at import (through the sweep's callbacks); only the
# `dance sweep` run path imports it. mlflow, ray, optuna and torch-loading worker modules stay local.

log = logging.getLogger("dance.sweep")
# How long the end of a sweep (or an interruption) waits for MLflow to answer again before it leaves the
# pending calls in the spool for --resume. While MLflow answers, the wait lasts as long as the uploads take.
TRACKING_DOWN_S = 120.0
TRACKING_DOWN_INTERRUPTED_S = 10.0  # the same after Ctrl-C: whoever pressed it is waiting

@dataclass
class SweepOutcome:
    sweep_id: str
    experiment: str
    tracking_uri: str
    parent_run_id: str
    rows: list[dict[str, Any]]
    hypervolume: float | None
    timings: dict[str, float] = field(default_factory=dict)
    registered: list[str] = field(default_factory=list)
    hil: dict[str, int] = field(default_factory=dict)


def new_sweep_id(spec: SweepSpec) -> str:
    return spec.sweep.name or f"{spec.base.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def _parent(client, exp_id: str, spec: SweepSpec, sweep_id: str, sweep_path: str, resume: bool) -> str:
    found = find_parent(client, exp_id, sweep_id)
    if resume:
        if found is None:
            raise UserError(f"--resume {sweep_id}: no sweep run with that id in experiment "
                            f"{experiment_of(spec.base)!r}")
        if INTERRUPTED_TAG in found.data.tags:  # it goes on: no longer interrupted
            client.delete_tag(found.info.run_id, INTERRUPTED_TAG)
        client.update_run(found.info.run_id, status="RUNNING")
        return found.info.run_id
    if found is not None:
        raise UserError(f"a sweep named {sweep_id!r} exists already in experiment {experiment_of(spec.base)!r} "
                        f"(run {found.info.run_id}); continue it with --resume {sweep_id}, or pick another sweep.name")
    s = spec.sweep
    tags = {KIND_TAG: KIND_SWEEP, SWEEP_ID_TAG: sweep_id, SWEEP_PATH_TAG: sweep_path,
            CONFIG_TAG: str(Path(spec.source).resolve()),
            MODEL_TAG: f"{spec.base.model.name}/{spec.base.model.variant}",
            DATASET_TAG: f"{spec.base.data.kind}:{spec.base.data.root}"}
    # short enough to read in the runs table: a named sweep by its name, else the config's name and the time
    name = s.name or f"{spec.base.name} sweep {time.strftime('%m-%d %H:%M')}"
    run = client.create_run(exp_id, run_name=name, tags=tags)
    params = {f"base.{k}": v for k, v in flatten(spec.base.model_dump(mode="json")).items()}
    params.update({"sweep.space": json.dumps({k: d.model_dump(exclude_none=True) for k, d in s.space.items()})[:6000],
                   "sweep.space_paths": json.dumps(list(s.space)), "sweep.search": s.search,
                   "sweep.num_samples": str(s.num_samples),
                   "sweep.objectives": json.dumps([o.model_dump() for o in s.objectives]),
                   "sweep.scheduler": json.dumps(s.scheduler.model_dump())})
    log_params(params, client, run.info.run_id)
    return run.info.run_id


def _searcher(spec: SweepSpec):
    s = spec.sweep
    if s.search != "optuna":
        return None
    try:
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise UserError("sweep.search: optuna needs the optuna package (pip install optuna)") from None
    objs = s.objectives
    if len(objs) == 1:
        return OptunaSearch(metric=objs[0].metric, mode=objs[0].mode, seed=spec.base.seed)
    from orchestrator.sweep.nsga import PicklableNSGAIISampler

    # NSGA-II for several objectives (DESIGN §5); Optuna's default TPE takes one.
    return OptunaSearch(metric=[o.metric for o in objs], mode=[o.mode for o in objs],
                        sampler=PicklableNSGAIISampler(seed=spec.base.seed))


def _search_alg(spec: SweepSpec, concurrency: int):
    """The search algorithm with the planned concurrency, held by the Replanner to change it as nodes come and go
    (Tune's max_concurrent_trials would wrap it out of reach)."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    searcher = _searcher(spec)
    if searcher is None:
        return BasicVariantGenerator(max_concurrent=concurrency)
    return ConcurrencyLimiter(searcher, max_concurrent=concurrency)


def _scheduler(spec: SweepSpec):
    sch = spec.sweep.scheduler
    if sch.kind != "asha":
        return None
    # One result per epoch, so iterations are epochs.
    return DecidingASHA(metric=sch.metric, mode=sch.mode, time_attr="training_iteration",
                        max_t=spec.base.train.epochs, grace_period=sch.grace_period,
                        reduction_factor=sch.reduction_factor)


class DecidingASHA(ASHAScheduler):
    """ASHA that writes down each trial it stops (:data:`SCHEDULER_STOPS`): a trial's child run says
    "stopped by the scheduler" only then, never because a trial ended early for another reason."""

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP:
            value = result.get(self._metric)
            shown = f"{value:.4g}" if isinstance(value, (int, float)) else "n/a"
            SCHEDULER_STOPS[trial.trial_id] = f"asha: {self._metric} {shown} below the rung's cut-off"
        return decision


def _needs(spec: SweepSpec):
    needs = [needs_of(spec.base, spec.sweep.trial_cpus)]
    for path, dom in spec.sweep.space.items():
        if path.startswith("scaling"):
            needs += [needs_of(spec.resolve({path: v}), spec.sweep.trial_cpus) for v in dom.probe_points()]
    return needs


def run_sweep(spec: SweepSpec, *, address: str | None = None, tracking_uri: str | None = None,
              resume: str | None = None, live: bool | None = None, verbose: bool = False,
              print_fn=print) -> SweepOutcome:
    """Run (or resume) the sweep ``spec``; returns the ranked trials."""
    import mlflow
    from ray import tune

    from workers.prepare import worker_config

    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    # Downloads (a board measurement fetching a trial's checkpoint) happen beside the live table or
    # the --plain lines: MLflow's progress bars would only garble them.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = resolve_tracking_uri(tracking_uri, spec.base.tracking.tracking_uri)
    experiment = experiment_of(spec.base)
    sweep_id = resume_sweep_id(resume, uri, experiment) if resume else new_sweep_id(spec)  # or a parent run id
    preflight(spec.base)
    storage = resolve_storage(spec.base.train.storage_path)
    sweep_path = storage.join(sweep_id)
    if resume and not storage.exists(storage.join(sweep_id, "tuner.pkl")):
        raise UserError(f"--resume {sweep_id}: no saved sweep at {sweep_path} (train.storage_path "
                        f"{spec.base.train.storage_path})")

    t0 = time.perf_counter()
    with progress_bar("scoring train images (Eq. 1)", enabled=live) as bt, \
            progress_bar("scoring val images (Eq. 1)", enabled=live) as bv:
        prepared = worker_config(spec.base, progress_train=bt, progress_val=bv, score=True)
    timings["scoring_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    join_ray(address, verbose=verbose)
    timings["ray_start_s"] = time.perf_counter() - t0
    needs = _needs(spec)
    concurrency = plan_concurrency(needs, cluster_nodes(), spec.sweep.max_concurrent_trials)

    exp_id = setup(uri, experiment)
    runs = _SweepRuns(mlflow.MlflowClient(uri), exp_id, "", sweep_id, spec)
    runs.parent_id = _parent(runs.client, exp_id, spec, sweep_id, sweep_path, bool(resume))
    if print_fn:
        print_fn(f"sweep {sweep_id}: {count_trials(spec.sweep)} trial(s), {concurrency} at a time, search "
                 f"{spec.sweep.search}, scheduler {spec.sweep.scheduler.kind}; MLflow experiment {experiment!r}, "
                 f"parent run {runs.parent_id}")

    tracker = SweepTracker(tracking_uri=uri, experiment_id=exp_id, parent_run_id=runs.parent_id, sweep_id=sweep_id,
                           spec=spec, storage=storage, prepared_cdf=prepared.get("cdf"))
    table = LiveTable(lambda c: spec.resolve(c).train.epochs, spec.label, live=live)
    measurer = start_measurer(spec, sweep_id=sweep_id, tracking_uri=uri, experiment_id=exp_id, resume=bool(resume),
                              on_measured=runs.rank, on_state=table.board_event, print_fn=print_fn)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, spec=spec, prepared=prepared, storage=storage, sweep_id=sweep_id),
        {"cpu": spec.sweep.trial_cpus})
    callbacks = [tracker, table]
    if measurer is not None:  # told of a trial once its run is closed in MLflow (the writer's order)
        ON_ENDED[sweep_id] = [measurer.trial_ended]
    # The trials' MLflow calls go through a writer thread and a spool on this disk: Tune's loop never waits
    # for MLflow; what a previous driver of this sweep left in the spool is replayed first.
    runs.writer = WRITERS[sweep_id] = TrackingWriter(
        lambda: mlflow.MlflowClient(uri), uri=uri, spool=sweep_spool(storage, sweep_id), handlers=tracker.handlers(),
        print_fn=print_fn or log.warning)
    if runs.writer.replayed and print_fn:
        print_fn(f"sweep {sweep_id}: replaying {runs.writer.replayed} MLflow call(s) an earlier run of this sweep "
                 f"left in {runs.writer.spool_path}")
    PLANS[sweep_id] = Plan(needs, spec.sweep.max_concurrent_trials, print_fn or log.warning)
    t0 = time.perf_counter()
    try:
        with mlflow_retries_off():
            _tune(spec, trainable, storage, sweep_path, concurrency, callbacks, resume=bool(resume), table=table,
                  measurer=measurer, runs=runs)
            timings["tune_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            runs.close_writer(print_fn)
            timings["tracking_drain_s"] = time.perf_counter() - t0
    except TrackingIncomplete:
        if measurer is not None:
            measurer.close()
        raise
    finally:
        WRITERS.pop(sweep_id, None)
        ON_ENDED.pop(sweep_id, None)
        PLANS.pop(sweep_id, None)
        runs.writer.close()  # (a no-op once closed) whatever is pending stays in the spool for --resume
    w = runs.writer
    # the writer thread's time in MLflow; what Tune's loop paid for it (submitting only), its longest wait
    timings.update(mlflow_s=w.call_s, mlflow_calls=float(w.calls), tracking_loop_s=w.submit_s,
                   tracking_loop_max_s=w.submit_max_s, tracking_hook_max_s=tracker.longest,
                   tracking_outages=float(w.outages))
    hil_counts: dict[str, int] = {}
    if measurer is not None:
        t0 = time.perf_counter()
        hil_counts = _wait_for_boards(measurer, runs, print_fn)
        timings["hil_wait_s"] = time.perf_counter() - t0
        timings.update({f"hil_{k}": float(v) for k, v in hil_counts.items()})
    t0 = time.perf_counter()
    rows, hv, registered = finalize(runs.client, exp_id, runs.parent_id, spec, sweep_id)
    timings["finalize_s"] = time.perf_counter() - t0
    timings["wall_s"] = time.perf_counter() - t_all
    timings["concurrency"] = float(concurrency)
    log_epoch({f"sweep.{k}": v for k, v in timings.items()}, 0, runs.parent_id, runs.client)
    statuses = {r["status"] for r in rows}
    runs.client.set_terminated(runs.parent_id, "FAILED" if rows and statuses == {"FAILED"} else "FINISHED")
    return SweepOutcome(sweep_id, experiment, uri, runs.parent_id, rows, hv, timings, registered, hil_counts)


def sweep_spool(storage, sweep_id: str) -> Path:
    """The sweep's MLflow spool: beside Tune's state when that is on this machine (``--resume`` finds it
    from any folder), else ``.dance/spool/<sweep id>.sqlite`` here."""
    if storage.filesystem is None:
        return spool_path("mlflow-spool", storage.join(sweep_id))
    return spool_path(sweep_id)


def join_ray(address: str | None, *, verbose: bool = False) -> None:
    """:func:`ensure_ray`, with a failed join of a cluster turned into what to try."""
    target = address or os.environ.get("RAY_ADDRESS")
    try:
        ensure_ray(address, verbose=verbose)
    except Exception as exc:
        if not target:
            raise
        import ray

        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise UserError(
            f"cannot join the Ray cluster at {target} ({first.strip()[:300]}). Try: (1) the address: "
            f"`ray status --address {target}` from this machine, --address or $RAY_ADDRESS; (2) the auth mode: a "
            "cluster started with RAY_AUTH_MODE=token needs RAY_AUTH_MODE=token (and its token) in this shell too; "
            f"(3) the versions: this driver runs Ray {ray.__version__} on Python "
            f"{sys.version_info.major}.{sys.version_info.minor}, and the cluster's must be the same") from None
    if target:
        check_dashboard(target)


def check_dashboard(target: str) -> None:
    """A joined cluster must serve Ray's State API (its head's dashboard): Ray Train frees the placement groups
    of trials a scheduler stopped through it, and without it their CPUs stay taken and later trials wait."""
    try:
        import ray
        from ray.util.state import list_nodes

        # the joined cluster's own address: with none, the State API guesses from the GCS processes it sees
        address = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
        list_nodes(address=address, timeout=15, limit=1, raise_on_missing_output=False)
    except Exception as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise UserError(
            f"the Ray cluster at {target} does not serve the State API ({first.strip()[:200]}): start its head "
            "with `ray start --head --include-dashboard=true` (docs/sweeps.md, Scale-out). Without it Ray Train "
            "cannot free the CPUs of trials a scheduler stopped, and later trials wait for them forever") from None


@dataclass
class _SweepRuns:
    """Where a running sweep's MLflow runs are, and the two things done to them from several places."""

    client: Any
    exp_id: str
    parent_id: str
    sweep_id: str
    spec: SweepSpec
    writer: TrackingWriter | None = None

    def close_writer(self, print_fn=None, down_s: float = TRACKING_DOWN_S) -> None:
        """Wait for the trials' MLflow calls to land (as long as MLflow answers); raise
        :class:`TrackingIncomplete` naming the spool when MLflow stays down."""
        w = self.writer
        if w is None:
            return
        if w.pending() and print_fn:
            print_fn(f"sweep {self.sweep_id}: waiting for {w.pending()} MLflow call(s) to land"
                     + (" (MLflow is down)" if w.down_since is not None else ""))
        complete = w.close(timeout=5.0 if w.wait(down_s) else 0.0)
        if w.refused and print_fn:
            print_fn(f"sweep {self.sweep_id}: MLflow refused {w.refused} tracking call(s) (said above); they are "
                     f"kept in {w.spool_path}")
        if not complete:
            raise TrackingIncomplete(
                f"sweep {self.sweep_id}: the trials ended, but MLflow at {w.uri} has not answered for "
                f"{down_s:.0f} s: {w.pending()} tracking call(s) are kept in {w.spool_path}; `dance sweep "
                f"{self.spec.source} --resume {self.sweep_id}` replays them when it answers, and ranks the trials",
                sweep_id=self.sweep_id, spool=str(w.spool_path))

    def rank(self) -> None:
        rank_front(self.client, self.exp_id, self.parent_id, self.spec, self.sweep_id)

    def interrupted(self, when: str, signum: int = signal.SIGINT) -> SweepInterrupted:
        """Mark the sweep interrupted in MLflow; the error to raise, with the resume command."""
        name = signal.Signals(signum).name
        try:
            self.close_writer(down_s=TRACKING_DOWN_INTERRUPTED_S)  # the trials' last calls land first
            mark_interrupted(self.client, self.exp_id, self.parent_id, self.sweep_id, name)
        except TrackingIncomplete as exc:  # --resume replays the spool, then reopens the runs
            log.warning("%s", exc)
        return SweepInterrupted(f"sweep {self.sweep_id} interrupted ({name}) {when}", sweep_id=self.sweep_id,
                                signum=signum, command=f"dance sweep {self.spec.source} --resume {self.sweep_id}")


def _tune(spec: SweepSpec, trainable, storage, sweep_path: str, concurrency: int, callbacks: list, *, resume: bool,
          table, measurer, runs: _SweepRuns) -> None:
    """Build (or restore) the Tuner and fit it; an interrupted fit marks the sweep and raises SweepInterrupted."""
    from ray import tune

    forget(runs.sweep_id)
    # On Ctrl-C Tune logs its own "Tuner.restore(...)" hint; the command that resumes a sweep is ours.
    tune_log = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, _NoRestoreHint) for f in tune_log.filters):
        tune_log.addFilter(_NoRestoreHint())
    # The old reporter at verbose=0 prints nothing; the new one still prints paths on stdout.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune saves its state every >= 10 s by default; a driver killed right after a trial ended
    # would then rerun that trial on --resume. The state of a sweep is small: save it often.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "3")
    try:
        if resume:
            tuner = tune.Tuner.restore(sweep_path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                       storage_filesystem=storage.filesystem)
        else:
            search_alg = _search_alg(spec, concurrency)
            tuner = tune.Tuner(
                trainable, param_space=tune_space(spec.sweep),
                tune_config=tune.TuneConfig(num_samples=spec.sweep.num_samples, search_alg=search_alg,
                                            scheduler=_scheduler(spec),
                                            reuse_actors=spec.sweep.reuse_trial_actors,
                                            trial_name_creator=lambda t: t.trial_id,
                                            trial_dirname_creator=lambda t: t.trial_id),
                run_config=tune.RunConfig(name=runs.sweep_id, storage_path=storage.path,
                                          storage_filesystem=storage.filesystem,
                                          callbacks=[*callbacks, InterruptWatch(runs.sweep_id),
                                                     Replanner(runs.sweep_id, search_alg, concurrency)],
                                          verbose=0,
                                          failure_config=tune.FailureConfig(max_failures=spec.sweep.max_failures)))
        with handlers_restored():
            interrupted = unfinished_trials(tuner.fit())
    except KeyboardInterrupt:  # a second Ctrl-C: Tune's clean-up was cut short
        interrupted = ["?"]
    except BaseException:
        if measurer is not None:
            measurer.close()
        raise
    finally:
        table.close()
    # Tune catches Ctrl-C itself, saves its state and returns early, with the running trials TERMINATED:
    # the watch, not the trials' states, says whether the sweep was interrupted.
    signum = received(runs.sweep_id)
    forget(runs.sweep_id)
    if interrupted or signum:
        if measurer is not None:
            measurer.close()  # jobs stay in the journal; --resume picks them up
        raise runs.interrupted("before every trial ended", signum or signal.SIGINT)


class _NoRestoreHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore" not in record.getMessage()


def _wait_for_boards(measurer, runs: _SweepRuns, print_fn) -> dict[str, int]:
    """Training is done: let the boards finish (up to ``hil.timeout_s``); Ctrl-C leaves them pending."""
    measurer.training_done()
    if print_fn:
        print_fn(f"sweep {runs.sweep_id}: training done; waiting for the boards' measurements "
                 f"(up to {runs.spec.sweep.hil.timeout_s:g} s)")
    try:
        return measurer.drain()
    except KeyboardInterrupt:  # Ctrl-C while waiting for the boards: the same as during training
        measurer.mark_pending()
        measurer.close()
        raise runs.interrupted("while the boards measured") from None
    finally:
        measurer.close()


class TrackingIncomplete(UserError):
    """The trials ended but MLflow stayed down: their pending calls are in the spool; ``--resume`` replays."""

    def __init__(self, message: str, *, sweep_id: str, spool: str) -> None:
        super().__init__(message)
        self.sweep_id, self.spool = sweep_id, spool


class SweepInterrupted(UserError):
    """Stopped before every trial ended (Ctrl-C, SIGTERM); ``--resume`` continues it."""

    def __init__(self, summary: str, *, sweep_id: str, signum: int = signal.SIGINT, command: str = "") -> None:
        super().__init__(f"{summary}; continue it with: {command}")
        self.summary, self.sweep_id, self.signum = summary, sweep_id, int(signum)


def unfinished_trials(results) -> list[str]:
    """Ids of trials Tune left pending or running (it returns early on SIGINT)."""
    analysis = getattr(results, "_experiment_analysis", None)
    trials = getattr(analysis, "trials", None) or []
    return [t.trial_id for t in trials if t.status not in ("TERMINATED", "ERROR")]


def mark_interrupted(client, exp_id: str, parent_id: str, sweep_id: str, signal_name: str = "SIGINT") -> None:
    """Unfinished child runs end KILLED with :data:`INTERRUPTED_TAG` and a stop reason that starts with
    "interrupted" (reopened as RUNNING on resume); the parent gets the same tag and KILLED, never FINISHED."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    for run in sweep_children(client, exp_id, sweep_id):
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, INTERRUPTED_TAG, stamp)
            client.set_tag(run.info.run_id, STOP_REASON_TAG,
                           f"interrupted: the sweep got {signal_name} at {stamp}; --resume continues this trial")
            client.set_terminated(run.info.run_id, "KILLED")
    client.set_tag(parent_id, INTERRUPTED_TAG, stamp)
    client.set_terminated(parent_id, "KILLED")


# ---------------------------------------------------------------- after the trials
def rank_front(client, exp_id: str, parent_id: str, spec: SweepSpec, sweep_id: str):
    """:func:`orchestrator.runs.pareto.rank_front` on this sweep's objectives."""
    return pareto.rank_front(client, exp_id, parent_id, sweep_id, [(o.metric, o.mode) for o in spec.sweep.objectives],
                             reference=spec.sweep.hypervolume_reference, hil=spec.sweep.hil is not None)


def finalize(client, exp_id: str, parent_id: str, spec: SweepSpec, sweep_id: str):
    """Rank the trials, log the front and the best trial per objective to the parent, register the front."""
    rows, ranked, hv = rank_front(client, exp_id, parent_id, spec, sweep_id)
    objs = spec.sweep.objectives
    names = [o.metric for o in objs]
    front = [r for r in rows if r[IS_PARETO]]
    # (rank_front has logged the hypervolume)
    summary: dict[str, float] = {"trials": len(rows), "trials_finished": len(ranked), "pareto_size": len(front)}
    for o in objs:
        cands = [r for r in ranked if r.get(o.metric) is not None]
        if cands:
            best = (max if o.mode == "max" else min)(cands, key=lambda r: r[o.metric])
            summary[f"{BEST_METRIC_PREFIX}{o.metric}"] = float(best[o.metric])
            client.set_tag(parent_id, f"{BEST_TAG_PREFIX}{o.metric}",
                           f"{best['trial']}: {best['name']} ({best['run_id']})")
    log_epoch(summary, 0, parent_id, client)
    write_note(client, parent_id, front_note(rows, exp_id, [(o.metric, o.mode) for o in objs], hv, sweep_id))
    registered = register_front(client, spec, front, names) if spec.sweep.register_models else []
    return rows, hv, registered


def register_front(client, spec: SweepSpec, front: list[dict], names: list[str]) -> list[str]:
    """Each Pareto trial as an MLflow Model (pyfunc over its checkpoint, with a signature) logged to its run
    and registered as a version of ``<name>-pareto``; the version keeps its objectives as tags and its
    trial in the description."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name = f"{spec.base.name}-pareto"
    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name, description="Pareto-optimal DANCE trials of this experiment's sweeps")
        except MlflowException:  # created concurrently
            pass
    out = []
    for r in front:
        if not any(f.path == "checkpoint" for f in client.list_artifacts(r["run_id"])):
            continue
        run = client.get_run(r["run_id"])
        version = _log_served_model(mlflow, client, r["run_id"], name)
        tags = {f"objective.{k}": str(r[k]) for k in names}
        tags.update({TRIAL_ID_TAG: r["trial"], SWEEP_ID_TAG: run.data.tags.get(SWEEP_ID_TAG, "")})
        for k, v in tags.items():
            client.set_model_version_tag(name, version, k, v)
        client.update_model_version(name, version, description=f"trial {r.get('name') or r['trial']} "
                                                               f"({r['label']}), run {r['run_id']}")
        out.append(f"{name}/{version}")
    return out


def _log_served_model(mlflow, client, run_id: str, registered: str) -> str:
    """Log the run's checkpoint as a pyfunc MLflow Model (workers.serving) and register it; its version."""
    with _quiet_mlflow():
        return _log_served_model_quietly(mlflow, client, run_id, registered)


def _log_served_model_quietly(mlflow, client, run_id: str, registered: str) -> str:
    import numpy as np
    from mlflow.models import infer_signature

    from workers.checkpoint import load_checkpoint
    from workers.serving import SegmentationPyfunc, segment  # (MLflow advises on the class as it is defined)

    with tempfile.TemporaryDirectory() as tmp:
        ck = checkpoint_file(client.download_artifacts(run_id, "checkpoint", tmp))
        example = np.zeros((64, 128, 3), np.uint8)
        signature = infer_signature(example, segment(load_checkpoint(ck).model.eval(), example))
        ended = client.get_run(run_id).info
        try:
            with mlflow.start_run(run_id=run_id):  # log_model logs into the active run only
                info = mlflow.pyfunc.log_model(name="model", python_model=SegmentationPyfunc(),
                                               artifacts={"checkpoint": str(ck)}, signature=signature,
                                               pip_requirements=[], registered_model_name=registered)
        finally:  # reopening ended the run again, now: the trial's own end (its duration in the UI) is restored
            client.set_terminated(run_id, ended.status, end_time=ended.end_time)
    return str(info.registered_model_version)


@contextlib.contextmanager
def _quiet_mlflow():
    """MLflow's advice while logging a model (type hints, input examples, CloudPickle, "Registered model ...
    already exists", "View run ...") is not for the sweep's user: kept out of the output, shown if it fails."""
    import io
    import warnings

    said = io.StringIO()
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(said):
            warnings.simplefilter("ignore", UserWarning)
            yield
    except BaseException:
        sys.stderr.write(said.getvalue())
        raise
    finally:
        logger.setLevel(level)
