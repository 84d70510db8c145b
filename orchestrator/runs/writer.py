"""A sweep's MLflow writes, off Tune's event loop: a bounded queue, one thread, a durable spool.

Tune calls its callbacks on its one event loop; an MLflow call made there waits for the server,
so an outage stalls every trial's reports (issue 17: a 29 s outage stalled the loop ~90 s and lost a
report). Here a callback only *submits* an op: it is written to the spool (sqlite on the driver's
disk) first, then queued; one thread applies the ops in order, retrying with capped exponential
backoff while MLflow does not answer, and marks each one done in the spool. Ops still pending when
the driver ends (a crash, or MLflow down at the end) are replayed in order by the next writer on the
same spool (``dance sweep --resume``).

Exactly once: an op is marked ``tried`` before its first call. A metric op that was tried before
(its outcome unknown: the server may have written it before the connection dropped) is first looked
up in the run's history, by the timestamp recorded in the spool, and skipped if it landed; the
sqlalchemy stores also drop an identical (key, step, value, timestamp) row themselves.

Ops are JSON objects naming runs by a *key* (a trial id), since a run's id is known only once
``run`` has created or found it; keys and run ids are kept in the spool too.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from orchestrator.runs.schema import tag_text
from orchestrator.runs.tracking import numeric_metrics, quote

# mlflow is imported inside functions (the entities, the exception): only the thread needs it.

log = logging.getLogger("dance.tracking")

MAX_QUEUE = 10_000  # ops held in memory; more stay in the spool only (read back in order)
BACKOFF_FIRST_S, BACKOFF_CAP_S = 0.5, 8.0
METRICS_PER_OP = 500  # MLflow's log_batch limit: one op is one batch, written atomically
PARAMS_PER_BATCH = 100
Handler = Callable[[Any, str, dict], None]  # (client, run id, payload)


def spool_path(sweep_id: str, root: Path | str = ".dance/spool") -> Path:
    """``root/<sweep id>.sqlite`` (the id made safe for a file name): where a sweep's spool lives."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in sweep_id)
    return (Path(root) / f"{safe}.sqlite").resolve()


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` means "MLflow did not answer" (retry) rather than "MLflow refused this" (give up)."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        code = exc.get_http_status_code()
        return code >= 500 or code == 429  # a connection refused comes back as INTERNAL_ERROR (500)
    # not every OSError: a missing file or a refused permission is not an outage
    return isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__module__.startswith(("requests",
                                                                                                 "urllib3"))


@contextlib.contextmanager
def mlflow_retries_off() -> Iterator[None]:
    """MLflow's own HTTP retries (7, backoff up to minutes) off while the writer retries: they would hold
    the writer's one thread and hide the outage from it. Process-wide (MLflow reads the environment per
    request); restored on exit. A value the user set is kept."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _reason(exc: BaseException) -> str:
    """A few words for why a call failed (MLflow wraps a refused connection in a paragraph of urllib3)."""
    text = str(exc)
    for needle, said in (("refused", "connection refused"), ("timed out", "timed out"), ("timeout", "timed out"),
                         ("reset", "connection reset"), ("Name or service not known", "unknown host")):
        if needle in text:
            return said
    first = next((ln for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return first[:120]


class _Spool:
    """The ops in order, each ``new`` → ``tried`` → ``done``/``failed``, and the runs' ids by key."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._made: list[Path] = []  # folders made for it, removed again with it when they are empty
        if path is not None:
            for folder in reversed([path.parent, *path.parent.parents]):
                if not folder.exists():
                    folder.mkdir()
                    self._made.append(folder)
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False,
                                   isolation_level=None)
        self._lock = threading.Lock()  # one connection, two threads
        with self._lock:
            # WAL + NORMAL: a committed row survives the process dying (not a power cut), at a fraction
            # of the cost of a full fsync per op on Tune's loop.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS ops (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT "
                             "NOT NULL, state TEXT NOT NULL DEFAULT 'new', error TEXT)")
            self._db.execute("CREATE TABLE IF NOT EXISTS runs (key TEXT PRIMARY KEY, run_id TEXT NOT NULL)")

    def append(self, op: dict) -> tuple[int, dict]:
        """Its sequence number, and the op as a replay will read it (the thread applies that, never the
        caller's objects: a live op and a replayed one are the same)."""
        body = json.dumps(op, default=str)
        with self._lock:
            return int(self._db.execute("INSERT INTO ops (body) VALUES (?)", (body,)).lastrowid), json.loads(body)

    def pending_after(self, seq: int, limit: int) -> list[tuple[int, dict, bool]]:
        """Unfinished ops after ``seq``, in order: (seq, op, tried before)."""
        with self._lock:
            rows = self._db.execute("SELECT seq, body, state FROM ops WHERE seq > ? AND state IN ('new', 'tried') "
                                    "ORDER BY seq LIMIT ?", (seq, limit)).fetchall()
        return [(s, json.loads(b), st == "tried") for s, b, st in rows]

    def mark(self, seq: int, state: str, error: str | None = None) -> None:
        with self._lock:
            self._db.execute("UPDATE ops SET state = ?, error = ? WHERE seq = ?", (state, error, seq))

    def pending(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM ops WHERE state IN ('new', 'tried')").fetchone()[0])

    def runs(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT key, run_id FROM runs").fetchall())

    def remember(self, key: str, run_id: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?)", (key, run_id))

    def close(self, *, remove: bool) -> None:
        with self._lock:
            self._db.close()
        if remove and self.path is not None:  # nothing left to replay: no file says "tracking incomplete"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            for folder in reversed(self._made):
                with contextlib.suppress(OSError):  # not empty: someone else's files are there too
                    folder.rmdir()


class TrackingWriter:
    """Applies MLflow ops in submission order on one background thread (or inline, ``background=False``:
    tests and tools that want the calls made now). ``submit`` never waits for MLflow."""

    def __init__(self, client_factory: Callable[[], Any], *, uri: str, spool: Path | None,
                 handlers: Mapping[str, Handler] | None = None, max_queue: int = MAX_QUEUE,
                 backoff_cap_s: float = BACKOFF_CAP_S, background: bool = True,
                 print_fn: Callable[[str], None] | None = None) -> None:
        self.uri, self.background = uri, background
        self.handlers = dict(handlers or {})
        self.print = print_fn or log.warning
        self.backoff_cap_s = backoff_cap_s
        self._client_factory, self._client = client_factory, None
        self._spool = _Spool(spool)
        self._run_ids = self._spool.runs()
        self._queue: queue.Queue[tuple[int, dict, bool]] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()  # orders the spool's rows and the queue's items alike
        self._idle = threading.Condition()
        # Start "behind": the thread first reads what a previous driver left in the spool (the replay),
        # and the queue is used again once it has caught up. The same path serves a full queue.
        self._behind, self._cursor = True, 0
        self._pending = self._spool.pending()
        self.replayed = self._pending
        self._stop = threading.Event()
        self.down_since: float | None = None
        self.outages = self.refused = 0
        self.submit_s = self.submit_max_s = 0.0  # time the callers spent in submit (what Tune's loop pays)
        self.calls, self.call_s = 0, 0.0  # ops applied, and the thread's time in MLflow for them
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="mlflow-writer", daemon=True)
            self._thread.start()
        elif self._pending:
            self.flush()

    # ------------------------------------------------------------------ the callers' side
    @property
    def client(self):
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    @property
    def spool_path(self) -> Path | None:
        return self._spool.path

    def pending(self) -> int:
        return self._pending

    def run_id(self, key: str) -> str | None:
        return self._run_ids.get(key)

    def submit(self, op: dict) -> None:
        """Spool ``op``, then queue it (or leave it to be read back from the spool when the queue is full)."""
        t0 = time.perf_counter()
        with self._lock:
            seq, stored = self._spool.append(op)
            with self._idle:
                self._pending += 1
            if not self._behind:
                try:
                    self._queue.put_nowait((seq, stored, False))
                except queue.Full:  # from here on the thread reads the spool, so the order holds
                    self._behind = True
        took = time.perf_counter() - t0
        self.submit_s += took
        self.submit_max_s = max(self.submit_max_s, took)
        if not self.background:
            self.flush()

    def run(self, key: str, experiment_id: str, name: str, tags: Mapping[str, str], identity: Mapping[str, str],
            params: Mapping[str, str]) -> None:
        """The run of ``key``: found by its ``identity`` tags (a resumed sweep re-attaches), else created."""
        self.submit({"op": "run", "key": key, "experiment_id": experiment_id, "name": name, "tags": dict(tags),
                     "identity": dict(identity), "params": dict(params)})

    def metrics(self, key: str, metrics: Mapping[str, Any], step: int) -> None:
        """One step's metrics, timestamped now (the timestamp travels with the op: a replay is the same point)."""
        values = list(numeric_metrics(metrics).items())
        ts = int(time.time() * 1000)
        for i in range(0, len(values), METRICS_PER_OP):
            self.submit({"op": "metrics", "key": key, "step": int(step), "ts": ts,
                         "metrics": dict(values[i:i + METRICS_PER_OP])})

    def tags(self, key: str, tags: Mapping[str, object]) -> None:
        self.submit({"op": "tags", "key": key, "tags": {k: tag_text(v) for k, v in tags.items()}})

    def reopen(self, key: str, delete: list[str]) -> None:
        """The run goes on (RUNNING), without the tags of how it ended before."""
        self.submit({"op": "reopen", "key": key, "delete": list(delete)})

    def end(self, key: str, status: str) -> None:
        self.submit({"op": "end", "key": key, "status": status})

    def call(self, kind: str, key: str, payload: Mapping[str, Any]) -> None:
        """A registered handler's op (``handlers[kind](client, run id, payload)``), in order with the rest."""
        self.submit({"op": "call", "kind": kind, "key": key, "payload": dict(payload)})

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until every op is applied; whether they all were."""
        if not self.background:
            self.flush()
            return self._pending == 0
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending and time.monotonic() < deadline:
                self._idle.wait(min(0.5, max(0.0, deadline - time.monotonic())))
            return self._pending == 0

    def wait(self, down_for_s: float) -> bool:
        """Wait until every op is applied, for as long as MLflow answers (however long the uploads take),
        giving up once it has not answered for ``down_for_s`` s in a row; whether they all were."""
        while not self.drain(1.0):
            since = self.down_since
            if since is not None and time.monotonic() - since > down_for_s:
                return False
        return True

    def close(self, timeout: float = 0.0) -> bool:
        """Drain (up to ``timeout`` s), stop the thread; whether tracking is complete. The spool file is
        removed when it is, and kept (for ``--resume``) when it is not."""
        if self._stop.is_set():
            return self._pending == 0
        done = self.drain(timeout)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            if self._thread.is_alive():  # stuck in a call: its op stays 'tried' and is checked on replay
                return False
        done = done and self._pending == 0
        self._spool.close(remove=done and not self.refused)  # a refused call stays there to be looked at
        return done

    # ------------------------------------------------------------------ the thread's side
    def flush(self) -> None:
        """Apply what is pending now, in this thread (inline mode, and the thread's loop body)."""
        while not self._stop.is_set():
            item = self._next(block=False)
            if item is None:
                return
            self._apply_with_retries(*item)

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self._next(block=True)
            if item is not None:
                self._apply_with_retries(*item)

    def _next(self, block: bool) -> tuple[int, dict, bool] | None:
        if self._behind:
            try:  # what was queued before the queue filled up comes first: it is older than the rest
                return self._queue.get_nowait()
            except queue.Empty:
                pass
            rows = self._spool.pending_after(self._cursor, 1)
            if rows:
                return rows[0]
            with self._lock:  # nothing left in the spool: back to the queue, unless a row came meanwhile
                rows = self._spool.pending_after(self._cursor, 1)
                if rows:
                    return rows[0]
                self._behind = False
        try:
            return self._queue.get(timeout=0.2) if block else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _apply_with_retries(self, seq: int, op: dict, tried: bool) -> None:
        self._cursor = max(self._cursor, seq)
        if not tried:
            self._spool.mark(seq, "tried")  # from now on its outcome is unknown until marked done
        delay = BACKOFF_FIRST_S
        while True:
            t0 = time.perf_counter()
            try:
                self._apply(op, uncertain=tried)
                state, error = "done", None
                break
            except Exception as exc:
                self.call_s += time.perf_counter() - t0
                if not transient(exc):  # MLflow refused it: retrying cannot help; say which and go on
                    state, error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
                    self.refused += 1
                    self.print(f"a tracking call was refused and is dropped ({op.get('op')} {op.get('key')}): "
                               f"{error[:300]}")
                    break
                self._went_down(exc)
                tried = True
                if self._stop.wait(delay):
                    return  # closing with MLflow down: the op stays in the spool for --resume
                delay = min(self.backoff_cap_s, delay * 2)
        if state == "done":
            self.call_s += time.perf_counter() - t0
        self.calls += 1
        self._spool.mark(seq, state, error)
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()
        if self.down_since is not None:
            self._came_back()

    def _went_down(self, exc: BaseException) -> None:
        if self.down_since is not None:
            return  # one line per outage, not one per retry
        self.down_since = time.monotonic()
        self.outages += 1
        self.print(f"MLflow at {self.uri} not answering ({_reason(exc)}); spooling ({self._pending} pending) to "
                   f"{self._spool.path or 'memory'} — will replay")

    def _came_back(self) -> None:
        down = time.monotonic() - (self.down_since or time.monotonic())
        self.down_since = None
        self.print(f"MLflow at {self.uri} answering again after {down:.0f} s; replaying {self._pending} pending")

    # ------------------------------------------------------------------ the ops
    def _rid(self, key: str) -> str:
        rid = self._run_ids.get(key)
        if rid is None:
            raise KeyError(f"no run for {key!r} (its 'run' op never succeeded)")
        return rid

    def _apply(self, op: dict, *, uncertain: bool) -> None:
        kind, client = op["op"], self.client
        if kind == "run":
            self._ensure_run(op, uncertain)
        elif kind == "metrics":
            self._log_metrics(client, self._rid(op["key"]), op, uncertain)
        elif kind == "tags":
            for k, v in op["tags"].items():
                client.set_tag(self._rid(op["key"]), k, v)
        elif kind == "reopen":
            rid = self._rid(op["key"])
            present = client.get_run(rid).data.tags
            for tag in op["delete"]:
                if tag in present:
                    client.delete_tag(rid, tag)
            client.update_run(rid, status="RUNNING")
        elif kind == "end":
            client.set_terminated(self._rid(op["key"]), op["status"])
        elif kind == "call":
            handler = self.handlers.get(op["kind"])
            if handler is None:
                raise KeyError(f"no handler for {op['kind']!r}")
            handler(client, self._rid(op["key"]), op["payload"])
        else:
            raise KeyError(f"unknown op {kind!r}")

    def _ensure_run(self, op: dict, uncertain: bool) -> None:
        from mlflow.entities import Param

        client, key = self.client, op["key"]
        rid = self._run_ids.get(key)
        if rid is None:
            where = " and ".join(f"tags.`{k}` = '{quote(str(v))}'" for k, v in op["identity"].items())
            found = client.search_runs([op["experiment_id"]], filter_string=where, max_results=1)
            rid = found[0].info.run_id if found else None
            created = rid is None
            if created:
                rid = client.create_run(op["experiment_id"], run_name=op["name"], tags=op["tags"]).info.run_id
            self._spool.remember(key, rid)
            self._run_ids[key] = rid
            if not (created or uncertain):
                return  # a resumed sweep's run: its params are there
        elif not uncertain:
            return  # known already (the spool remembers it): its params went with the op that found it
        params = [Param(k, str(v)) for k, v in op["params"].items()]
        for i in range(0, len(params), PARAMS_PER_BATCH):  # the same values again are accepted by MLflow
            client.log_batch(rid, params=params[i:i + PARAMS_PER_BATCH])

    @staticmethod
    def _log_metrics(client, rid: str, op: dict, uncertain: bool) -> None:
        from mlflow.entities import Metric

        items = [Metric(k, float(v), int(op["ts"]), int(op["step"])) for k, v in op["metrics"].items()]
        if not items:
            return
        if uncertain:  # it may have landed before the connection dropped: one batch is all or nothing
            first = items[0]
            if any(m.step == first.step and m.timestamp == first.timestamp and m.value == first.value
                   for m in client.get_metric_history(rid, first.key)):
                return
        client.log_batch(rid, metrics=items)
