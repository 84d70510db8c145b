"""A ``dance`` command as a user runs it, for the fault tests: a subprocess in its own session
(process group = its pid), output to a log, signalled like a terminal does (the whole group) and
cleaned up by the pids it was seen with, never by name."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil


def group_pids(pgid: int) -> set[int]:
    """Every live process in process group ``pgid``, and the children of its leader."""
    out = set()
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid:
                out.add(p.pid)
        except OSError:
            pass
    try:
        out.update(c.pid for c in psutil.Process(pgid).children(recursive=True))
    except psutil.Error:
        pass
    return out


class Driver:
    """``python -m orchestrator.cli ARGS`` in ``cwd``; ``tracked`` collects the pids seen in its group."""

    def __init__(self, args: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.tracked: set[int] = set()
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], stdout=fh,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                         cwd=cwd, env=dict(env or os.environ, RAY_USAGE_STATS_ENABLED="0"))

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def track(self) -> None:
        self.tracked |= group_pids(self.proc.pid)

    def signal(self, sig: int) -> None:
        """What a terminal does: the signal to the whole group."""
        self.track()
        os.killpg(self.proc.pid, sig)

    def kill_all(self) -> None:
        """SIGKILL whatever of the group is left (the pids seen, by pid), and wait for them."""
        self.track()
        for pid in self.tracked:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        psutil.wait_procs([psutil.Process(p) for p in self.tracked if psutil.pid_exists(p)], timeout=15)
