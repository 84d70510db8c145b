"""`dance boards emulate`: a board on this machine (a real sshd, an emulated TX2 rail tree), started,
checked, measured through and stopped from the CLI, as a new user would."""
from __future__ import annotations

import io
import json
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from sshd_helpers import FAST, have_sshd

from orchestrator.boards import hostkeys
from orchestrator.boards.agentjob import Job, run_job
from orchestrator.boards.inventory import load_inventory
from orchestrator.boards.transport import SshTransport
from orchestrator.cli import main as dance
from orchestrator.commands.boards import check_board

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not have_sshd(),
                                 reason="needs Debian's openssh-server (/usr/sbin/sshd); .ci/run installs it")]


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = dance([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_emulated_board_starts_checks_measures_and_stops(tmp_path):
    boards = tmp_path / "boards.yaml"
    boards.write_text(f"# my fleet\nknown_hosts: {tmp_path / 'known_hosts'}\nmeasure: {{duration: 4}}\n"
                      "boards:\n  - name: here   # this host\n    transport: local\n    labels: [local]\n")
    d = tmp_path / "emu" / "tx2-emu"
    rc, out, err = _cli("boards", "emulate", "tx2-emu", "--layout", "tx2", "--boards", boards, "--dir", d)
    assert rc == 0, err
    pids = json.loads((d / "pids.json").read_text())
    sshd_pid, writer_pid = pids["sshd"]["pid"], pids["writer"]["pid"]
    try:
        assert not _gone(sshd_pid) and not _gone(writer_pid)
        assert f"dance boards check tx2-emu --boards {boards}" in out and "--labels tx2-emu" in out
        assert f"dance boards emulate tx2-emu --stop --boards {boards} --dir {d}" in out
        # the entry is added; the user's comments, settings and other boards stay
        text = boards.read_text()
        assert "# my fleet" in text and "# this host" in text
        inv = load_inventory(boards)
        assert [b.name for b in inv.boards] == ["here", "tx2-emu"] and inv.measure.duration == 4
        board = inv.board("tx2-emu")
        assert (board.transport, board.host, board.port, board.labels) == ("ssh", "127.0.0.1", pids["port"],
                                                                           ["emulated", "tx2"])
        assert board.python == sys.executable and board.fs_root == str(d / "tree")
        assert board.workdir.startswith(str(d)) and board.key_path() == str(d / "id_ed25519")
        assert hostkeys.known_key(tmp_path / "known_hosts", board) is not None

        rc, out, _ = _cli("boards", "check", "tx2-emu", "--boards", boards)
        assert rc == 0, out
        assert "onnxruntime 1." in out and "model quill" in out and "power auto=iio" in out and "VDD_IN" in out

        # the agent measures the emulated rails through the board's sshd (VDD_IN ~ 6 W ± 5 %)
        t = SshTransport(board, inv.known_hosts_path())
        try:
            doc = run_job(t, Job(kind="power"), "emu-power", FAST, tmp_path / "agent-cache")
        finally:
            t.close()
        assert doc["power_source"] == "iio" and 5.0 < doc["power_w_mean"] < 7.0, doc

        # a board Python without onnxruntime fails the check, saying what to install
        bare = tmp_path / "python-bare"
        bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")  # -S: no site-packages
        bare.chmod(0o755)
        res = check_board(board.model_copy(update={"python": str(bare)}), inv)
        assert res["checks"][-1][:2] == ("onnxruntime", False)
        assert "pip install onnxruntime" in res["checks"][-1][2]

        rc, out, _ = _cli("boards", "emulate", "--list", "--dir", d.parent)
        assert rc == 0 and "tx2-emu" in out and "alive" in out
    finally:
        rc, out, _ = _cli("boards", "emulate", "tx2-emu", "--stop", "--boards", boards, "--dir", d)
    assert rc == 0 and "stopped" in out and "kept" in out
    assert _gone(sshd_pid) and _gone(writer_pid)
    assert "tx2-emu" in [b.name for b in load_inventory(boards).boards]  # kept without --remove

    rc, out, _ = _cli("boards", "emulate", "tx2-emu", "--stop", "--remove", "--boards", boards, "--dir", d)
    assert rc == 0 and "already gone" in out  # stopping again is not an error, but it says so
    assert [b.name for b in load_inventory(boards).boards] == ["here"] and "# this host" in boards.read_text()
    rc, out, _ = _cli("boards", "emulate", "--list", "--dir", d.parent)
    assert "tx2-emu" in out and "dead" in out


def test_emulate_refuses_unknown_layout_a_running_name_and_a_busy_port(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a boards file made by the command keeps .dance/known_hosts relative to here
    boards = tmp_path / "configs" / "boards.yaml"
    d = tmp_path / "emu"
    rc, _, err = _cli("boards", "emulate", "e1", "--layout", "tx3", "--boards", boards, "--dir", d / "e1")
    assert rc == 2 and "unknown layout 'tx3'" in err and "orin-nx" in err
    assert not boards.exists() and not (d / "e1").exists()  # nothing made

    rc, out, err = _cli("boards", "emulate", "e1", "--layout", "orin", "--boards", boards, "--dir", d / "e1")
    assert rc == 0, err
    assert "created" in out  # the boards file did not exist
    pids = json.loads((d / "e1" / "pids.json").read_text())
    try:
        inv = load_inventory(boards)
        assert [b.name for b in inv.boards] == ["local", "e1"] and inv.board("e1").labels == ["emulated", "orin"]
        assert hostkeys.known_key(inv.known_hosts_path(), inv.board("e1")) is not None
        assert inv.known_hosts_path().is_relative_to(tmp_path.resolve())
        before = boards.read_text()

        rc, _, err = _cli("boards", "emulate", "e1", "--boards", boards, "--dir", d / "e1")
        assert rc == 2 and "already running" in err and "--stop" in err
        rc, _, err = _cli("boards", "emulate", "e2", "--port", pids["port"], "--boards", boards, "--dir", d / "e2")
        assert rc == 2 and f"port {pids['port']}" in err and "in use" in err
        rc, _, err = _cli("boards", "emulate", "local", "--boards", boards, "--dir", d / "local")
        assert rc == 2 and "not an emulated one" in err
        assert boards.read_text() == before and not (d / "e2").exists()
    finally:
        rc, _, _ = _cli("boards", "emulate", "e1", "--stop", "--boards", boards, "--dir", d / "e1")
    assert rc == 0
    assert _gone(pids["sshd"]["pid"]) and _gone(pids["writer"]["pid"])
    assert Path(boards).is_file()
