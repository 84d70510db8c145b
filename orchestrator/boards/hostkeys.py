"""Host keys: the platform's own known_hosts (never ``~/.ssh/known_hosts``), checked with
paramiko's RejectPolicy semantics; enrolment prints the SHA256 fingerprint and stores the
key only on confirmation; a changed key is refused loudly and replaced only on request.
"""
from __future__ import annotations

import base64
import hashlib
import os
import socket
from pathlib import Path
from typing import Callable

import paramiko

from orchestrator.boards.errors import BoardError
from orchestrator.boards.inventory import Board


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:…`` fingerprint (unpadded base64 of the key blob's sha256)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_entry(board: Board) -> str:
    """The known_hosts name of a board: ``host`` on port 22, else ``[host]:port``."""
    return board.host if board.port == 22 else f"[{board.host}]:{board.port}"


def load(path: Path) -> paramiko.HostKeys:
    keys = paramiko.HostKeys()
    if path.is_file():
        try:
            keys.load(str(path))
        except (OSError, paramiko.SSHException) as exc:
            raise BoardError("host_key", str(path), f"cannot read known_hosts: {exc}") from None
    return keys


def known_key(path: Path, board: Board) -> paramiko.PKey | None:
    """The key stored for ``board`` (any type), or None."""
    entry = load(path).lookup(host_entry(board))
    if not entry:
        return None
    return next(iter(entry.values()))


class PlatformPolicy(paramiko.MissingHostKeyPolicy):
    """RejectPolicy with a message that says what to do (paramiko raises it for unknown keys;
    a *changed* key never gets here: paramiko raises BadHostKeyException, mapped in transport)."""

    def __init__(self, board: Board, known_hosts: Path):
        self.board = board
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        raise BoardError("host_key", self.board.name,
                         f"unknown host key {key.get_name()} {fingerprint(key)} for {host_entry(self.board)} "
                         f"(not in {self.known_hosts}); check it and run `dance boards enroll {self.board.name}`")


def changed_key_error(board: Board, known_hosts: Path, got: paramiko.PKey, expected: paramiko.PKey) -> BoardError:
    return BoardError("host_key", board.name,
                      f"HOST KEY CHANGED for {host_entry(board)}: it now offers {got.get_name()} {fingerprint(got)} "
                      f"but {known_hosts} holds {expected.get_name()} {fingerprint(expected)}. This may be an attack "
                      f"(or a reinstalled board). Refused; after checking, "
                      f"`dance boards enroll {board.name} --replace`")


def fetch_key(board: Board, timeout: float | None = None) -> paramiko.PKey:
    """The host key the board offers (key exchange only, no authentication)."""
    timeout = timeout or board.connect_timeout_s
    try:
        sock = socket.create_connection((board.host, board.port), timeout=timeout)
    except OSError as exc:
        raise BoardError("unreachable", board.name, f"cannot connect to {board.host}:{board.port}: {exc}") from None
    t = paramiko.Transport(sock)
    try:
        t.banner_timeout = timeout
        t.start_client(timeout=timeout)
        return t.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise BoardError("unreachable", board.name,
                         f"SSH handshake with {board.host}:{board.port} failed: {exc}") from None
    finally:
        t.close()


def enroll(board: Board, known_hosts: Path, *, yes: bool = False, replace: bool = False,
           confirm: Callable[[str], bool] | None = None, echo: Callable[[str], None] = print) -> str:
    """Fetch the board's key, show its fingerprint, store it on confirmation.

    Returns ``"stored"``, ``"replaced"``, ``"unchanged"`` or ``"declined"``. A different key already on
    file is refused (BoardError ``host_key``) unless ``replace``.
    """
    if board.transport != "ssh":
        raise BoardError("usage", board.name, "a local board has no host key to enrol")
    key = fetch_key(board)
    fp = fingerprint(key)
    echo(f"{board.name}: {host_entry(board)} offers {key.get_name()} {fp}")
    old = load(known_hosts).lookup(host_entry(board))
    if old and key.get_name() in old and old[key.get_name()] == key:
        echo(f"{board.name}: already enrolled with this key ({known_hosts})")
        return "unchanged"
    if old and not replace:
        raise changed_key_error(board, known_hosts, key, next(iter(old.values())))
    if not yes:
        ask = confirm or (lambda q: input(q).strip().lower() in ("y", "yes"))
        if not ask(f"Store this key for {board.name} in {known_hosts}? [y/N] "):
            echo(f"{board.name}: not stored")
            return "declined"
    store(known_hosts, board, key)
    echo(f"{board.name}: key {'replaced' if old else 'stored'} in {known_hosts}")
    return "replaced" if old else "stored"


def store(known_hosts: Path, board: Board, key: paramiko.PKey) -> None:
    """Write the key for the board (dropping any old key of that host), atomically."""
    keys = load(known_hosts)
    name = host_entry(board)
    kept = paramiko.HostKeys()
    for entry in keys._entries:  # paramiko has no public removal; rebuild without this host
        if name not in entry.hostnames:
            kept._entries.append(entry)
    kept.add(name, key.get_name(), key)
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    tmp = known_hosts.with_name(f".{known_hosts.name}.tmp{os.getpid()}")
    kept.save(str(tmp))
    os.chmod(tmp, 0o600)
    os.replace(tmp, known_hosts)
