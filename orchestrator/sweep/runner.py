"""``run_sweep``: validate, score once, tune every trial on Ray, then rank and register in MLflow.

Order of events (data flows one way: config → sweep → trials → MLflow):

1. the sweep file is checked whole before Ray starts (:func:`.space.load_sweep`);
2. the driver scores the dataset (Eq. 1, cached) and fits the CDF once for every trial;
3. Ray is joined or started; the concurrency is planned from the cluster's nodes;
4. the MLflow parent run exists before the first trial (re-found on ``--resume``);
5. ``Tuner(tune.with_resources(run_trial, ...))`` runs the trials — each one a
   ``TorchTrainer`` with ``TuneReportCallback`` — while :class:`.tracking.SweepTracker`
   keeps the child runs and :class:`.live.LiveTable` shows progress;
6. every child gets ``pareto_rank``/``is_pareto``; the parent gets the front (CSV, PNG),
   its hypervolume and the best trial per objective; the front's models are registered.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import UserError
from orchestrator.sweep.space import SweepSpec

log = logging.getLogger("dance.sweep")

PARENT_KIND = "sweep"


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


def find_parent(client, experiment_id: str, sweep_id: str):
    runs = client.search_runs([experiment_id], filter_string=f"tags.`dance.sweep_id` = '{sweep_id}' and "
                                                            f"tags.`dance.kind` = '{PARENT_KIND}'", max_results=2)
    return runs[0] if runs else None


def _parent(client, exp_id: str, spec: SweepSpec, sweep_id: str, sweep_path: str, resume: bool) -> str:
    from orchestrator.tracking import flatten, log_params

    found = find_parent(client, exp_id, sweep_id)
    if resume:
        if found is None:
            raise UserError(f"--resume {sweep_id}: no sweep run with that id in experiment {spec.base.name!r}")
        client.update_run(found.info.run_id, status="RUNNING")
        return found.info.run_id
    if found is not None:
        raise UserError(f"a sweep named {sweep_id!r} exists already in experiment {spec.base.name!r} "
                        f"(run {found.info.run_id}); continue it with --resume {sweep_id}, or pick another sweep.name")
    s = spec.sweep
    tags = {"dance.kind": PARENT_KIND, "dance.sweep_id": sweep_id, "dance.sweep_path": sweep_path,
            "dance.config": str(Path(spec.source).resolve()), "dance.model": f"{spec.base.model.name}/{spec.base.model.variant}",
            "dance.dataset": f"{spec.base.data.kind}:{spec.base.data.root}"}
    run = client.create_run(exp_id, run_name=f"sweep {sweep_id}", tags=tags)
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
    import optuna

    # NSGA-II for several objectives (DESIGN §5); Optuna's default TPE takes one.
    return OptunaSearch(metric=[o.metric for o in objs], mode=[o.mode for o in objs],
                        sampler=optuna.samplers.NSGAIISampler(seed=spec.base.seed))


def _scheduler(spec: SweepSpec):
    sch = spec.sweep.scheduler
    if sch.kind != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # One result per epoch, so iterations are epochs.
    return ASHAScheduler(metric=sch.metric, mode=sch.mode, time_attr="training_iteration",
                         max_t=spec.base.train.epochs, grace_period=sch.grace_period,
                         reduction_factor=sch.reduction_factor)


def _needs(spec: SweepSpec):
    from orchestrator.sweep.resources import needs_of

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

    from orchestrator.progress import progress_bar
    from orchestrator.storage import resolve_storage
    from orchestrator.sweep.live import LiveTable
    from orchestrator.sweep.resources import cluster_nodes, plan_concurrency
    from orchestrator.sweep.space import count_trials, tune_space
    from orchestrator.sweep.tracking import SweepTracker
    from orchestrator.sweep.trial import run_trial
    from orchestrator.tracking import resolve_tracking_uri, setup
    from orchestrator.training import ensure_ray, preflight
    from workers.prepare import worker_config

    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    sweep_id = resume or new_sweep_id(spec)
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
    ensure_ray(address, verbose=verbose)
    timings["ray_start_s"] = time.perf_counter() - t0
    concurrency = plan_concurrency(_needs(spec), cluster_nodes(), spec.sweep.max_concurrent_trials)

    uri = resolve_tracking_uri(tracking_uri, spec.base.tracking.tracking_uri)
    experiment = spec.base.name
    exp_id = setup(uri, experiment)
    client = mlflow.MlflowClient(uri)
    parent_id = _parent(client, exp_id, spec, sweep_id, sweep_path, bool(resume))
    n_trials = count_trials(spec.sweep)
    if print_fn:
        print_fn(f"sweep {sweep_id}: {n_trials} trial(s), {concurrency} at a time, search {spec.sweep.search}, "
                 f"scheduler {spec.sweep.scheduler.kind}; MLflow experiment {experiment!r}, parent run {parent_id}")

    tracker = SweepTracker(tracking_uri=uri, experiment_id=exp_id, parent_run_id=parent_id, sweep_id=sweep_id,
                           spec=spec, storage=storage, prepared_cdf=prepared.get("cdf"))
    measurer = _measurer(spec, sweep_id, client, exp_id, parent_id, bool(resume), print_fn)
    table = LiveTable(lambda c: spec.resolve(c).train.epochs, spec.label, live=live)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, spec=spec, prepared=prepared, storage=storage, sweep_id=sweep_id),
        {"cpu": spec.sweep.trial_cpus})
    # The old reporter at verbose=0 prints nothing; the new one still prints paths on stdout.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune saves its state every >= 10 s by default; a driver killed right after a trial ended
    # would then rerun that trial on --resume. The state of a sweep is small: save it often.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "3")
    t0 = time.perf_counter()
    try:
        if resume:
            tuner = tune.Tuner.restore(sweep_path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                       storage_filesystem=storage.filesystem)
        else:
            tuner = tune.Tuner(
                trainable, param_space=tune_space(spec.sweep),
                tune_config=tune.TuneConfig(num_samples=spec.sweep.num_samples, search_alg=_searcher(spec),
                                            scheduler=_scheduler(spec), max_concurrent_trials=concurrency,
                                            trial_name_creator=lambda t: t.trial_id,
                                            trial_dirname_creator=lambda t: t.trial_id),
                run_config=tune.RunConfig(name=sweep_id, storage_path=storage.path,
                                          storage_filesystem=storage.filesystem,
                                          callbacks=[tracker, table, *_hil_callbacks(spec, sweep_id)],
                                          verbose=0, failure_config=tune.FailureConfig(max_failures=0)))
        results = tuner.fit()
        interrupted = unfinished_trials(results)
    except KeyboardInterrupt:
        interrupted = ["?"]
    except BaseException:
        if measurer is not None:
            measurer.close()
        raise
    finally:
        table.close()
    if interrupted:  # Tune catches Ctrl-C itself, saves its state and returns early
        if measurer is not None:
            measurer.close()  # jobs stay in the journal; --resume picks them up
        mark_interrupted(client, exp_id, parent_id, sweep_id)
        raise SweepInterrupted(f"sweep {sweep_id} interrupted with {len(interrupted)} trial(s) unfinished; "
                               f"continue it with: dance sweep {spec.source} --resume {sweep_id}")
    timings["tune_s"] = time.perf_counter() - t0
    timings["mlflow_s"] = tracker.seconds
    hil_counts: dict[str, int] = {}
    if measurer is not None:
        t0 = time.perf_counter()
        measurer.training_done()
        if print_fn:
            print_fn(f"sweep {sweep_id}: training done; waiting for the boards' measurements "
                     f"(up to {spec.sweep.hil.timeout_s:g} s)")
        try:
            hil_counts = measurer.drain()
        except KeyboardInterrupt:  # Ctrl-C while waiting for the boards: the same as during training
            measurer.mark_pending()
            measurer.close()
            mark_interrupted(client, exp_id, parent_id, sweep_id)
            raise SweepInterrupted(f"sweep {sweep_id} interrupted while the boards measured; continue it with: "
                                   f"dance sweep {spec.source} --resume {sweep_id}") from None
        finally:
            measurer.close()
        timings["hil_wait_s"] = time.perf_counter() - t0
        timings.update({f"hil_{k}": float(v) for k, v in hil_counts.items()})
    t0 = time.perf_counter()
    rows, hv, registered = finalize(client, exp_id, parent_id, spec, sweep_id)
    timings["finalize_s"] = time.perf_counter() - t0
    timings["wall_s"] = time.perf_counter() - t_all
    timings["concurrency"] = float(concurrency)
    from orchestrator.tracking import log_epoch

    log_epoch({f"sweep.{k}": v for k, v in timings.items()}, 0, parent_id, client)
    statuses = {r["status"] for r in rows}
    client.set_terminated(parent_id, "FAILED" if rows and statuses == {"FAILED"} else "FINISHED")
    return SweepOutcome(sweep_id, experiment, uri, parent_id, rows, hv, timings, registered, hil_counts)


def _hil_callbacks(spec: SweepSpec, sweep_id: str) -> list:
    if spec.sweep.hil is None:
        return []
    from orchestrator.hil.measurer import HilCallback

    return [HilCallback(sweep_id)]


def _measurer(spec: SweepSpec, sweep_id: str, client, exp_id: str, parent_id: str, resume: bool, print_fn):
    """The hardware-in-the-loop measurer (None without ``sweep.hil``); on resume it re-queues the
    trials whose measurement never finished."""
    if spec.sweep.hil is None:
        return None
    from orchestrator.hil.measurer import HilMeasurer

    m = HilMeasurer(spec, sweep_id=sweep_id, tracking_uri=client.tracking_uri, experiment_id=exp_id,
                    on_measured=lambda: rank_front(client, exp_id, parent_id, spec, sweep_id))
    if print_fn:
        hil = spec.sweep.hil
        print_fn(f"sweep {sweep_id}: boards {', '.join(b.name for b in m.inventory.boards)} measure "
                 f"{hil.mode if hil.mode != 'pareto_top' else f'the first {hil.top_ranks} Pareto front(s)'}"
                 f"{' after training' if hil.wait else ' while the sweep trains'}; "
                 f"device.* figures are those of {m.primary}")
    if resume:
        n = m.catch_up()
        if n and print_fn:
            print_fn(f"sweep {sweep_id}: {n} ended trial(s) still to measure (the cache answers what was measured)")
    return m


class SweepInterrupted(UserError):
    """Stopped before every trial ended; ``--resume`` continues it."""


def unfinished_trials(results) -> list[str]:
    """Ids of trials Tune left pending or running (it returns early on SIGINT)."""
    analysis = getattr(results, "_experiment_analysis", None)
    trials = getattr(analysis, "trials", None) or []
    return [t.trial_id for t in trials if t.status not in ("TERMINATED", "ERROR")]


def mark_interrupted(client, exp_id: str, parent_id: str, sweep_id: str) -> None:
    """Unfinished child runs end KILLED (reopened as RUNNING on resume); the parent says why."""
    from orchestrator.sweep.tracking import sweep_children

    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    for run in sweep_children(client, exp_id, sweep_id):
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, "dance.stop_reason", f"sweep interrupted at {stamp}; resumable")
            client.set_terminated(run.info.run_id, "KILLED")
    client.set_tag(parent_id, "dance.interrupted", stamp)
    client.set_terminated(parent_id, "KILLED")


# ---------------------------------------------------------------- after the trials
def rank_front(client, exp_id: str, parent_id: str, spec: SweepSpec, sweep_id: str):
    """Rank the ended trials on the objectives and log the front (CSV, PNG) to the parent.

    Called when the sweep ends and again whenever a board measurement lands. A trial lacking
    an objective (stopped early, failed, not measured) is ranked after every complete one and
    its missing figure stays empty: never 0. Returns (rows, ranked, hypervolume).
    """
    from orchestrator.hil.measurer import STATE_TAG
    from orchestrator.sweep.pareto import default_reference, normalized_hypervolume, pareto_ranks, plot_front, write_csv
    from orchestrator.sweep.tracking import TRIAL_ID_TAG, sweep_children
    from orchestrator.tracking import log_artifacts, log_epoch

    objs = spec.sweep.objectives
    names, modes = [o.metric for o in objs], [o.mode for o in objs]
    hil = spec.sweep.hil is not None
    predicted = [f"predicted.{k}" for k in names if k.startswith("device.")] if hil else []
    rows = []
    for run in sweep_children(client, exp_id, sweep_id):
        m = run.data.metrics
        row = {"run_id": run.info.run_id, "trial": run.data.tags.get(TRIAL_ID_TAG, "?"), "status": run.info.status,
               "label": run.data.tags.get("dance.components", ""), "epochs": int(m["epoch"]) + 1 if "epoch" in m else 0}
        row.update({k: m.get(k) for k in names})
        if "miou" not in row:
            row["miou"] = m.get("miou")
        if hil:
            row["hil"] = run.data.tags.get(STATE_TAG, "not measured")
            row.update({k: m.get(k) for k in predicted})
        rows.append(row)
    rows.sort(key=lambda r: r["trial"])
    ranked = [r for r in rows if r["status"] == "FINISHED" and all(r.get(k) is not None for k in names)]
    hv = None
    if ranked:
        values = np.array([[r[k] for k in names] for r in ranked], dtype=np.float64)
        ranks = pareto_ranks(values, modes)
        for r, k in zip(ranked, ranks):
            r["pareto_rank"], r["is_pareto"] = int(k), int(k == 1)
        ref = (np.asarray(spec.sweep.hypervolume_reference, dtype=np.float64) if spec.sweep.hypervolume_reference
               else default_reference(values, modes))
        hv = normalized_hypervolume(values[ranks == 1], modes, ref)
    worst = max((r["pareto_rank"] for r in ranked), default=0)
    for r in rows:
        if "pareto_rank" not in r:  # stopped early, failed, or missing an objective: after every complete trial
            r["pareto_rank"], r["is_pareto"] = worst + 1, 0
        log_epoch({"pareto_rank": r["pareto_rank"], "is_pareto": r["is_pareto"]}, 0, r["run_id"], client)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        cols = ["trial", "run_id", "status", "label", "epochs", *names, *(["hil"] if hil else []), *predicted,
                "pareto_rank", "is_pareto"]
        files = [write_csv(tmp_p / "pareto.csv", sorted(rows, key=lambda r: (r["pareto_rank"], r["trial"])), cols)]
        if len(names) >= 2 and ranked:
            files.append(plot_front(tmp_p / "pareto.png", ranked, *_plot_axes(names), title=f"sweep {sweep_id}",
                                    label_key="trial"))
        log_artifacts(files, parent_id, client=client)
    if hv is not None:
        log_epoch({"hypervolume": hv, "trials_ranked": len(ranked)}, 0, parent_id, client)
    return rows, ranked, hv


def _plot_axes(names: list[str]) -> tuple[str, str]:
    """(x, y) of the front's plot: accuracy against measured energy, else training FLOPs, else the first two."""
    for x in ("device.energy_j_per_image", "train_flops"):
        if {x, "miou"} <= set(names):
            return x, "miou"
    return names[1], names[0]


def finalize(client, exp_id: str, parent_id: str, spec: SweepSpec, sweep_id: str):
    """Rank the trials, log the front and the best trial per objective to the parent, register the front."""
    from orchestrator.tracking import log_epoch

    rows, ranked, hv = rank_front(client, exp_id, parent_id, spec, sweep_id)
    objs = spec.sweep.objectives
    names = [o.metric for o in objs]
    front = [r for r in rows if r["is_pareto"]]
    # (rank_front has logged the hypervolume)
    summary: dict[str, float] = {"trials": len(rows), "trials_finished": len(ranked), "pareto_size": len(front)}
    for o in objs:
        cands = [r for r in ranked if r.get(o.metric) is not None]
        if cands:
            best = (max if o.mode == "max" else min)(cands, key=lambda r: r[o.metric])
            summary[f"best.{o.metric}"] = float(best[o.metric])
            client.set_tag(parent_id, f"dance.best.{o.metric}", f"{best['trial']} ({best['run_id']})")
    log_epoch(summary, 0, parent_id, client)
    registered = register_front(client, spec, front, names) if spec.sweep.register_models else []
    return rows, hv, registered


def register_front(client, spec: SweepSpec, front: list[dict], names: list[str]) -> list[str]:
    """Each Pareto trial's checkpoint as a version of the registered model ``<experiment>-pareto``."""
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
        run = client.get_run(r["run_id"])
        if not any(f.path == "checkpoint" for f in client.list_artifacts(r["run_id"])):
            continue
        tags = {f"objective.{k}": str(r[k]) for k in names}
        tags.update({"dance.trial_id": r["trial"], "dance.sweep_id": run.data.tags.get("dance.sweep_id", "")})
        mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/checkpoint", run_id=r["run_id"],
                                         tags=tags, description=f"trial {r['trial']} ({r['label']})")
        out.append(f"{name}/{mv.version}")
    return out
