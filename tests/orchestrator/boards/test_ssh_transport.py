"""Host keys, auth, uploads and typed failures against a real OpenSSH server (never a mock)."""
from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from sshd_helpers import FAST, Sshd, have_sshd, keygen

from orchestrator.boards import hostkeys
from orchestrator.boards.agentjob import Job, run_job
from orchestrator.boards.errors import BoardError
from orchestrator.boards.transport import SshTransport
from orchestrator.cli import main as dance
from workers.digest import file_sha256

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not have_sshd(),
                                 reason="needs Debian's openssh-server (/usr/sbin/sshd); .ci/run installs it")]


def _cli(*argv: str) -> tuple[int, str]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = dance(list(argv))
    return rc, buf.getvalue()


def _boards_file(fleet, tmp_path) -> Path:
    import yaml

    inv = fleet.inventory()
    p = tmp_path / "boards.yaml"
    p.write_text(yaml.safe_dump(inv.model_dump(mode="json")))
    return p


def test_unknown_host_key_is_refused_and_enroll_stores_its_fingerprint(fleet, tmp_path, capsys):
    board = fleet.add("tx2-u", enroll=False, writer=False)
    with pytest.raises(BoardError) as e:
        SshTransport(board, fleet.known_hosts).connect()
    assert e.value.kind == "host_key" and "dance boards enroll tx2-u" in str(e.value)
    assert not fleet.known_hosts.exists()  # RejectPolicy: nothing stored behind the user's back
    boards = _boards_file(fleet, tmp_path)
    rc, _ = _cli("boards", "check", "tx2-u", "--boards", str(boards))
    assert rc == 1
    rc, out = _cli("boards", "enroll", "tx2-u", "--boards", str(boards), "--yes")
    assert rc == 0
    # the fingerprint printed is OpenSSH's own for the server's host key
    want = subprocess.run(["ssh-keygen", "-lf", str(fleet.sshds["tx2-u"].host_key) + ".pub"], capture_output=True,
                          text=True, check=True).stdout.split()[1]
    assert want in out
    SshTransport(board, fleet.known_hosts).connect()


def test_enroll_asks_and_declining_stores_nothing(fleet):
    board = fleet.add("tx2-d", enroll=False, writer=False)
    assert hostkeys.enroll(board, fleet.known_hosts, confirm=lambda q: False, echo=lambda s: None) == "declined"
    assert hostkeys.known_key(fleet.known_hosts, board) is None
    assert hostkeys.enroll(board, fleet.known_hosts, confirm=lambda q: True, echo=lambda s: None) == "stored"
    assert hostkeys.known_key(fleet.known_hosts, board) is not None


def test_changed_host_key_is_refused_loudly_and_replaced_only_on_request(fleet, tmp_path):
    board = fleet.add("tx2-c", writer=False)
    SshTransport(board, fleet.known_hosts).connect()
    old = fleet.sshds["tx2-c"]
    old.stop()
    new = Sshd(tmp_path / "sshd-new", fleet.key.with_suffix(".pub"), port=board.port).start()  # same address, new key
    fleet.sshds["tx2-c"] = new
    before = fleet.known_hosts.read_text()
    with pytest.raises(BoardError) as e:
        SshTransport(board, fleet.known_hosts).connect()
    assert e.value.kind == "host_key" and "HOST KEY CHANGED" in str(e.value) and "--replace" in str(e.value)
    with pytest.raises(BoardError, match="HOST KEY CHANGED"):
        hostkeys.enroll(board, fleet.known_hosts, yes=True, echo=lambda s: None)
    assert fleet.known_hosts.read_text() == before  # never overwritten without --replace
    assert hostkeys.enroll(board, fleet.known_hosts, yes=True, replace=True, echo=lambda s: None) == "replaced"
    SshTransport(board, fleet.known_hosts).connect()


def test_wrong_user_key_is_an_auth_error(fleet, tmp_path):
    board = fleet.add("tx2-k", writer=False)
    other = keygen(tmp_path / "other_key")
    bad = board.model_copy(update={"key_file": other})
    with pytest.raises(BoardError) as e:
        SshTransport(bad, fleet.known_hosts).connect()
    assert e.value.kind == "auth" and not e.value.transient


def test_unreachable_board_is_typed(fleet):
    board = fleet.add("tx2-gone", writer=False)
    fleet.sshds["tx2-gone"].stop()
    with pytest.raises(BoardError) as e:
        SshTransport(board, fleet.known_hosts).connect()
    assert e.value.kind == "unreachable" and e.value.transient


def test_upload_is_verified_on_the_board_and_skipped_by_hash(fleet, tmp_path):
    board = fleet.add("tx2-up", writer=False)
    data = os.urandom(300_000)
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    remote = f"{board.workdir}/blobs/{sha}.bin"

    class Corrupting(SshTransport):
        """Flips one byte in transit on the first `corrupt` uploads (what a bad link or disk would do)."""
        corrupt = 1
        uploads = 0

        def _upload(self, local, tmp):
            self.uploads += 1
            if self.uploads > self.corrupt:
                return super()._upload(local, tmp)
            bad = bytearray(Path(local).read_bytes())
            bad[len(bad) // 2] ^= 0xFF
            with self.sftp().open(tmp, "wb") as f:
                f.write(bytes(bad))

    t = Corrupting(board, fleet.known_hosts)
    assert t.put(src, remote, sha) is True  # first copy corrupted, caught by sha256 on the board, sent again
    assert t.uploads == 2
    assert file_sha256(remote) == sha
    assert t.put(src, remote, sha) is False and t.uploads == 2  # the board holds it: not sent again
    t.close()

    t2 = Corrupting(board, fleet.known_hosts)
    t2.corrupt = 99
    remote2 = f"{board.workdir}/blobs/other.bin"
    with pytest.raises(BoardError) as e:
        t2.put(src, remote2, sha)
    assert e.value.kind == "upload" and "corrupted" in str(e.value)
    assert not Path(remote2).exists()  # never renamed into place
    assert not [p for p in Path(remote2).parent.iterdir() if p.name.endswith(".part")]  # temp copies removed
    t2.close()


def test_commands_are_quoted(fleet, tmp_path):
    board = fleet.add("tx2-q", writer=False)
    t = SshTransport(board, fleet.known_hosts)
    evil = tmp_path / "x; touch pwned"
    res = t.run(["/bin/echo", "a b", "$(touch pwned2)", "it's"], f"{board.workdir}/jobs/q q", 20)
    assert res.rc == 0 and res.stdout == "a b $(touch pwned2) it's\n"
    assert not (Path(f"{board.workdir}/jobs/q q") / "pwned2").exists() and not evil.exists()
    t.close()


def test_emulated_board_sessions_skip_this_machines_bashrc(fleet):
    """The emulated board's commands run in a shell that does not source the login user's ~/.bashrc
    (bash skips it when nested: SHLVL 2), as on a board whose .bashrc returns for non-interactive
    shells. Here ~/.bashrc runs `pyenv init`, and one stale pyenv lock made every job wait 60 s and
    time out (CI, 2026-12-03)."""
    board = fleet.add("tx2-rc", writer=False)
    t = SshTransport(board, fleet.known_hosts)
    res = t.shell("echo $SHLVL; echo $PATH", 20)
    assert res.rc == 0, res
    shlvl, path = res.stdout.split()
    assert shlvl == "2" and "pyenv" not in path and res.seconds < 10
    t.close()


def test_stdout_and_stderr_are_drained_together(fleet):
    """A command writing megabytes to both streams finishes (no pipe deadlock) and the tail is kept."""
    board = fleet.add("tx2-io", writer=False)
    t = SshTransport(board, fleet.known_hosts)
    code = ("import sys\nfor i in range(20000):\n"
            "    sys.stdout.write('o'*100+'\\n'); sys.stderr.write('e'*100+'\\n')\nprint('END')")
    res = t.run([sys.executable, "-c", code], f"{board.workdir}/jobs/io", 60)
    assert res.rc == 0 and not res.timed_out
    assert res.stdout.endswith("END\n") and res.stderr.count("e" * 100) > 1000
    t.close()


def test_bad_model_is_typed_and_not_retried(fleet, tmp_path):
    board = fleet.add("tx2-bm", writer=False)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx model at all" * 10)
    t = SshTransport(board, fleet.known_hosts)
    with pytest.raises(BoardError) as e:
        run_job(t, Job(model=str(junk)), "bm1", FAST, tmp_path / "cache")
    assert e.value.kind == "bad_model" and not e.value.transient
    assert not Path(f"{board.workdir}/jobs/bm1").exists()  # job folder cleaned on failure too
    t.close()


def test_boards_check_reports_python_and_probe(fleet, tmp_path):
    fleet.add("tx2-ok", writer=False)
    rc, out = _cli("boards", "check", "--boards", str(_boards_file(fleet, tmp_path)))
    assert rc == 0, out
    assert re.search(r"ok\s+python\s+\S+ 3\.\d+", out)
    assert "model quill" in out and "L4T 32.6.1" in out and "power auto=iio" in out and "VDD_IN" in out


def test_thermal_throttling_is_a_typed_transient_failure(fleet, tmp_path, tiny_model):
    from device_agents import emulate

    board = fleet.add("tx2-hot", writer=False)
    emulate.set_zone_temp(board.fs_root, 0, 97.0)  # BCPU-therm above its 96 °C passive trip point
    t = SshTransport(board, fleet.known_hosts)
    with pytest.raises(BoardError) as e:
        # the agent's thermal gate waits at most 1 s for the zone to cool, then measures with a warning
        run_job(t, Job(model=str(tiny_model)), "hot1",
                FAST.model_copy(update={"extra_args": ["--thermal-timeout", "1"]}), tmp_path / "cache")
    assert e.value.kind == "thermal" and e.value.transient and "BCPU-therm" in str(e.value)
    t.close()


def test_shell_past_its_deadline_says_timed_out_on_both_transports(fleet, tmp_path):
    """`Transport.shell` keeps one contract: a line past its deadline is stopped and reported timed_out
    (the local transport used to raise subprocess.TimeoutExpired instead)."""
    from orchestrator.boards.inventory import Board
    from orchestrator.boards.transport import LocalTransport

    ssh_board = fleet.add("tx2-deadline", writer=False)
    local_board = Board(name="here", transport="local", workdir=str(tmp_path / "agent"))
    for t in (SshTransport(ssh_board, fleet.known_hosts), LocalTransport(local_board)):
        res = t.shell("sleep 30", 1.0)
        assert res.timed_out and res.rc is None and res.seconds < 15, (type(t).__name__, res)
        ok = t.shell("echo out; echo err >&2; exit 3", 30)
        assert (ok.rc, ok.stdout, ok.stderr, ok.timed_out) == (3, "out\n", "err\n", False), type(t).__name__
        t.close()
