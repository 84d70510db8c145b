"""The board pool: owns the boards and a journalled job queue (DESIGN §6).

* one job per board at a time (one worker thread per board; the agent also holds a lock
  file on the board, so two pools sharing a board still never overlap two windows);
* jobs go to boards carrying all their labels (or the one they pin);
* a transient failure (unreachable, timeout, agent crash, corrupted upload, thermal) is
  retried, on another matching board when one is free of failures for that job, else on
  the same one, up to ``max_attempts``; auth and host-key failures take the board offline
  at once; ``offline_after`` transient failures in a row take it offline; its queued work
  stays queued for the others, and a job no online board can take fails with the reason;
* queue and results live in a SQLite :class:`~.journal.Journal`: a restarted pool finishes
  what was queued or running and never repeats a finished job.

Python API (also what a Ray Tune sweep uses, issue 11)::

    from orchestrator.boards.pool import BoardPool, start_pool_actor
    from orchestrator.boards.agentjob import Job

    pool = BoardPool(inventory, ".dance/board-journal.sqlite")        # in this process
    client = start_pool_actor(inventory, ".dance/board-journal.sqlite",  # or as a Ray actor
                              name="dance-board-pool")
    ids = client.submit([Job(model="m.onnx", labels=["tx2"])])
    refs = client.futures(ids)            # ObjectRefs → outcome dicts (ray.get / ray.wait)
    outcome = client.wait(ids[0])         # {"id", "state": "done"|"failed", "board", "result", "error", ...}
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from orchestrator.boards.agentjob import Job, run_job
from orchestrator.boards.errors import BoardError
from orchestrator.boards.inventory import Board, Inventory
from orchestrator.boards.journal import FINAL, Journal
from orchestrator.boards.transport import Transport, make_transport

BOARD_FATAL = ("auth", "host_key")                  # the board is unusable until someone fixes it
BOARD_INCAPABLE = ("missing_runtime", "no_power_source")  # this board cannot do this job; others may


class BoardPool:
    """Boards, queue and journal; thread-safe. See the module docstring."""

    def __init__(self, inventory: Inventory, journal: str | Path, *, max_attempts: int = 3, offline_after: int = 3,
                 cache_dir: str | Path | None = None, start: bool = True,
                 transport_factory: Callable[[Board, Path], Transport] | None = None):
        self.inventory = inventory
        self.journal = Journal(Path(journal).resolve())
        self.max_attempts = max_attempts
        self.offline_after = offline_after
        self.cache_dir = Path(cache_dir or Path(journal).resolve().parent / "agent-cache")
        self._factory = transport_factory or make_transport
        self._cv = threading.Condition()
        self._stop = False
        self._events: list[dict[str, Any]] = []
        self._excluded: dict[str, set[str]] = {}
        self._state = {b.name: {"online": True, "busy": None, "fail_streak": 0, "reason": None, "jobs_done": 0,
                                "connects": 0} for b in inventory.boards}
        self.recovered = self.journal.recover()
        self._threads = [threading.Thread(target=self._worker, args=(b,), name=f"board-{b.name}", daemon=True)
                         for b in inventory.boards]
        self._fail_unplaceable()
        if start:
            for t in self._threads:
                t.start()

    # -- public API ------------------------------------------------------------------------------------------
    @property
    def journal_path(self) -> str:
        return str(self.journal.path)

    def journal_file(self) -> str:
        """The journal's path (a method, so a Ray actor handle can ask for it)."""
        return self.journal_path

    def submit(self, job: Job | dict) -> str:
        """Queue a job (same key as a journalled job: that job's id, not a second run). Returns the job id."""
        job = job if isinstance(job, Job) else Job.from_dict(job)
        row, created = self.journal.add(job.key, job.to_dict())
        if created:
            self._emit(job.key, None, "queued", "")
        self._fail_unplaceable()
        with self._cv:
            self._cv.notify_all()
        return row["id"]

    def submit_many(self, jobs: Iterable[Job | dict]) -> list[str]:
        return [self.submit(j) for j in jobs]

    def outcome(self, job_id: str) -> dict[str, Any]:
        row = self.journal.get(job_id)
        if row is None:
            raise KeyError(f"no job {job_id} in {self.journal.path}")
        return {"id": row["id"], "state": row["state"], "board": row["board"], "attempts": row["attempts"],
                "result": row["result"], "error": row["error"], "history": row["history"],
                "meta": (row["spec"] or {}).get("meta", {}), "job": row["spec"]}

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job is done or failed; returns its outcome (TimeoutError past ``timeout``)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            out = self.outcome(job_id)
            if out["state"] in FINAL:
                return out
            if end is not None and time.monotonic() > end:
                raise TimeoutError(f"job {job_id} still {out['state']} after {timeout} s")
            with self._cv:
                self._cv.wait(0.2)

    def wait_all(self, ids: Iterable[str], timeout: float | None = None) -> list[dict[str, Any]]:
        end = None if timeout is None else time.monotonic() + timeout
        return [self.wait(i, None if end is None else max(0.0, end - time.monotonic())) for i in ids]

    def finished(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Outcomes of those of ``ids`` that are done or failed (does not wait)."""
        out = {}
        for i in ids:
            o = self.outcome(i)
            if o["state"] in FINAL:
                out[i] = o
        return out

    def events(self, cursor: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Progress events after ``cursor`` (queued, start, done, retry, failed, offline) and the new cursor."""
        with self._cv:
            return list(self._events[cursor:]), len(self._events)

    def boards(self) -> dict[str, dict[str, Any]]:
        with self._cv:
            return {k: dict(v) for k, v in self._state.items()}

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=5)
        self.journal.close()

    # -- scheduling ------------------------------------------------------------------------------------------
    def _emit(self, job_id: str | None, board: str | None, event: str, message: str, **extra: Any) -> None:
        with self._cv:
            self._events.append({"job": job_id, "board": board, "event": event, "message": message,
                                 "time": time.time(), **extra})
            self._cv.notify_all()

    @staticmethod
    def _matches(board: Board, spec: dict[str, Any]) -> bool:
        if spec.get("board") and spec["board"] != board.name:
            return False
        return set(spec.get("labels") or []) <= board.label_set

    def _candidates(self, job_id: str, spec: dict[str, Any]) -> list[Board]:
        """Online boards that may take this job."""
        excluded = self._excluded.get(job_id, set())
        return [b for b in self.inventory.boards if self._state[b.name]["online"] and b.name not in excluded
                and self._matches(b, spec)]

    def _pick(self, board: Board) -> dict[str, Any] | None:
        for row in self.journal.queued():
            spec = row["spec"]
            cands = self._candidates(row["id"], spec)
            if board not in cands:
                continue
            failed_on = set(row["failed_on"] or [])
            if board.name in failed_on:
                # prefer a board this job has not failed on, if one is free now
                others = [b for b in cands if b.name not in failed_on and self._state[b.name]["busy"] is None]
                if others:
                    continue
            return row
        return None

    def _fail_unplaceable(self) -> None:
        """Jobs no online board can take fail now, with the reason (instead of waiting forever)."""
        for row in self.journal.queued():
            if not self._candidates(row["id"], row["spec"]):
                spec = row["spec"]
                offline = {n: s["reason"] for n, s in self._state.items() if not s["online"]}
                err = row["error"] or {}
                pinned = spec.get("board")
                where = f"board {pinned}" if pinned else f"labels {spec.get('labels') or []}"
                if err.get("message"):
                    msg = err["message"] + (f" (the job is for {where} only)" if pinned
                                            else f" (and no other online board with {where} can take it)")
                else:
                    msg = f"no online board matches {where}" + (f" (offline: {offline})" if offline else "")
                error = {"kind": err.get("kind", "board"), "board": err.get("board"), "message": msg,
                         "transient": False}
                self.journal.fail(row["id"], None, error)
                self._emit(row["id"], None, "failed", msg)

    def _offline(self, board: Board, reason: str) -> None:
        with self._cv:
            self._state[board.name]["online"] = False
            self._state[board.name]["reason"] = reason
        self._emit(None, board.name, "offline", reason)
        self._fail_unplaceable()

    def _worker(self, board: Board) -> None:
        transport = self._factory(board, self.inventory.known_hosts_path())
        try:
            while True:
                with self._cv:
                    if self._stop or not self._state[board.name]["online"]:
                        return
                row = self._pick(board)
                if row is None or not self.journal.start(row["id"], board.name):
                    with self._cv:
                        if not self._stop:
                            self._cv.wait(0.5)
                    continue
                with self._cv:
                    self._state[board.name]["busy"] = row["id"]
                try:
                    self._run_one(board, transport, row)
                except Exception:
                    if self._stop:  # closed mid-job: the journal is shut; the job stays `running` and
                        return      # the next pool on this journal puts it back in the queue
                    raise
                with self._cv:
                    self._state[board.name]["busy"] = None
                    self._state[board.name]["connects"] = getattr(transport, "connects", 0)
                    self._cv.notify_all()
        finally:
            transport.close()

    def _run_one(self, board: Board, transport: Transport, row: dict[str, Any]) -> None:
        job_id, spec = row["id"], row["spec"]
        job = Job.from_dict(spec)
        self._emit(job_id, board.name, "start", "", attempt=row["attempts"] + 1, meta=job.meta)
        t0 = time.monotonic()
        try:
            result = run_job(transport, job, job_id, self.inventory.measure, self.cache_dir)
        except BoardError as exc:
            self._failure(board, transport, row, exc, time.monotonic() - t0)
            return
        except Exception as exc:  # a bug here must not kill the board's thread or lose the job
            self._failure(board, transport, row, BoardError("board", board.name, f"{exc.__class__.__name__}: {exc}"),
                          time.monotonic() - t0)
            return
        self.journal.finish(job_id, board.name, result)
        with self._cv:
            st = self._state[board.name]
            st["fail_streak"] = 0
            st["jobs_done"] += 1
        self._emit(job_id, board.name, "done", "", seconds=time.monotonic() - t0, meta=job.meta)

    def _failure(self, board: Board, transport: Transport, row: dict[str, Any], exc: BoardError,
                 seconds: float) -> None:
        job_id = row["id"]
        err = exc.to_dict()
        if exc.kind == "unreachable":
            transport.close()
        if exc.kind in BOARD_FATAL:
            self.journal.retry(job_id, board.name, err, count_attempt=False)
            self._emit(job_id, board.name, "retry", exc.message, kind=exc.kind, seconds=seconds)
            self._offline(board, f"{exc.kind}: {exc.message}")
            return
        if exc.kind in BOARD_INCAPABLE:
            self._excluded.setdefault(job_id, set()).add(board.name)
            self.journal.retry(job_id, board.name, err)
            self._emit(job_id, board.name, "retry", exc.message, kind=exc.kind, seconds=seconds)
            self._fail_unplaceable()
            return
        # An unreachable board is the board's fault, not the job's: it must not use up the attempts of
        # the job it held while a twin has not tried it (the twin would never see it). Once every
        # board that may take the job has lost it, the attempts count (a job that brings boards down).
        tried_all = exc.kind != "unreachable" or {b.name for b in self._candidates(job_id, row["spec"])} <= (
            set(row["failed_on"] or []) | {board.name})
        if not tried_all:
            self.journal.retry(job_id, board.name, err, count_attempt=False)
            self._emit(job_id, board.name, "retry", exc.message, kind=exc.kind, seconds=seconds)
        elif not exc.transient or row["attempts"] + 1 >= self.max_attempts:
            self.journal.fail(job_id, board.name, err)
            self._emit(job_id, board.name, "failed", exc.message, kind=exc.kind, seconds=seconds)
        else:
            self.journal.retry(job_id, board.name, err)
            self._emit(job_id, board.name, "retry", exc.message, kind=exc.kind, seconds=seconds)
        if exc.transient:
            with self._cv:
                self._state[board.name]["fail_streak"] += 1
                streak = self._state[board.name]["fail_streak"]
            if streak >= self.offline_after:
                self._offline(board, f"{streak} failures in a row, last {exc.kind}: {exc.message}")


# ---------------------------------------------------------------------------------------------------------------
class PoolClientLike(Protocol):
    """What a bench or a sweep calls on a board pool, wherever the pool runs."""

    def submit(self, jobs: Iterable[Job | dict]) -> list[str]: ...

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]: ...

    def events(self, cursor: int = 0) -> tuple[list[dict[str, Any]], int]: ...

    def finished(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]: ...

    def close(self) -> None: ...


class LocalPoolClient:
    """A :class:`BoardPool` in this process behind the calls of :class:`PoolClient` (no Ray)."""

    def __init__(self, pool: BoardPool) -> None:
        self.pool = pool

    def submit(self, jobs: Iterable[Job | dict]) -> list[str]:
        return self.pool.submit_many(jobs)

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        return self.pool.wait(job_id, timeout)

    def events(self, cursor: int = 0) -> tuple[list[dict[str, Any]], int]:
        return self.pool.events(cursor)

    def finished(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return self.pool.finished(ids)

    def close(self) -> None:
        self.pool.close()


class PoolClient:
    """A :class:`BoardPool` running as a Ray actor, seen from the driver (or a Tune trial)."""

    def __init__(self, actor: Any):
        self.actor = actor

    def submit(self, jobs: Iterable[Job | dict]) -> list[str]:
        import ray

        return ray.get(self.actor.submit_many.remote([j.to_dict() if isinstance(j, Job) else j for j in jobs]))

    def futures(self, ids: Iterable[str]) -> list[Any]:
        """One ObjectRef per job, resolving to its outcome dict when the job is done or failed."""
        return [self.actor.wait.remote(i) for i in ids]

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        import ray

        return ray.get(self.actor.wait.remote(job_id, timeout))

    def events(self, cursor: int = 0) -> tuple[list[dict[str, Any]], int]:
        import ray

        return ray.get(self.actor.events.remote(cursor))

    def finished(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        import ray

        return ray.get(self.actor.finished.remote(list(ids)))

    def boards(self) -> dict[str, dict[str, Any]]:
        import ray

        return ray.get(self.actor.boards.remote())

    @property
    def journal_path(self) -> str:
        import ray

        return ray.get(self.actor.journal_file.remote())

    def close(self) -> None:
        import ray

        try:
            ray.get(self.actor.close.remote())
        finally:
            ray.kill(self.actor)


def start_pool_actor(inventory: Inventory, journal: str | Path, *, name: str | None = None,
                     namespace: str = "dance", **kwargs: Any) -> PoolClient:
    """Start the pool as a Ray actor (threaded: one thread per board plus the callers' waits).

    With ``name``, another driver or a Tune trial reaches the same pool with :func:`get_pool`.
    """
    import ray

    # the actor's working directory is not the caller's: hand it absolute paths
    inventory = inventory.model_copy(update={"known_hosts": inventory.known_hosts_path()})
    cls = ray.remote(BoardPool).options(num_cpus=0, max_concurrency=max(16, 4 * len(inventory.boards) + 8),
                                        name=name, namespace=namespace if name else None)
    actor = cls.remote(inventory, str(Path(journal).resolve()), **kwargs)
    ray.get(actor.boards.remote())  # surface a failing constructor here
    return PoolClient(actor)


def get_pool(name: str = "dance-board-pool", namespace: str = "dance") -> PoolClient:
    """The named pool actor started elsewhere in this Ray cluster."""
    import ray

    return PoolClient(ray.get_actor(name, namespace=namespace))
