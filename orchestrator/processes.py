"""Processes this platform starts and stops itself (sshd boards, the MLflow UI), always by their own PID.

A PID names a process only together with its start time (:func:`start_time`): a stop checks
both, so a PID the system gave to someone else is never signalled.
"""
from __future__ import annotations

import os
import signal
import socket
import time

GRACE_S = 5.0  # SIGTERM, then SIGKILL after this many seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state first), or None when there is no such process."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): with the PID, it names one process."""
    st = _stat(pid)
    return int(st[19]) if st else None


def running(pid: int, start: int | None = None) -> bool:
    """``pid`` exists, is not a zombie, and (given ``start``) is the process that started then."""
    st = _stat(pid)
    return bool(st) and st[0] != "Z" and (start is None or int(st[19]) == start)


def descendants(pid: int) -> list[int]:
    """PIDs of every process below ``pid`` (from /proc/<pid>/stat parent links)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st:
                children.setdefault(int(st[1]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _signal(pids: list[int], group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap(pids: list[int]) -> None:
    """Collect those that are this process's children (a caller that started them in-process)."""
    for p in pids:
        try:
            os.waitpid(p, os.WNOHANG)
        except ChildProcessError:
            pass


def stop_group(pid: int, start: int | None, grace: float = GRACE_S) -> str:
    """Stop the process group led by ``pid`` and every process below it (sshd's per-connection
    servers call setsid(), so they are found through /proc's parent links): SIGTERM, then SIGKILL
    after ``grace`` seconds. ``"gone"`` when ``pid`` is no longer the process started at ``start``
    (nothing is signalled), else ``"stopped"`` or ``"killed"``."""
    if not running(pid, start):
        _reap([pid])
        return "gone"
    pids = [pid] + descendants(pid)
    _signal(pids, pid, signal.SIGTERM)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if sig == signal.SIGKILL:
            _signal(pids, pid, signal.SIGKILL)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pids)
            if not any(running(p) for p in pids):
                return "stopped" if sig == signal.SIGTERM else "killed"
            time.sleep(0.05)
    return "killed"


