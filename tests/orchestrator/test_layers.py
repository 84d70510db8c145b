"""orchestrator/ depends one way: commands → report, sweep → hil → boards → training, checkpoints → runs → ...

Read from the source with benchmarks/bench_structure.py (the figures of issue 16), so the test and
the printed figures cannot disagree.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _structure():
    spec = importlib.util.spec_from_file_location("bench_structure", ROOT / "benchmarks" / "bench_structure.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_no_room_imports_a_room_above_it():
    mod = _structure()
    arrows = mod.scan()["arrows"]
    wrong = {f"{a} -> {b}": arrows[(a, b)] for a, b in mod.against_order(arrows)}
    assert not wrong, f"imports against the rooms' order (orchestrator/__init__.py): {wrong}"


def test_the_layer_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The check itself can fail: a module in boards/ importing the CLI is caught."""
    mod = _structure()
    fake = tmp_path / "orchestrator" / "boards"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "up.py").write_text("from orchestrator.commands.sweep import cmd_sweep\n")
    (tmp_path / "orchestrator" / "__init__.py").write_text("")
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    monkeypatch.setattr(mod, "PACKAGES", ("orchestrator",))
    assert ("boards", "commands") in mod.against_order(mod.scan()["arrows"])
