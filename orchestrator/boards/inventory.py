"""``configs/boards.yaml``: the board inventory, validated by a pydantic schema (DESIGN §6).

No file → one ``local`` board (this host runs the agent as a subprocess), so ``dance bench``
works anywhere: latency always, energy where this host has a sensor, else ``null``.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.config import format_validation_error, read_yaml
from orchestrator.errors import UserError

DEFAULT_FILE = Path("configs/boards.yaml")
DEFAULT_KNOWN_HOSTS = Path(".dance/known_hosts")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"  # also an MLflow metric-name segment


class Measure(BaseModel):
    """The agent's protocol settings for every job (passed as its flags)."""

    model_config = ConfigDict(extra="forbid")
    duration: float = Field(5.0, gt=0, description="seconds per timed window")
    repeats: int = Field(3, ge=1)
    idle: float = Field(3.0, ge=0, description="idle-baseline seconds (0: net energy null)")
    warmup: float = Field(2.0, ge=0)
    warmup_iters: int = Field(3, ge=0)
    # Unset (the default): the agent sizes its windows from the sensor, at least 10 distinct sensor
    # updates each and 4 reads per update (a 0.42 s INA3221 gets 4.2 s windows, not 50 x 10 ms).
    min_samples: int | None = Field(None, ge=1, description="power samples per window (default: the agent's "
                                                            "sensor-update rule)")
    interval_ms: float | None = Field(None, gt=0, description="sampling interval (default: 4 reads per "
                                                              "sensor update)")
    threads: int = Field(0, ge=0, description="runtime intra-op threads (0: the runtime's default)")
    extra_args: list[str] = Field(default_factory=list, description="more agent flags, e.g. [--fp16]")


class Board(BaseModel):
    """One board: how to reach it and how to run the agent there."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    transport: Literal["ssh", "local"] = "ssh"
    host: str | None = None
    port: int = Field(22, ge=1, le=65535)
    user: str | None = None
    key_file: Path | None = None
    python: str | None = Field(None,
                               description="the board's Python; default python3 (ssh) or this interpreter (local)")
    power: str = "auto"
    runtime: Literal["onnxruntime", "trtexec", "torchscript"] = "onnxruntime"
    device: Literal["cpu", "cuda"] = "cpu"
    labels: list[str] = Field(default_factory=list)
    workdir: str = "/tmp/dance-agent"
    fs_root: str = "/"
    connect_timeout_s: float = Field(10.0, gt=0)
    keepalive_s: int = Field(15, ge=0)
    job_deadline_s: float = Field(900.0, gt=0, description="wall-clock limit of one measurement")

    @model_validator(mode="after")
    def _ssh_needs_host(self) -> "Board":
        if self.python is None:
            self.python = "python3" if self.transport == "ssh" else sys.executable
        if self.transport == "ssh":
            missing = [k for k in ("host", "user") if not getattr(self, k)]
            if missing:
                raise ValueError(f"transport ssh needs {' and '.join(missing)}")
        return self

    @field_validator("workdir", "fs_root")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"must be an absolute path on the board, got {v!r}")
        return v.rstrip("/") or "/"

    @property
    def label_set(self) -> set[str]:
        return set(self.labels) | {self.name}

    def key_path(self) -> str | None:
        return str(Path(os.path.expanduser(str(self.key_file)))) if self.key_file else None


class Inventory(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid")
    known_hosts: Path = DEFAULT_KNOWN_HOSTS
    measure: Measure = Field(default_factory=Measure)
    boards: list[Board] = Field(min_length=1)
    source: str = Field("embedded default", exclude=True)

    @model_validator(mode="after")
    def _unique(self) -> "Inventory":
        seen: set[str] = set()
        for b in self.boards:
            if b.name in seen:
                raise ValueError(f"board name {b.name!r} appears twice")
            seen.add(b.name)
        return self

    def board(self, name: str) -> Board:
        for b in self.boards:
            if b.name == name:
                return b
        raise UserError(f"{self.source}: no board named {name!r} (boards: {', '.join(b.name for b in self.boards)})")

    def matching(self, labels: list[str] | None) -> list[Board]:
        """Boards carrying every label (a board's name counts as one of its labels)."""
        want = set(labels or [])
        return [b for b in self.boards if want <= b.label_set]

    def known_hosts_path(self) -> Path:
        return Path(os.path.expanduser(str(self.known_hosts))).resolve()


def default_inventory() -> Inventory:
    """The embedded default: this host, as a ``local`` board running onnxruntime."""
    return Inventory(boards=[Board(name="local", transport="local", labels=["local"])], source="embedded default")


def load_inventory(path: str | Path | None = None) -> Inventory:
    """Read ``path`` (default ``configs/boards.yaml`` if it exists, else the embedded default)."""
    if path is None:
        if not DEFAULT_FILE.is_file():
            return default_inventory()
        path = DEFAULT_FILE
    p = Path(path)
    tree = read_yaml(p, "boards file")
    tree.pop("source", None)
    try:
        inv = Inventory.model_validate(tree)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, str(p))) from None
    inv.source = str(p)
    _resolve_paths(inv, p.parent, set_here="known_hosts" in tree)
    problems = _path_problems(inv)
    if problems:
        raise UserError(f"{p}: " + "; ".join(problems))
    return inv


def _resolve_paths(inv: Inventory, folder: Path, set_here: bool) -> None:
    """Relative paths written in a boards file are relative to that file's folder (the default
    known_hosts stays relative to the working directory, where `dance boards enroll` writes it)."""
    def absolute(value: Path) -> Path:
        v = Path(os.path.expanduser(str(value)))
        return v if v.is_absolute() else (folder / v).resolve()

    if set_here:
        inv.known_hosts = absolute(inv.known_hosts)
    for b in inv.boards:
        if b.key_file is not None:
            b.key_file = absolute(b.key_file)


def _path_problems(inv: Inventory) -> list[str]:
    """Every key file or known_hosts path that cannot work, found before any connection."""
    out = []
    for i, b in enumerate(inv.boards):
        if b.transport != "ssh" or b.key_file is None:
            continue
        key = Path(b.key_path())
        if not key.is_file():
            out.append(f"boards[{i}].key_file: {key}: no such file (board {b.name})")
        elif not os.access(key, os.R_OK):
            out.append(f"boards[{i}].key_file: {key}: not readable by this user (board {b.name})")
    kh = inv.known_hosts_path()
    if kh.is_dir():
        out.append(f"known_hosts: {kh} is a folder, not a file")
    elif not kh.exists():
        parent = next((d for d in kh.parents if d.exists()), None)
        if parent is not None and (not parent.is_dir() or not os.access(parent, os.W_OK)):
            out.append(f"known_hosts: {kh}: cannot be created ({parent} is not a writable folder)")
    return out


# -- board groups: interchangeable boards ------------------------------------------------------------------------
@dataclass
class BoardGroup:
    """Boards with the same label set: interchangeable hardware, by inventory convention.

    A bench measures each bucket once per group, on whichever of its boards is free, and names
    the figures after the group (``device.<group>.*``): the board's name when the group has one
    board, else its labels joined by ``+``.
    """

    name: str
    labels: list[str]
    boards: list[Board]

    @property
    def first(self) -> Board:
        return self.boards[0]


def board_groups(boards: list[Board]) -> list[BoardGroup]:
    """The boards grouped by label set, in the inventory's order."""
    groups: dict[tuple[str, ...], list[Board]] = {}
    for b in boards:
        groups.setdefault(tuple(sorted(set(b.labels))) or (f"board:{b.name}",), []).append(b)
    out = []
    for labels, bs in groups.items():
        name = bs[0].name if len(bs) == 1 else "+".join(labels)
        out.append(BoardGroup(name, [] if labels[0].startswith("board:") else list(labels), bs))
    return out


def board_address(b: Board) -> str:
    """Where a board is, as one string (the measurement cache keys its facts by it)."""
    return f"ssh:{b.user}@{b.host}:{b.port}:{b.workdir}:{b.fs_root}" if b.transport == "ssh" else f"local:{b.fs_root}"


def select_boards(boards_file: str | Path | None, labels: list[str] | None, primary: str | None,
                  key: str = "sweep.hil"):
    """(inventory restricted to ``labels``, its board groups, the primary group's name).

    ``key`` names the config section in errors (the sweep's ``sweep.hil``).
    """
    inv = load_inventory(boards_file)
    boards = inv.matching(labels)
    if not boards:
        raise UserError(f"{key}.labels {labels}: no board in {inv.source} carries them "
                        f"(boards: {', '.join(f'{b.name} {b.labels}' for b in inv.boards)})")
    sel = Inventory(known_hosts=inv.known_hosts, measure=inv.measure, boards=boards, source=inv.source)
    groups = board_groups(boards)
    names = [g.name for g in groups]
    chosen = primary or names[0]
    if chosen not in names:
        raise UserError(f"{key}.primary {chosen!r}: not a board kind of the selected boards ({', '.join(names)})")
    return sel, groups, chosen
