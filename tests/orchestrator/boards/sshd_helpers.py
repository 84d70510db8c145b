"""A real Debian OpenSSH server on 127.0.0.1 for the board tests and the benchmark.

Each :class:`Sshd` is ``/usr/sbin/sshd -D`` started as a child process with its own
temporary host key, ``authorized_keys`` and port, in its own process group, and stopped
by that PID, so the per-connection children die with it (a board that disappears). The
server itself is the one ``dance boards emulate`` starts (``orchestrator.boards.emulated``).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from orchestrator.boards import emulated
from orchestrator.boards.inventory import Measure
from orchestrator.processes import descendants, free_port

#: short agent windows: a measurement takes ~1.5 s (imported as sshd_helpers.FAST: a plain
#: `from conftest import` would pick whichever conftest another test folder loaded first)
# The 0.4 s windows spread by 5-10 % on a shared 2-core machine: the spread limit is opened so the
# quality gate (tests/orchestrator/boards/test_bench_trust.py) does not add re-measurements here.
FAST = Measure(duration=0.4, repeats=2, idle=0.3, warmup=0.1, warmup_iters=2, min_samples=15, threads=1,
               extra_args=["--cv-warn", "10"])


def have_sshd() -> bool:
    return emulated.have_sshd() and shutil.which("ssh-keygen") is not None


def keygen(path: Path, kind: str = "ed25519") -> Path:
    """A new passphrase-less key pair at ``path`` (+ ``.pub``)."""
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path), "-C", "dance-test"],
                   check=True, stdin=subprocess.DEVNULL)
    return path


class Sshd:
    """One sshd on 127.0.0.1:port accepting ``client_pub`` for the current user."""

    def __init__(self, workdir: Path, client_pub: Path, port: int | None = None, host_key: Path | None = None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host_key = host_key or keygen(self.dir / "ssh_host_ed25519_key")
        self.authorized = self.dir / "authorized_keys"
        self.authorized.write_text(Path(client_pub).read_text())
        self.authorized.chmod(0o600)
        self.log = self.dir / "sshd.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> "Sshd":
        self.proc = emulated.start_sshd(self.dir, self.port, self.host_key, self.authorized, self.log, timeout)
        return self

    def stop(self) -> None:
        """The board vanishes: kill the listener and every process below it (the per-connection
        sshd children call setsid(), so they are found through /proc's parent links), by PID."""
        if self.proc is None:
            return
        for pid in [self.proc.pid] + descendants(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        self.proc = None

    def cut_off(self) -> None:
        """The board drops off the network: its sshd (listener and per-connection servers) dies, by
        PID. The board's own processes live on, as on a real board whose link went down; killing
        them too (:meth:`stop`) can interrupt a login shell's start-up files mid-write (pyenv's
        rehash lock, say) and leave this machine's shell hanging for later tests."""
        if self.proc is None:
            return
        for pid in [self.proc.pid] + descendants(self.proc.pid):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                    os.kill(pid, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError):
                pass
        self.proc.wait(timeout=10)
        self.proc = None

    def accepted(self) -> int:
        """How many logins this server accepted (from its own log)."""
        return self.log.read_text(errors="replace").count("Accepted publickey") if self.log.exists() else 0

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
