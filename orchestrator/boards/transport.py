"""One board's transport: SSH (paramiko) or ``local`` (this host, subprocesses).

Both offer the same five operations, so a measurement runs the same code on either:
``connect``, ``put`` (temporary name → sha256 checked on the board → rename; skipped when
the board already holds that hash), ``run`` (quoted argv, per-job deadline, stdout and
stderr drained together, the whole remote process group stopped at the deadline),
``read`` and ``remove``. Failures are :class:`BoardError` of a typed kind.
"""
from __future__ import annotations

import os
import secrets
import select
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from orchestrator.boards import hostkeys
from orchestrator.boards.errors import BoardError
from orchestrator.boards.inventory import Board
from workers.digest import file_sha256

CHUNK = 1 << 20
OUTPUT_CAP = 1 << 20  # keep at most the last 1 MiB of each stream (a chatty agent must not eat memory)
KILL_GRACE_S = 5.0    # SIGTERM first (the agent writes its partial JSON), SIGKILL after this


@dataclass
class RunResult:
    rc: int | None         # None when killed at the deadline
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float


def _tail(buf: bytearray) -> str:
    return bytes(buf[-OUTPUT_CAP:]).decode("utf-8", "replace")


def job_shell(argv: list[str], cwd: str, lock: str, lock_wait_s: float, env: dict[str, str] | None = None) -> str:
    """The remote shell line, one round trip per job: make ``cwd``, take the board lock (fd 9,
    inherited by the agent, so the lock lives exactly as long as the measurement), record the
    shell's PID (the process group the deadline stops), run the agent, then move its
    ``result.json`` (and ``trace.csv``) to ``<cwd>.result.json`` (``.trace.csv``) and remove ``cwd``
    (the job folder never outlives the job). Every word is quoted; nothing from the job reaches the
    shell unquoted."""
    q = shlex.quote
    envs = " ".join(f"{k}={q(v)}" for k, v in (env or {}).items())
    return (f"mkdir -p {q(cwd)} && cd {q(cwd)} && exec 9>>{q(lock)} && "
            f"{{ flock -w {int(max(1, lock_wait_s))} 9 || "
            f"{{ echo 'board busy: lock {lock} held' >&2; exit 75; }}; }} && "
            f"echo $$ > pid && {('env ' + envs + ' ') if envs else ''}{' '.join(q(a) for a in argv)}; rc=$?; "
            f"mv -f result.json {q(cwd + '.result.json')} 2>/dev/null; "
            f"mv -f trace.csv {q(cwd + '.trace.csv')} 2>/dev/null; "
            f"cd / && rm -rf -- {q(cwd)}; exit $rc")


class Transport:
    """Interface shared by :class:`SshTransport` and :class:`LocalTransport`."""

    board: Board
    connects = 0  # how many connections this transport opened (the cache tests count them)

    def connect(self) -> None: ...
    def close(self) -> None: ...
    def exists(self, path: str, size: int | None = None) -> bool: ...
    def put(self, local: str | Path, remote: str, sha256: str | None = None) -> bool: ...
    def run(self, argv: list[str], cwd: str, deadline_s: float, env: dict[str, str] | None = None) -> RunResult: ...
    # one shell line (already quoted); past the deadline it is stopped and the result says timed_out
    def shell(self, command: str, deadline_s: float = 60.0) -> RunResult: ...
    def read(self, path: str) -> bytes | None: ...
    def remove(self, path: str) -> None: ...
    def remove_file(self, path: str) -> None: ...

    @property
    def lock_path(self) -> str:
        return f"{self.board.workdir}/board.lock"


# ---------------------------------------------------------------------------------------------------------
class SshTransport(Transport):
    """A board over SSH: host key against the platform's known_hosts, key auth only."""

    def __init__(self, board: Board, known_hosts: Path):
        self.board = board
        self.known_hosts = Path(known_hosts)
        self.client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self.connects = 0
        self._present: set[str] = set()  # files verified on the board during this connection
        self._dirs: set[str] = set()     # folders made during this connection

    # -- connection ------------------------------------------------------------------------------------
    def connect(self) -> None:
        if self.client is not None and self.client.get_transport() and self.client.get_transport().is_active():
            return
        self.close()
        b = self.board
        client = paramiko.SSHClient()
        keys = hostkeys.load(self.known_hosts)
        for entry in keys._entries:  # paramiko's SSHClient reads its own copy; hand it ours only
            for name in entry.hostnames:
                client.get_host_keys().add(name, entry.key.get_name(), entry.key)
        client.set_missing_host_key_policy(hostkeys.PlatformPolicy(b, self.known_hosts))
        t = b.connect_timeout_s
        try:
            client.connect(b.host, port=b.port, username=b.user, key_filename=b.key_path(), timeout=t,
                           banner_timeout=t, auth_timeout=t, channel_timeout=t, allow_agent=False,
                           look_for_keys=False)
        except BoardError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise hostkeys.changed_key_error(b, self.known_hosts, exc.key, exc.expected_key) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise BoardError("auth", b.name, f"{b.user}@{b.host}:{b.port} refused key {b.key_file}: {exc}") from None
        except (socket.timeout, TimeoutError) as exc:
            client.close()
            raise BoardError("unreachable", b.name, f"{b.host}:{b.port}: timed out after {t:g} s ({exc})") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise BoardError("unreachable", b.name, f"{b.host}:{b.port}: {exc.__class__.__name__}: {exc}") from None
        tr = client.get_transport()
        if b.keepalive_s:
            tr.set_keepalive(b.keepalive_s)
        self.client = client
        self.connects += 1

    def close(self) -> None:
        for obj in (self._sftp, self.client):
            try:
                if obj is not None:
                    obj.close()
            except Exception:  # a dead connection may fail to close; nothing left to save
                pass
        self._sftp = None
        self.client = None
        self._present.clear()  # a new connection checks again (the board may have been wiped)
        self._dirs.clear()

    def _alive(self) -> bool:
        return bool(self.client and self.client.get_transport() and self.client.get_transport().is_active())

    def _dropped(self, what: str, exc: BaseException | None = None) -> BoardError:
        self.close()
        detail = f": {exc.__class__.__name__}: {exc}" if exc else ""
        return BoardError("unreachable", self.board.name, f"connection lost during {what}{detail}")

    def sftp(self) -> paramiko.SFTPClient:
        self.connect()
        if self._sftp is None:
            try:
                self._sftp = self.client.open_sftp()
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise self._dropped("opening SFTP", exc) from None
        return self._sftp

    # -- commands --------------------------------------------------------------------------------------
    def shell(self, command: str, deadline_s: float = 60.0) -> RunResult:
        """Run one shell line (already quoted) and collect its output, with a deadline."""
        self.connect()
        t0 = time.monotonic()
        try:
            chan = self.client.get_transport().open_session(timeout=self.board.connect_timeout_s)
            chan.exec_command(command)
            chan.shutdown_write()  # no stdin: a command that reads it sees EOF instead of hanging
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._dropped("starting a command", exc) from None
        out, err = bytearray(), bytearray()
        deadline = t0 + deadline_s
        try:
            while True:
                # drain both streams every turn: a full stderr pipe must never stall stdout (or the agent)
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                del out[:-OUTPUT_CAP], err[:-OUTPUT_CAP]
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    rc = chan.recv_exit_status()
                    return RunResult(rc if rc >= 0 else None, _tail(out), _tail(err), False, time.monotonic() - t0)
                if not self._alive() or (chan.closed and not chan.exit_status_ready()):
                    raise self._dropped("a running command")
                if time.monotonic() > deadline:
                    return RunResult(None, _tail(out), _tail(err), True, time.monotonic() - t0)
                select.select([chan], [], [], 0.2)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._dropped("a running command", exc) from None
        finally:
            chan.close()

    def run(self, argv: list[str], cwd: str, deadline_s: float, env: dict[str, str] | None = None) -> RunResult:
        res = self.shell(job_shell(argv, cwd, self.lock_path, deadline_s, env), deadline_s)
        if res.timed_out:
            self._stop_group(cwd)
        return res

    def _stop_group(self, cwd: str) -> None:
        """Stop the job's whole process group on the board: TERM (the agent writes partial JSON), then KILL."""
        pidfile = shlex.quote(f"{cwd}/pid")
        line = (f"p=$(cat {pidfile} 2>/dev/null) || exit 0; kill -TERM -- -$p 2>/dev/null; "
                f"for i in $(seq {int(KILL_GRACE_S * 10)}); do kill -0 -- -$p 2>/dev/null || exit 0; sleep 0.1; done; "
                f"kill -KILL -- -$p 2>/dev/null; exit 0")
        try:
            self.shell(line, KILL_GRACE_S + 10)
        except BoardError:
            pass  # the board went away as well; nothing more to stop from here

    def exists(self, path: str, size: int | None = None) -> bool:
        try:
            st = self.sftp().stat(path)
        except FileNotFoundError:
            return False
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if isinstance(exc, OSError) and getattr(exc, "errno", None) == 2:
                return False
            raise self._dropped(f"stat {path}", exc) from None
        return size is None or st.st_size == size

    def _upload(self, local: str | Path, tmp: str) -> None:
        """Stream ``local`` to ``tmp`` (pipelined SFTP writes). Tests override this to corrupt bytes."""
        sftp = self.sftp()
        with open(local, "rb") as src, sftp.open(tmp, "wb") as dst:
            dst.set_pipelined(True)
            for block in iter(lambda: src.read(CHUNK), b""):
                dst.write(block)

    def put(self, local: str | Path, remote: str, sha256: str | None = None) -> bool:
        """Copy ``local`` to ``remote`` unless the board holds it already; returns True when sent.

        Sent to a temporary name; the board hashes what it received and only a match is
        renamed into place (one command); a mismatch is sent once more, then an ``upload`` error."""
        sha256 = sha256 or file_sha256(local)
        size = os.path.getsize(local)
        if remote in self._present or self.exists(remote, size):
            self._present.add(remote)
            return False
        parent, name = remote.rsplit("/", 1)
        tmp = f"{parent}/.{name}.{secrets.token_hex(4)}.part"
        q = shlex.quote
        self.mkdirs(parent)
        got = None
        for attempt in (1, 2):
            try:
                self._upload(local, tmp)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise self._dropped(f"upload of {Path(local).name}", exc) from None
            res = self.shell(f"h=$(sha256sum < {q(tmp)}) || exit 2; h=${{h%% *}}; "
                             f"if [ \"$h\" = {q(sha256)} ]; then mv -f {q(tmp)} {q(remote)}; else rm -f {q(tmp)}; "
                             f"echo \"$h\"; exit 3; fi", 600)
            if res.rc == 0:
                self._present.add(remote)
                return True
            if res.rc != 3:
                self.shell(f"rm -f {q(tmp)}")
                raise BoardError("board", self.board.name, f"sha256sum failed on the board (exit {res.rc}): "
                                 f"{res.stderr.strip()[-300:]}")
            got = res.stdout.strip()
        raise BoardError("upload", self.board.name,
                         f"{Path(local).name} arrived corrupted twice (board sha256 {got}, expected {sha256})")

    def mkdirs(self, path: str) -> None:
        """``mkdir -p`` through SFTP requests (no process started on the board)."""
        if path in self._dirs:
            return
        sftp = self.sftp()
        parts = [p for p in path.split("/") if p]
        cur = ""
        for part in parts:
            cur += "/" + part
            try:
                sftp.stat(cur)
            except FileNotFoundError:
                try:
                    sftp.mkdir(cur)
                except OSError:
                    sftp.stat(cur)  # made concurrently by another job: fine; anything else raises
            except (paramiko.SSHException, EOFError) as exc:
                raise self._dropped(f"mkdir {cur}", exc) from None
        self._dirs.add(path)

    def _check(self, res: RunResult, what: str) -> None:
        if res.rc != 0:
            raise BoardError("board", self.board.name, f"{what} failed (exit {res.rc}): {res.stderr.strip()[-300:]}")

    def read(self, path: str) -> bytes | None:
        try:
            with self.sftp().open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if isinstance(exc, OSError) and getattr(exc, "errno", None) == 2:
                return None
            raise self._dropped(f"reading {path}", exc) from None

    def remove(self, path: str) -> None:
        if not path.startswith(self.board.workdir + "/"):
            raise ValueError(f"refusing to remove {path}: outside the board's workdir {self.board.workdir}")
        self.shell(f"rm -rf -- {shlex.quote(path)}", 120)

    def remove_file(self, path: str) -> None:
        """Remove one file (an SFTP request: no process started on the board)."""
        try:
            self.sftp().remove(path)
        except FileNotFoundError:
            pass
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if not (isinstance(exc, OSError) and getattr(exc, "errno", None) == 2):
                raise self._dropped(f"removing {path}", exc) from None


# ---------------------------------------------------------------------------------------------------------
class LocalTransport(Transport):
    """This host as a board: the agent runs as a subprocess in ``workdir``."""

    def __init__(self, board: Board):
        self.board = board
        self.connects = 0

    def connect(self) -> None:
        Path(self.board.workdir).mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        pass

    def exists(self, path: str, size: int | None = None) -> bool:
        p = Path(path)
        return p.is_file() and (size is None or p.stat().st_size == size)

    def put(self, local: str | Path, remote: str, sha256: str | None = None) -> bool:
        sha256 = sha256 or file_sha256(local)
        if self.exists(remote, os.path.getsize(local)):
            return False
        dst = Path(remote)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}.part")
        shutil.copyfile(local, tmp)
        if file_sha256(tmp) != sha256:
            tmp.unlink()
            raise BoardError("upload", self.board.name, f"{Path(local).name} changed while being copied")
        os.replace(tmp, dst)
        return True

    def run(self, argv: list[str], cwd: str, deadline_s: float, env: dict[str, str] | None = None) -> RunResult:
        self.connect()
        return self.shell(job_shell(argv, cwd, self.lock_path, deadline_s, env), deadline_s)

    def shell(self, command: str, deadline_s: float = 60.0) -> RunResult:
        """The line in its own process group; past the deadline the group gets SIGTERM, then SIGKILL."""
        t0 = time.monotonic()
        proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=deadline_s)  # drains both pipes together
            return RunResult(proc.returncode if proc.returncode >= 0 else None,
                             out.decode("utf-8", "replace")[-OUTPUT_CAP:],
                             err.decode("utf-8", "replace")[-OUTPUT_CAP:], False, time.monotonic() - t0)
        except subprocess.TimeoutExpired:
            for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    out, err = proc.communicate(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            else:
                out, err = b"", b""
            return RunResult(None, (out or b"").decode("utf-8", "replace")[-OUTPUT_CAP:],
                             (err or b"").decode("utf-8", "replace")[-OUTPUT_CAP:], True, time.monotonic() - t0)

    def read(self, path: str) -> bytes | None:
        p = Path(path)
        return p.read_bytes() if p.is_file() else None

    def remove(self, path: str) -> None:
        if not path.startswith(self.board.workdir + "/"):
            raise ValueError(f"refusing to remove {path}: outside the board's workdir {self.board.workdir}")
        shutil.rmtree(path, ignore_errors=True)

    def remove_file(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)


def make_transport(board: Board, known_hosts: Path) -> Transport:
    return SshTransport(board, known_hosts) if board.transport == "ssh" else LocalTransport(board)
