"""`dance quickstart` up to the sweep: data generated once, scored, the sweep config found and valid."""
from __future__ import annotations

import csv
from pathlib import Path

from orchestrator.cli import main
from orchestrator.commands.quickstart import PACKAGED_CONFIG
from orchestrator.sweep.space import count_trials, load_sweep


def test_quickstart_generates_scores_and_reuses_the_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "synth"
    args = ["quickstart", "--data", str(root), "--train", "4", "--val", "2", "--score-only"]
    assert main(args) == 0
    assert "synthetic dataset written" in capsys.readouterr().out
    rows = list(csv.DictReader((root / "complexity.csv").open()))
    assert len(rows) == 4 and all(0.0 <= float(r["p"]) <= 1.0 for r in rows)
    assert main(args) == 0
    assert "using the synthetic dataset" in capsys.readouterr().out


def test_the_quickstart_sweep_is_the_four_corners():
    spec = load_sweep(PACKAGED_CONFIG, check_data=False)
    assert count_trials(spec.sweep) == 4 and spec.sweep.scheduler.kind == "none"
    corners = set()
    for ans in (False, True):
        for sl in spec.sweep.space["slimming"].values:
            cfg = spec.resolve({"ans.enabled": ans, "slimming": sl})
            corners.add((cfg.ans.enabled, cfg.slimming.cad and cfg.slimming.casd and cfg.slimming.cal,
                         cfg.slimming.cad or cfg.slimming.casd or cfg.slimming.cal))
    assert corners == {(False, False, False), (True, False, False), (False, True, True), (True, True, True)}
    assert Path(spec.base.data.root).name == "synth"
