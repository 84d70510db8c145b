"""The driver-side queue of a hardware-in-the-loop sweep.

The sweep tells :meth:`HilMeasurer.trial_ended` when a trial's run is closed in MLflow (its
tracking writer calls it after the trial's artifacts and status landed); that only enqueues
the id, so the sweep's event loop (and every other trial's training) never waits for a board. One
*decider* thread takes ended trials in order, logs the cost model's prediction and decides
(:mod:`.select`); selected trials go to a thread per board, each running the same code as
``dance bench RUN_ID`` (export per bucket → board pool → expected J/image → the trial's
run) against one board pool shared by the whole sweep. When a measurement lands, the
sweep's Pareto front is ranked again.

A trial's state is the tag ``dance.hil`` on its run: ``queued``, ``measuring``,
``measured``, ``failed`` (``dance.hil.error`` says why), ``skipped`` (``dance.hil.reason``)
or ``pending`` (the sweep stopped waiting; ``--resume`` measures it, from the cache where
the boards already answered).

The sweep sees this module through :func:`start_measurer` (the factory) and the measurer's
:meth:`HilMeasurer.trial_ended`; nothing else of it.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from orchestrator.boards.bench import TORCH_LOCK, run_bench
from orchestrator.boards.cache import MeasurementCache, board_facts
from orchestrator.boards.inventory import BoardGroup, board_address, select_boards
from orchestrator.boards.pool import BoardPool, LocalPoolClient
from orchestrator.checkpoints import resolve_target
from orchestrator.hil.costmodel import CostModel, group_of, samples_from_cache
from orchestrator.hil.select import decide
from orchestrator.runs.schema import (
    DEVICE_FIGURES,
    DEVICE_OBJECTIVES,
    DEVICE_PREFIX,
    HIL_ERROR_TAG,
    HIL_NOTES_TAG,
    HIL_PREDICT_ERROR_TAG,
    HIL_REASON_TAG,
    HIL_STATE_TAG,
    INTERRUPTED_TAG,
    PREDICTED_ERROR_PREFIX,
    PREDICTED_PREFIX,
    STOP_REASON_TAG,
    TRIAL_ID_TAG,
    plain_metrics,
    set_tag,
)
from orchestrator.runs.tracking import experiment_of, log_epoch, sweep_children
from workers.features import model_features, trial_plan

# Imported by the sweep's run path only (it loads ray.tune); mlflow and the torch-loading feature
# extraction stay inside the functions that use them.

log = logging.getLogger("dance.hil")

#: the measurer of each sweep running in this process (callbacks are pickled with the sweep
#: and restored on --resume; they find the live measurer here by sweep id)
MEASURERS: dict[str, "HilMeasurer"] = {}


class HilMeasurer:
    """Decides, measures and logs; see the module docstring."""

    def __init__(self, spec, *, sweep_id: str, tracking_uri: str, experiment_id: str,
                 on_measured: Callable[[], None] | None = None,
                 on_state: Callable[[str, str], None] | None = None) -> None:
        import mlflow

        self.spec, self.hil = spec, spec.sweep.hil
        self.sweep_id, self.uri, self.exp_id = sweep_id, tracking_uri, experiment_id
        self.client = mlflow.MlflowClient(tracking_uri)
        self.on_measured = on_measured
        self.on_state = on_state  # (trial id, state): the sweep's progress shows the boards' work
        self.states: dict[str, str] = {}
        self.inventory, self.kinds, self.primary = select_boards(self.hil.boards, self.hil.labels, self.hil.primary)
        journal = self.hil.journal or Path(".dance/hil") / f"{sweep_id}.journal.sqlite"
        self.pool = LocalPoolClient(BoardPool(self.inventory, journal))
        self.model = CostModel.fitted(samples_from_cache(self.hil.cache), self.hil.min_points)
        self.jobs_run = 0
        self.counts = {"selected": 0, "skipped": 0, "measured": 0, "failed": 0, "predicted": 0}
        self._scoring: dict[str, float] = {}
        self._lock = threading.Lock()
        self._rank_lock = threading.Lock()
        self._events: queue.Queue = queue.Queue()
        self._go = threading.Event()
        self._closed = threading.Event()
        if not self.hil.wait:
            self._go.set()
        self._futures: list[Future] = []
        self._exec = ThreadPoolExecutor(max_workers=max(1, len(self.inventory.boards)), thread_name_prefix="hil")
        self._decider = threading.Thread(target=self._decide_loop, name="hil-decider", daemon=True)
        self._decider.start()
        MEASURERS[sweep_id] = self

    # ------------------------------------------------------------------ from the sweep
    def _state(self, rid: str, tid: str, state: str) -> None:
        """A trial's measuring state: its run's tag, and the sweep's progress display."""
        self.client.set_tag(rid, HIL_STATE_TAG, state)
        self.states[tid] = state
        if self.on_state is not None:
            self.on_state(tid, state)

    def trial_ended(self, trial_id: str) -> None:
        self._events.put(trial_id)

    def catch_up(self) -> int:
        """On --resume: enqueue ended trials whose measurement never finished (the cache and the
        journal answer what the boards had already measured)."""
        n = 0
        for run in sweep_children(self.client, self.exp_id, self.sweep_id):
            state = run.data.tags.get(HIL_STATE_TAG)
            # runs of sweeps interrupted before the tag existed say so only in their stop reason
            interrupted = (INTERRUPTED_TAG in run.data.tags
                           or run.data.tags.get(STOP_REASON_TAG, "").startswith("sweep interrupted"))
            if run.info.status in ("FINISHED", "KILLED") and not interrupted and state not in ("measured", "skipped"):
                self.trial_ended(run.data.tags[TRIAL_ID_TAG])
                n += 1
        return n

    def training_done(self) -> None:
        """Every trial has trained: ``wait: true`` measurements may start."""
        self._go.set()

    def drain(self, timeout_s: float | None = None) -> dict[str, int]:
        """Wait (up to ``timeout_s``) for every decision and measurement; what is left stays ``pending``."""
        self._go.set()
        end = time.monotonic() + (self.hil.timeout_s if timeout_s is None else timeout_s)
        self._events.put(None)
        self._decider.join(max(0.0, end - time.monotonic()))
        while True:
            with self._lock:
                todo = [f for f in self._futures if not f.done()]
            if not todo or time.monotonic() >= end:
                break
            time.sleep(0.2)
        if todo or self._decider.is_alive():
            self.mark_pending()
        return dict(self.counts, jobs_run=self.jobs_run, pending=len(todo))

    def close(self) -> None:
        """Stop now: queued decisions are dropped and running measurements leave their trials as they
        are (``pending`` after :meth:`drain`); the journal keeps the boards' jobs for ``--resume``."""
        self._closed.set()
        MEASURERS.pop(self.sweep_id, None)
        self._go.set()
        self._events.put(None)
        self._exec.shutdown(wait=False, cancel_futures=True)
        self.pool.close()

    # ------------------------------------------------------------------ deciding
    def _decide_loop(self) -> None:
        self._go.wait()
        while True:
            tid = self._events.get()
            if tid is None or self._closed.is_set():
                return
            try:
                self._decide(tid)
            except Exception as exc:  # one trial's trouble must not stop the others' measurements
                log.warning("hil: trial %s: %s: %s", tid, exc.__class__.__name__, exc)

    def _ended_rows(self) -> list[dict[str, Any]]:
        rows = []
        for run in sweep_children(self.client, self.exp_id, self.sweep_id):
            if run.info.status not in ("FINISHED", "KILLED"):
                continue
            m = plain_metrics(run.data.metrics)  # the worker's names, from grouped or plain MLflow names
            rows.append({"trial": run.data.tags.get(TRIAL_ID_TAG), "run_id": run.info.run_id,
                         "status": run.info.status, "epochs": int(m["epoch"]) + 1 if "epoch" in m else 0,
                         "max_epochs": int(run.data.params.get("train.epochs", self.spec.base.train.epochs)),
                         "metrics": m, "tags": run.data.tags})
        return rows

    def _decide(self, tid: str) -> None:
        rows = self._ended_rows()
        row = next((r for r in rows if r["trial"] == tid), None)
        if row is None:
            return  # failed trials end without a checkpoint: nothing to measure
        rid = row["run_id"]
        row["has_checkpoint"] = any(a.path == "checkpoint" for a in self.client.list_artifacts(rid))
        predicted = {}
        if row["has_checkpoint"] and not any(k.startswith(PREDICTED_PREFIX + DEVICE_PREFIX) for k in row["metrics"]):
            try:
                predicted = self._predict(rid)
            except Exception as exc:  # no prediction is no reason not to measure
                log.warning("hil: trial %s: no prediction: %s: %s", tid, exc.__class__.__name__, exc)
                set_tag(self.client, rid, HIL_PREDICT_ERROR_TAG, f"{exc.__class__.__name__}: {exc}")
        row["metrics"].update(predicted)
        objs = [(o.metric, o.mode) for o in self.spec.sweep.objectives]
        need = [m for m, _ in objs if m.startswith(DEVICE_PREFIX)] or [DEVICE_PREFIX + "energy_j_per_image"]
        ready = all(PREDICTED_PREFIX + m in row["metrics"] for m in need)
        sch = self.spec.sweep.scheduler
        ok, why = decide(self.hil, row, rows, objs, epochs=row["max_epochs"],
                         grace=sch.grace_period if sch.kind == "asha" else None, model_ready=ready,
                         unready=self._unready(row["metrics"], need))
        if self._closed.is_set():
            return
        self.client.set_tag(rid, HIL_REASON_TAG, why)
        if not ok:
            self._state(rid, tid, "skipped")
            self._count("skipped")
            log.info("hil: trial %s not measured (%s)", tid, why)
            return
        self._state(rid, tid, "queued")
        self._count("selected")
        fut = self._exec.submit(self._measure_safely, tid, rid, row["metrics"])
        with self._lock:
            self._futures.append(fut)

    # ------------------------------------------------------------------ predicting
    @staticmethod
    def _unready(metrics: dict[str, float], need: list[str]) -> str:
        """What a missing prediction lacks: only the Eq. 1 scoring cost (the network part is predicted, but
        scoring is learnt from a first measured CAD trial), or the cost model itself."""
        network = PREDICTED_PREFIX + DEVICE_PREFIX + "network_energy_j_per_image"
        scoring_only = network in metrics and all(
            PREDICTED_PREFIX + m in metrics or m == DEVICE_PREFIX + "energy_j_per_image" for m in need)
        if scoring_only:
            return "the Eq. 1 scoring cost on these boards is not known yet (it is, once a CAD trial is measured)"
        return "cost model not trained yet for these boards"

    def _group(self, kind: BoardGroup, mode: str) -> tuple[str, ...] | None:
        cache = MeasurementCache(self.hil.cache)
        try:
            probe = cache.facts(board_address(kind.first))
        finally:
            cache.close()
        if probe is None:
            return None
        runtime = kind.first.runtime if mode == "inference" else "torchscript"
        f = board_facts(probe, runtime)
        return group_of({**f, "runtime": runtime, "device": kind.first.device,
                         "runtime_args": " ".join(self.inventory.measure.extra_args),
                         "mode": "inference" if mode == "inference" else f"train{self.hil.train_steps}"})

    def _predict(self, rid: str) -> dict[str, float]:
        """The cost model's figures for the trial in run ``rid``, logged as ``predicted.device.*``."""
        if not self.model.fits:
            return {}
        ckpt, _ = resolve_target(rid, self.uri)
        with TORCH_LOCK:
            out = self._predicted(ckpt)
        if out:
            log_epoch(out, 0, rid, self.client)
            self._count("predicted")
        return out

    def _predicted(self, ckpt) -> dict[str, float]:
        model, plan, config = trial_plan(ckpt, self.hil.buckets)
        infer = [(frac, model_features(model, h, w)) for h, w, frac in plan]
        train = [(frac, model_features(model, h, w, "train")) for h, w, frac in plan] if self.hil.train_steps else []
        out: dict[str, float] = {}
        cad = bool((config.get("slimming") or {}).get("cad"))
        for kind in self.kinds:
            p = f"{PREDICTED_PREFIX}{DEVICE_PREFIX}{kind.name}."
            gi = self._group(kind, "inference")
            if gi is not None:
                e = [self.model.predict(gi, "energy_j_per_image", f) for _, f in infer]
                lat = [self.model.predict(gi, "latency_ms_p50", f) for _, f in infer]
                if all(v is not None for v in e):
                    net = sum(fr * v for (fr, _), v in zip(infer, e))
                    out[p + "network_energy_j_per_image"] = net
                    score = self._scoring.get(kind.name, None if cad else 0.0)
                    if score is not None:  # Eq. 1 scoring is the same for every trial: learnt once measured
                        out[p + "energy_j_per_image"] = net + score
                if all(v is not None for v in lat):  # mixture median ≈ share-weighted bucket medians
                    out[p + "latency_ms_p50"] = sum(fr * v for (fr, _), v in zip(infer, lat))
            if self.hil.train_steps:
                gt = self._group(kind, "train")
                if gt is not None:
                    t = [(fr, self.model.predict(gt, "train_energy_j_per_step", f)) for fr, f in train]
                    if all(v is not None for _, v in t):
                        out[p + "train_energy_j_per_step"] = sum(fr * v for fr, v in t)
        return {**out, **self._unqualified(out, PREDICTED_PREFIX + DEVICE_PREFIX)}

    def _unqualified(self, metrics: dict[str, float], prefix: str) -> dict[str, float]:
        """The primary kind's figures under the names objectives use: ``<prefix><kind>.x`` → ``<prefix>x``."""
        own = f"{prefix}{self.primary}."
        return {prefix + name: metrics[own + name] for name in DEVICE_FIGURES if own + name in metrics}

    # ------------------------------------------------------------------ measuring
    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def _measure_safely(self, tid: str, rid: str, known: dict[str, float]) -> None:
        """:meth:`_measure`; anything it raises ends the trial ``failed`` with the reason (a Future
        would swallow it and leave the trial ``measuring``)."""
        try:
            self._measure(tid, rid, known)
        except Exception as exc:
            if self._closed.is_set():
                return  # stopped mid-measurement: the trial stays pending; --resume measures it
            log.warning("hil: trial %s: %s: %s", tid, exc.__class__.__name__, exc)
            try:
                self._state(rid, tid, "failed")
                set_tag(self.client, rid, HIL_ERROR_TAG, f"{exc.__class__.__name__}: {exc}")
            finally:
                self._count("failed")

    def _measure(self, tid: str, rid: str, known: dict[str, float]) -> None:
        if self._closed.is_set():
            return
        self._state(rid, tid, "measuring")
        # a failure here (export, boards, MLflow) ends the trial `failed` in _measure_safely
        res = run_bench(rid, self.inventory, labels=self.hil.labels, buckets=self.hil.buckets,
                        train_steps=self.hil.train_steps, tracking_uri=self.uri,
                        experiment=experiment_of(self.spec.base),
                        cache_path=self.hil.cache, pool=self.pool, log=lambda s, t=tid: log.info("hil %s:%s", t, s))
        extra = self._unqualified(res.metrics, DEVICE_PREFIX)
        for kind in self.kinds:
            s = res.metrics.get(f"{DEVICE_PREFIX}{kind.name}.scoring_energy_j_per_image")
            if s is not None:
                self._scoring.setdefault(kind.name, s)
        measured = {**res.metrics, **extra}
        for key, pred in known.items():  # the prediction beside the measurement, with its error
            if key.startswith(PREDICTED_PREFIX):
                real = measured.get(key[len(PREDICTED_PREFIX):])
                if real:
                    extra[PREDICTED_ERROR_PREFIX + key[len(PREDICTED_PREFIX):]] = 100.0 * (pred - real) / real
        if extra:
            log_epoch(extra, 0, rid, self.client)
        with self._lock:
            self.jobs_run += res.jobs_run
        if res.notes:
            set_tag(self.client, rid, HIL_NOTES_TAG, "\n".join(res.notes))
        # measured = every figure the objectives name (or, without device objectives, the latency);
        # a partial measurement is `failed`, so --resume tries again (the cache answers what worked)
        need = ([o.metric for o in self.spec.sweep.objectives if o.metric in DEVICE_OBJECTIVES]
                or [DEVICE_PREFIX + "latency_ms_p50"])
        missing = [m for m in need if m not in measured]
        ok = not missing
        self._state(rid, tid, "measured" if ok else "failed")
        if not ok:
            set_tag(self.client, rid, HIL_ERROR_TAG, f"not measured: {', '.join(missing)}; " + "; ".join(res.notes))
        self._count("measured" if ok else "failed")
        log.info("hil: trial %s measured (%d board job(s), %d from the cache)", tid, res.jobs_run,
                 sum(m.cached for m in res.measurements))
        self.model = CostModel.fitted(samples_from_cache(self.hil.cache), self.hil.min_points)
        if self.on_measured is not None:
            with self._rank_lock:
                try:
                    self.on_measured()
                except Exception as exc:
                    log.warning("hil: re-ranking after trial %s failed: %s", tid, exc)

    def mark_pending(self) -> None:
        """Trials still queued or being measured become ``pending`` (``--resume`` measures them)."""
        for run in sweep_children(self.client, self.exp_id, self.sweep_id):
            if run.data.tags.get(HIL_STATE_TAG) in ("queued", "measuring"):
                self._state(run.info.run_id, run.data.tags.get(TRIAL_ID_TAG, "?"), "pending")


def start_measurer(spec, *, sweep_id: str, tracking_uri: str, experiment_id: str, resume: bool,
                   on_measured: Callable[[], None] | None = None,
                   on_state: Callable[[str, str], None] | None = None,
                   print_fn: Callable[[str], None] | None = None) -> HilMeasurer | None:
    """The hardware-in-the-loop measurer of a sweep (None without ``sweep.hil``).

    On ``resume`` it re-queues the ended trials whose measurement never finished.
    """
    if spec.sweep.hil is None:
        return None
    m = HilMeasurer(spec, sweep_id=sweep_id, tracking_uri=tracking_uri, experiment_id=experiment_id,
                    on_measured=on_measured, on_state=on_state)
    hil = spec.sweep.hil
    if print_fn:
        print_fn(f"sweep {sweep_id}: boards {', '.join(b.name for b in m.inventory.boards)} measure "
                 f"{hil.mode if hil.mode != 'pareto_top' else f'the first {hil.top_ranks} Pareto front(s)'}"
                 f"{' after training' if hil.wait else ' while the sweep trains'}; "
                 f"device.* figures are those of {m.primary}")
    if resume:
        n = m.catch_up()
        if n and print_fn:
            print_fn(f"sweep {sweep_id}: {n} ended trial(s) still to measure (the cache answers what was measured)")
    return m
