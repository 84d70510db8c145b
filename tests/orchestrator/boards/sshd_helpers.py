"""A real Debian OpenSSH server on 127.0.0.1 for the board tests and the benchmark.

Each :class:`Sshd` is ``/usr/sbin/sshd -D`` started as a child process with its own
temporary host key, ``authorized_keys`` and port, in its own process group, and stopped
by that PID (``os.killpg(pid, ...)``), so the per-connection children die with it (a
board that disappears).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from orchestrator.boards.inventory import Measure

#: short agent windows: a measurement takes ~1.5 s (imported as sshd_helpers.FAST: a plain
#: `from conftest import` would pick whichever conftest another test folder loaded first)
FAST = Measure(duration=0.4, repeats=2, idle=0.3, warmup=0.1, warmup_iters=2, min_samples=15, threads=1)

SSHD = "/usr/sbin/sshd"


def have_sshd() -> bool:
    return os.access(SSHD, os.X_OK) and shutil.which("ssh-keygen") is not None


def keygen(path: Path, kind: str = "ed25519") -> Path:
    """A new passphrase-less key pair at ``path`` (+ ``.pub``)."""
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path), "-C", "dance-test"],
                   check=True, stdin=subprocess.DEVNULL)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """PIDs of every process below ``pid`` (from /proc/<pid>/stat parent links)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


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

    def config(self) -> list[str]:
        opts = {
            "ListenAddress": "127.0.0.1", "Port": str(self.port), "HostKey": str(self.host_key),
            "AuthorizedKeysFile": str(self.authorized), "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no", "PubkeyAuthentication": "yes", "UsePAM": "no",
            "StrictModes": "no", "PidFile": "none", "PermitRootLogin": "prohibit-password",
            "LogLevel": "VERBOSE", "MaxSessions": "64", "MaxStartups": "64",
            "Subsystem": "sftp internal-sftp", "PermitUserEnvironment": "no",
        }
        out = []
        for k, v in opts.items():
            out += ["-o", f"{k}={v}"]
        return out

    def start(self, timeout: float = 10.0) -> "Sshd":
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege-separation dir (Debian's unit makes it)
        cfg = self.dir / "sshd_config"
        cfg.write_text("")  # everything on the command line; never the system's /etc/ssh/sshd_config
        cmd = [SSHD, "-D", "-e", "-f", str(cfg), *self.config()]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd on port {self.port} did not answer in {timeout} s")

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
