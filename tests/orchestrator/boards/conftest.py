"""Fixtures for the board tests: real Debian sshd on 127.0.0.1, each "board" this machine
running the real agent against an emulated TX2 tree whose rails follow a waveform."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sshd_helpers import FAST, Sshd, keygen  # noqa: E402

from device_agents import emulate  # noqa: E402
from orchestrator.boards import hostkeys  # noqa: E402
from orchestrator.boards.inventory import Board, Inventory, Measure  # noqa: E402


@pytest.fixture(scope="session")
def client_key(tmp_path_factory) -> Path:
    return keygen(tmp_path_factory.mktemp("client") / "id_ed25519")


@pytest.fixture
def shm():
    """Emulated trees are rewritten many times a second: keep them in memory like sysfs."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    d = tempfile.mkdtemp(prefix="dance-boards-", dir=base)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


class Fleet:
    """Boards made on demand: one sshd + one emulated TX2 tree (with its writer) each."""

    def __init__(self, tmp: Path, shm: Path, client_key: Path):
        self.tmp, self.shm, self.key = tmp, shm, client_key
        self.known_hosts = tmp / "known_hosts"
        self.sshds: dict[str, Sshd] = {}
        self.writers = []
        self.boards: list[Board] = []

    def add(self, name: str, labels=("tx2",), enroll: bool = True, writer: bool = True, **over) -> Board:
        root = self.shm / name
        if writer:
            proc, _ = emulate.start_writer(str(root), "tx2", {"base_w": 6.0, "sines": [{"amp_w": 1.0, "freq_hz": 0.7}]},
                                           rate_hz=50)
            self.writers.append(proc)
        else:
            emulate.build_tree(str(root), "tx2", power_w=6.0)
        emulate.write_fake_tools(str(root), "tx2")
        sshd = Sshd(self.tmp / f"sshd-{name}", self.key.with_suffix(".pub")).start()
        self.sshds[name] = sshd
        spec = dict(name=name, transport="ssh", host="127.0.0.1", port=sshd.port, user=_user(), key_file=self.key,
                    python=sys.executable, power="iio", labels=list(labels), workdir=str(self.tmp / f"work-{name}"),
                    fs_root=str(root), connect_timeout_s=5, keepalive_s=2, job_deadline_s=60)
        spec.update(over)
        board = Board(**spec)
        if enroll:
            hostkeys.enroll(board, self.known_hosts, yes=True, echo=lambda s: None)
        self.boards.append(board)
        return board

    def inventory(self, measure: Measure = FAST, boards=None) -> Inventory:
        return Inventory(known_hosts=self.known_hosts, measure=measure, boards=boards or self.boards,
                         source="test fleet")

    def close(self) -> None:
        for s in self.sshds.values():
            s.stop()
        for w in self.writers:
            emulate.stop_writer(w)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
def fleet(tmp_path, shm, client_key):
    f = Fleet(tmp_path, shm, client_key)
    try:
        yield f
    finally:
        f.close()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A real exported model (small DeepLabv3+) at 32x64."""
    from workers.export import Bucket, export_model
    from workers.models import build_model

    d = tmp_path_factory.mktemp("tiny")
    export_model(build_model("deeplabv3plus", num_classes=5, variant="small").eval(), d, "onnx", [Bucket(32, 64, 1.0)])
    return d / "model_32x64.onnx"
