"""Emulated boards (``dance boards emulate``): a board on this machine, reached exactly like a Jetson.

One emulated board lives in its folder (default ``.dance/emulated/NAME/``):

* ``sshd``: Debian's ``/usr/sbin/sshd -D`` on 127.0.0.1 (its own host key, accepting the folder's
  client key for the current user), in its own session, so it outlives the command;
* ``tree/``: an emulated sysfs tree in a real layout (``device_agents.emulate``), whose writer makes
  the rails follow a slowly varying waveform at the layout's sensor rate, also in its own session;
* the board's entry in the boards file (labels ``[emulated, <layout>]``, ``python`` = this
  interpreter, so onnxruntime is importable), its host key stored in the inventory's known_hosts;
* ``pids.json``: both processes by PID and start time (a reused PID is never signalled).

:func:`stop` ends both process groups by those PIDs (SIGTERM, SIGKILL after a grace period), never
by name. The boards file is edited as text between marker comments, so the user's comments and
other boards stay as they are; an edit that would not read back as intended is written as plain
YAML instead (and said so).
"""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import paramiko
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from device_agents import emulate
from orchestrator.boards import hostkeys
from orchestrator.boards.inventory import DEFAULT_FILE, NAME_PATTERN, Board, Inventory, load_inventory
from orchestrator.config import format_validation_error, read_yaml
from orchestrator.errors import UserError
from orchestrator.processes import GRACE_S, free_port, port_free, running, start_time, stop_group

SSHD = "/usr/sbin/sshd"
DEFAULT_PARENT = Path(".dance/emulated")
#: the Jetson layouts of device_agents.emulate (``rapl`` is an Intel host, not a board)
LAYOUTS = tuple(x for x in emulate.LAYOUTS if x != "rapl")
#: the module's mean power per layout (W); the waveform varies ±5 % around it with a 50 s period
POWER_W = {"tx2": 6.0, "orin": 15.0, "orin-nx": 10.0, "nano": 4.0, "agx-xavier": 15.0, "thor": 40.0}
#: writes per second where the layout has no sensor averaging period (Thor's INA238); the INA3221
#: layouts publish at their own refresh (0.42 s), as the hardware does
WRITER_RATE_HZ = 10.0
PIDS = "pids.json"


# -- sshd --------------------------------------------------------------------------------------------------------
def have_sshd() -> bool:
    return os.access(SSHD, os.X_OK)


def make_key(path: Path, comment: str = "dance-emulated") -> Path:
    """A passphrase-less ed25519 key pair at ``path`` (+ ``.pub``), OpenSSH format; kept if present."""
    pub = path.with_name(path.name + ".pub")
    if path.is_file() and pub.is_file():
        return path
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    pub.write_bytes(public + f" {comment}\n".encode())
    return path


def sshd_argv(folder: Path, port: int, host_key: Path, authorized: Path) -> list[str]:
    """``sshd -D`` on 127.0.0.1:port: key authentication only, for the keys in ``authorized``; an
    empty config file of its own (never the system's /etc/ssh/sshd_config); sessions that skip the
    login user's ~/.bashrc, as on a board."""
    opts = {
        "ListenAddress": "127.0.0.1", "Port": str(port), "HostKey": str(host_key),
        "AuthorizedKeysFile": str(authorized), "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no", "PubkeyAuthentication": "yes", "UsePAM": "no",
        "StrictModes": "no", "PidFile": "none", "PermitRootLogin": "prohibit-password",
        "LogLevel": "VERBOSE", "MaxSessions": "64", "MaxStartups": "64",
        "Subsystem": "sftp internal-sftp", "PermitUserEnvironment": "no",
        # A board's non-interactive shell skips ~/.bashrc (Ubuntu's returns at once when not interactive);
        # bash run by sshd sources it unless it is nested (SHLVL >= 2). This machine's ~/.bashrc runs
        # `pyenv init`, whose rehash waits 60 s on a lock left by any killed shell: every job would time out.
        "SetEnv": "SHLVL=1",
    }
    argv = [SSHD, "-D", "-e", "-f", str(folder / "sshd_config")]
    for k, v in opts.items():
        argv += ["-o", f"{k}={v}"]
    return argv


def start_sshd(folder: Path, port: int, host_key: Path, authorized: Path, log: Path,
               timeout: float = 10.0) -> subprocess.Popen:
    """Start sshd in its own session (process group = its PID), output to ``log``, and wait for its
    banner. RuntimeError (with the log's tail) when it exits or stays silent."""
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege-separation dir (Debian's unit makes it)
    (folder / "sshd_config").write_text("")
    with open(log, "ab") as out:
        proc = subprocess.Popen(sshd_argv(folder, port, host_key, authorized), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited {proc.returncode}: {_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return proc
        except OSError:
            time.sleep(0.05)
    stop_group(proc.pid, None, grace=2.0)
    raise RuntimeError(f"sshd on port {port} did not answer in {timeout:.0f} s: {_tail(log)}")


def _tail(log: Path, n: int = 1500) -> str:
    try:
        return log.read_text(errors="replace")[-n:].strip() or "(no output)"
    except OSError:
        return "(no log)"


# -- the boards file ---------------------------------------------------------------------------------------------
def _markers(name: str) -> tuple[str, str]:
    return f"# >>> dance boards emulate {name}", f"# <<< dance boards emulate {name}"


def _block(name: str, entry: dict, indent: str) -> list[str]:
    begin, end = _markers(name)
    body = yaml.safe_dump([entry], sort_keys=False, default_flow_style=None, width=1000).splitlines()
    return [indent + begin, *(indent + line for line in body), indent + end]


def _marked(lines: list[str], name: str) -> tuple[int, int] | None:
    begin, end = _markers(name)
    starts = [i for i, line in enumerate(lines) if line.strip() == begin]
    if not starts:
        return None
    for j in range(starts[0] + 1, len(lines)):
        if lines[j].strip() == end:
            return starts[0], j
    return None


def _insert_at(lines: list[str]) -> tuple[int, str] | None:
    """Where a new item of the block list ``boards:`` goes (after its last line), and its indent."""
    top = [i for i, line in enumerate(lines) if line.split("#", 1)[0].rstrip() == "boards:"]
    if not top:
        return None
    at, indent = len(lines), None
    for j in range(top[0] + 1, len(lines)):
        line, stripped = lines[j], lines[j].strip()
        if not stripped or stripped.startswith("#"):
            continue
        if indent is None and stripped.startswith("- "):
            indent = line[:len(line) - len(line.lstrip())]
        if not line[0].isspace() and not stripped.startswith("- "):
            at = j  # the next top-level key
            while at > top[0] + 1 and (not lines[at - 1].strip() or lines[at - 1].startswith("#")):
                at -= 1
            break
    return at, "  " if indent is None else indent


def _validate(tree: dict, path: Path) -> None:
    try:
        Inventory.model_validate(tree)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, str(path))) from None


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _save(path: Path, lines: list[str] | None, want: dict, notes: list[str]) -> None:
    """Write the edited text if it reads back as ``want``; else ``want`` as plain YAML (comments lost)."""
    if lines is not None:
        text = "\n".join(lines) + "\n"
        try:
            if yaml.safe_load(text) == want:
                _write_atomic(path, text)
                return
        except yaml.YAMLError:
            pass
    _write_atomic(path, yaml.safe_dump(want, sort_keys=False, default_flow_style=None, width=1000))
    notes.append(f"{path} rewritten as plain YAML: its comments were not kept")


def _refuse_other_board(tree: dict, path: Path, name: str) -> None:
    for b in tree.get("boards") or []:
        if isinstance(b, dict) and b.get("name") == name and "emulated" not in (b.get("labels") or []):
            raise UserError(f"{path} already has a board named {name!r} that is not an emulated one "
                            f"(its labels lack `emulated`): choose another name")


def check_boards_file(path: Path, name: str) -> None:
    """What :func:`put_board` would refuse, before anything starts: a boards file that does not read
    or validate, or a board ``name`` in it that is not an emulated one."""
    tree = read_yaml(path, "boards file")
    _validate(tree, path)
    _refuse_other_board(tree, path, name)


NEW_FILE = """\
# Board inventory for `dance boards` and `dance bench` (reference: docs/boards.md).
# Created by `dance boards emulate`; the board between its marker comments is rewritten by that command.
# known_hosts: unset, so the platform's default (.dance/known_hosts), never ~/.ssh/known_hosts
boards:
  # This host, running the agent as a subprocess (the embedded default without a boards file).
  - name: local
    transport: local
    labels: [local]
"""


def put_board(path: Path, entry: dict) -> list[str]:
    """Add or update the emulated board ``entry`` in the boards file ``path`` (created if missing);
    other boards and settings, and comments, are kept. Returns notes for the user."""
    notes: list[str] = []
    name = entry["name"]
    if not path.exists():
        text = NEW_FILE
        notes.append(f"{path} created (with the `local` board, the default without a boards file)")
    else:
        text = path.read_text()
        read_yaml(path, "boards file")
    tree = yaml.safe_load(text) or {}
    if not isinstance(tree, dict):
        raise UserError(f"{path}: the top level must be a mapping of sections")
    _refuse_other_board(tree, path, name)
    boards = list(tree.get("boards") or [])
    old = next((i for i, b in enumerate(boards) if isinstance(b, dict) and b.get("name") == name), None)
    if old is None:
        boards.append(entry)
    else:
        boards[old] = entry
    want = dict(tree, boards=boards)
    _validate(want, path)
    lines = text.splitlines()
    span = _marked(lines, name)
    if span is not None:
        indent = lines[span[0]][:len(lines[span[0]]) - len(lines[span[0]].lstrip())]
        lines[span[0]:span[1] + 1] = _block(name, entry, indent)
    elif old is None and (where := _insert_at(lines)) is not None:
        at, indent = where
        lines[at:at] = _block(name, entry, indent)
    elif old is None and "boards" not in tree:
        lines += ["boards:", *_block(name, entry, "  ")]
    else:
        lines = None
    _save(path, lines, want, notes)
    return notes


def remove_board(path: Path, name: str) -> list[str]:
    """Remove the emulated board ``name`` from the boards file. Returns notes for the user."""
    if not path.is_file():
        return [f"{path} does not exist: no entry to remove"]
    text = path.read_text()
    tree = read_yaml(path, "boards file")
    boards = list(tree.get("boards") or [])
    keep = [b for b in boards if not (isinstance(b, dict) and b.get("name") == name)]
    if len(keep) == len(boards):
        return [f"{path} has no board {name!r}: nothing removed"]
    if not keep:
        return [f"{name} is the only board in {path}: its entry is kept (a boards file needs one board)"]
    notes: list[str] = []
    lines = text.splitlines()
    span = _marked(lines, name)
    if span is not None:
        del lines[span[0]:span[1] + 1]
    _save(path, lines if span is not None else None, dict(tree, boards=keep), notes)
    return [f"{name} removed from {path}"] + notes


# -- start, stop, list -------------------------------------------------------------------------------------------
@dataclass
class Started:
    name: str
    layout: str
    folder: Path
    boards_file: Path
    known_hosts: Path
    board: Board
    sshd_pid: int
    writer_pid: int
    fingerprint: str
    power_w: float
    refresh_s: float | None
    notes: list[str] = field(default_factory=list)


def board_folder(name: str, folder: str | Path | None = None) -> Path:
    return Path(folder if folder is not None else DEFAULT_PARENT / name).absolute()


def read_pids(folder: Path) -> dict | None:
    try:
        return json.loads((folder / PIDS).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder / PIDS}: cannot read it ({exc})") from None


def state(rec: dict) -> dict[str, bool]:
    """Which of the recorded processes still run (the same PID *and* start time)."""
    return {k: running(rec[k]["pid"], rec[k].get("start")) for k in ("sshd", "writer") if rec.get(k)}


def _check_name(name: str) -> None:
    if not re.match(NAME_PATTERN, name or ""):
        raise UserError(f"board name {name!r}: letters, digits, _ . - only, starting with a letter or digit")


def _refuse_start(name: str, layout: str, d: Path, boards: Path, port: int | None, folder_given: bool) -> int:
    """Every reason not to start, before anything starts; the port to use."""
    _check_name(name)
    if layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r}: one of {', '.join(LAYOUTS)}")
    if not have_sshd():
        raise UserError(f"an emulated board needs OpenSSH's server {SSHD}: apt-get install openssh-server")
    rec = read_pids(d)
    up = state(rec) if rec else {}
    if any(up.values()):
        alive = ", ".join(f"{k} pid {rec[k]['pid']}" for k, on in up.items() if on)
        raise UserError(f"emulated board {name} is already running ({alive}, port {rec.get('port')}; {d}); "
                        f"stop it first: dance boards emulate {name} --stop" + (f" --dir {d}" if folder_given else ""))
    if boards.is_file():  # a broken boards file, or a real board of that name
        check_boards_file(boards, name)
    if port is not None:
        if not 1 <= port <= 65535:
            raise UserError(f"--port {port}: not a TCP port")
        if not port_free(port):
            raise UserError(f"port {port} on 127.0.0.1 is in use: choose another --port, "
                            f"or leave it out for a free one")
        return port
    if rec and rec.get("port") and port_free(int(rec["port"])):
        return int(rec["port"])  # the same address as last time
    return free_port()


def _keys(d: Path, name: str) -> tuple[Path, Path, Path]:
    """(client key, host key, authorized_keys) in the board's folder, made once and reused."""
    client = make_key(d / "id_ed25519")
    host_key = make_key(d / "ssh_host_ed25519_key", comment=f"dance-emulated-{name}")
    authorized = d / "authorized_keys"
    authorized.write_text(client.with_name(client.name + ".pub").read_text())
    authorized.chmod(0o600)
    return client, host_key, authorized


def _start_writer(tree: Path, layout: str) -> dict:
    """The rail tree's writer, detached; its record for pids.json (with the refresh it runs at)."""
    shutil.rmtree(tree, ignore_errors=True)  # the layout may differ from last time
    power = POWER_W[layout]
    waveform = {"base_w": power, "sines": [{"amp_w": 0.05 * power, "freq_hz": 0.02}]}
    try:
        proc, _ = emulate.start_writer(str(tree), layout, waveform, rate_hz=WRITER_RATE_HZ, detach=True)
    except RuntimeError as exc:
        raise UserError(f"the rail writer did not start: {exc} (log: {tree / 'writer.log'})") from None
    emulate.write_fake_tools(str(tree), layout)  # tegrastats, nvpmodel, trtexec stand-ins under the tree
    refresh = json.loads((tree / "waveform.json").read_text()).get("refresh_s")
    return {"pid": proc.pid, "start": start_time(proc.pid), "power_w": power, "refresh_s": refresh}


def start(name: str, layout: str = "tx2", boards_file: str | Path | None = None, folder: str | Path | None = None,
          port: int | None = None) -> Started:
    """Start the emulated board ``name`` (see the module's docstring); UserError when it cannot."""
    d = board_folder(name, folder)
    boards = Path(boards_file if boards_file is not None else DEFAULT_FILE).absolute()
    port = _refuse_start(name, layout, d, boards, port, folder is not None)
    d.mkdir(parents=True, exist_ok=True)
    client, host_key, authorized = _keys(d, name)
    try:
        sshd = start_sshd(d, port, host_key, authorized, d / "sshd.log")
    except RuntimeError as exc:
        raise UserError(f"sshd for {name} did not start on 127.0.0.1:{port}: {exc}") from None
    procs = {"sshd": {"pid": sshd.pid, "start": start_time(sshd.pid)}}
    try:
        procs["writer"] = writer = _start_writer(d / "tree", layout)
        _write_atomic(d / PIDS, json.dumps({
            "name": name, "layout": layout, "port": port, "boards_file": str(boards), **procs,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=1) + "\n")
        entry = {"name": name, "transport": "ssh", "host": "127.0.0.1", "port": port,
                 "user": pwd.getpwuid(os.getuid()).pw_name, "key_file": str(client), "python": sys.executable,
                 "power": "auto", "runtime": "onnxruntime", "labels": ["emulated", layout],
                 "workdir": str(d / "work"), "fs_root": str(d / "tree")}
        notes = put_board(boards, entry)
        inv = load_inventory(boards)
        key = paramiko.Ed25519Key.from_private_key_file(str(host_key))
        hostkeys.store(inv.known_hosts_path(), inv.board(name), key)  # our own sshd: its key is known
    except BaseException:
        for p in procs.values():
            stop_group(p["pid"], p["start"], grace=2.0)
        raise
    return Started(name=name, layout=layout, folder=d, boards_file=boards, known_hosts=inv.known_hosts_path(),
                   board=inv.board(name), sshd_pid=sshd.pid, writer_pid=writer["pid"],
                   fingerprint=hostkeys.fingerprint(key), power_w=writer["power_w"], refresh_s=writer["refresh_s"],
                   notes=notes)


def stop(name: str, boards_file: str | Path | None = None, folder: str | Path | None = None,
         remove: bool = False, grace: float = GRACE_S) -> list[str]:
    """Stop both processes of the emulated board ``name`` by their recorded PIDs; with ``remove``,
    drop its entry from the boards file. Returns what happened, line by line (gone is not an error)."""
    _check_name(name)
    d = board_folder(name, folder)
    rec = read_pids(d)
    out: list[str] = []
    if rec is None:
        out.append(f"{name}: nothing recorded in {d / PIDS}: not started there, nothing to stop")
    else:
        for k in ("writer", "sshd"):
            p = rec.get(k)
            if not p:
                continue
            how = stop_group(p["pid"], p.get("start"), grace)
            out.append(f"{name}: {k} pid {p['pid']} " + {"gone": "was already gone", "stopped": "stopped",
                                                         "killed": f"killed (SIGKILL after {grace:.0f} s)"}[how])
        rec["stopped"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        _write_atomic(d / PIDS, json.dumps(rec, indent=1) + "\n")
    path = Path(boards_file if boards_file is not None else (rec or {}).get("boards_file") or DEFAULT_FILE)
    if remove:
        out += remove_board(path, name)
    else:
        out.append(f"{name}: its entry in {path} is kept (start it again with `dance boards emulate {name}`; "
                   f"--remove drops it)")
    return out


def list_emulated(parent: str | Path | None = None) -> list[dict]:
    """Emulated boards recorded under ``parent`` (its subfolders, or the folder itself): name, layout,
    port, folder, and which processes still run."""
    root = Path(parent if parent is not None else DEFAULT_PARENT).absolute()
    folders = ([root] if (root / PIDS).is_file() else []) + sorted(p.parent for p in root.glob(f"*/{PIDS}"))
    out = []
    for d in folders:
        try:
            rec = read_pids(d)
        except UserError:
            continue
        if not rec:
            continue
        up = state(rec)
        out.append({"name": rec.get("name", d.name), "layout": rec.get("layout"), "port": rec.get("port"),
                    "folder": d, "boards_file": rec.get("boards_file"),
                    "sshd_pid": (rec.get("sshd") or {}).get("pid"), "writer_pid": (rec.get("writer") or {}).get("pid"),
                    "processes": up, "state": ("alive" if up and all(up.values()) else
                                               "dead" if not any(up.values()) else "partly alive")})
    return out
