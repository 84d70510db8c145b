"""The live trial table: plain lines off a terminal, a redrawn rich table on one."""
from __future__ import annotations

import io
from types import SimpleNamespace

from orchestrator.sweep.live import LiveTable


def _trial(tid: str):
    return SimpleNamespace(trial_id=tid, config={"ans.stages": 2})


def test_plain_lines_follow_each_trial(capsys):
    t = LiveTable(lambda c: 3, lambda c: "ans.stages=2", live=False)
    a = _trial("abc_00000")
    t.on_trial_start(0, [], a)
    t.on_trial_result(0, [], a, {"epoch": 0, "miou": 0.25, "train_flops": 1.5e12})
    t.on_trial_result(0, [], a, {"epoch": 2, "miou": 0.3, "train_flops": 4.5e12})
    t.on_trial_complete(0, [], a)
    b = _trial("abc_00001")
    t.on_trial_start(0, [], b)
    t.on_trial_error(0, [], b)
    err = capsys.readouterr().err.splitlines()
    assert err[1] == "[sweep] abc_00000 RUNNING    epoch 1/3 miou=0.25 train_flops=1.500e+12  (ans.stages=2)"
    assert "FINISHED" in err[3] and "epoch 3/3" in err[3]
    assert "abc_00001 FAILED" in err[-1]


def test_table_on_a_terminal(monkeypatch):
    from rich.console import Console

    t = LiveTable(lambda c: 3, lambda c: "x", live=True)
    a = _trial("abc_00000")
    t.on_trial_result(0, [], a, {"epoch": 1, "miou": 0.5, "train_flops": 2e9})
    t.on_trial_complete(0, [], a)
    buf = io.StringIO()
    Console(file=buf, width=120).print(t._table())
    text = buf.getvalue()
    # Ended after its second of three epochs: stopped early (ASHA), not finished.
    assert "abc_00000" in text and "2/3" in text and "STOPPED" in text and "FINISHED" not in text
    assert "0.5" in text and "2.000e+09" in text
    t.close()
    assert t._view is None


def test_board_jobs_show_in_the_progress(capsys):
    """Hardware in the loop: each trial's board measurement state is a column of the table, and a line of
    the plain output (also once the table is gone: the boards outlast training)."""
    from rich.console import Console

    t = LiveTable(lambda c: 3, lambda c: "x", live=True)
    a = _trial("abc_00000")
    t.on_trial_result(0, [], a, {"epoch": 2, "miou": 0.5, "train_flops": 2e9})
    t.close()
    t.board_event("abc_00000", "measuring")
    buf = io.StringIO()
    Console(file=buf, width=140).print(t._table())
    assert "boards" in buf.getvalue() and "measuring" in buf.getvalue()
    assert "[sweep] abc_00000 boards: measuring" in capsys.readouterr().err
