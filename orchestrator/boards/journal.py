"""SQLite journal of the pool's queue and results, so a restarted orchestrator resumes.

A job's row moves ``queued → running → done | failed``; the result is written in the same
transaction that marks it done, so a job is either finished (never run again) or not
(run again after a restart: a measurement cut off by a crash left no result). Jobs are
identified by their key (:attr:`Job.key`): submitting the same job twice returns the first.
"""
from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, seq INTEGER, spec TEXT NOT NULL, state TEXT NOT NULL,
    board TEXT, attempts INTEGER NOT NULL DEFAULT 0, failed_on TEXT NOT NULL DEFAULT '[]',
    result TEXT, error TEXT, history TEXT NOT NULL DEFAULT '[]',
    submitted REAL, started REAL, finished REAL);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
"""

FINAL = ("done", "failed")


class Journal:
    """Thread-safe access to one journal file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One pool per journal: a second one would put the first one's running jobs back in
        # the queue (recover) and run them twice. The lock dies with its process, even on SIGKILL.
        self._lockf = open(self.path.with_name(self.path.name + ".lock"), "a+")
        try:
            fcntl.flock(self._lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lockf.seek(0)
            holder = self._lockf.read().strip() or "another process"
            self._lockf.close()
            raise UserError(f"journal {self.path} is in use by {holder}; one board pool per journal "
                            "(give this one another --journal)") from None
        self._lockf.seek(0)
        self._lockf.truncate()
        self._lockf.write(f"pid {os.getpid()}\n")
        self._lockf.flush()
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a result once reported survives a power cut
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._lockf.close()  # releases the flock

    def _row(self, r: sqlite3.Row | tuple | None) -> dict[str, Any] | None:
        if r is None:
            return None
        keys = ("id", "seq", "spec", "state", "board", "attempts", "failed_on", "result", "error", "history",
                "submitted", "started", "finished")
        d = dict(zip(keys, r))
        for k in ("spec", "failed_on", "result", "error", "history"):
            d[k] = json.loads(d[k]) if d[k] else None
        return d

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._row(self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())

    def add(self, job_id: str, spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Insert a queued job; returns (row, created). An existing failed job is queued again."""
        with self._lock:
            row = self.get(job_id)
            if row is not None:
                if row["state"] == "failed":
                    self._db.execute("UPDATE jobs SET state='queued', attempts=0, failed_on='[]', error=NULL, "
                                     "spec=? WHERE id=?", (json.dumps(spec), job_id))
                    return self.get(job_id), True
                return row, False
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            self._db.execute("INSERT INTO jobs (id, seq, spec, state, submitted) VALUES (?, ?, ?, 'queued', ?)",
                             (job_id, seq, json.dumps(spec), time.time()))
            return self.get(job_id), True

    def recover(self) -> list[str]:
        """After a restart: jobs left ``running`` had no result recorded; queue them again."""
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE state='running'")]
            self._db.execute("UPDATE jobs SET state='queued', board=NULL WHERE state='running'")
            return ids

    def queued(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._row(r) for r in self._db.execute("SELECT * FROM jobs WHERE state='queued' ORDER BY seq")]

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._row(r) for r in self._db.execute("SELECT * FROM jobs ORDER BY seq")]

    def start(self, job_id: str, board: str) -> bool:
        """Claim a queued job for a board (False if another board took it first)."""
        with self._lock:
            cur = self._db.execute("UPDATE jobs SET state='running', board=?, started=? WHERE id=? AND state='queued'",
                                   (board, time.time(), job_id))
            return cur.rowcount == 1

    def _event(self, job_id: str, event: dict[str, Any]) -> str:
        hist = self.get(job_id)["history"] or []
        hist.append(dict(event, at=time.time()))
        return json.dumps(hist)

    def finish(self, job_id: str, board: str, result: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET state='done', board=?, result=?, finished=?, history=? WHERE id=?",
                             (board, json.dumps(result), time.time(),
                              self._event(job_id, {"board": board, "outcome": "done"}), job_id))

    def retry(self, job_id: str, board: str, error: dict[str, Any], count_attempt: bool = True) -> None:
        with self._lock:
            row = self.get(job_id)
            failed_on = sorted(set(row["failed_on"] or []) | {board})
            self._db.execute("UPDATE jobs SET state='queued', board=NULL, attempts=attempts+?, failed_on=?, error=?, "
                             "history=? WHERE id=?",
                             (1 if count_attempt else 0, json.dumps(failed_on), json.dumps(error),
                              self._event(job_id, {"board": board, "outcome": "retry", **error}), job_id))

    def fail(self, job_id: str, board: str | None, error: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET state='failed', attempts=attempts+1, error=?, finished=?, history=? "
                             "WHERE id=?", (json.dumps(error), time.time(),
                                            self._event(job_id, {"board": board, "outcome": "failed", **error}),
                                            job_id))
