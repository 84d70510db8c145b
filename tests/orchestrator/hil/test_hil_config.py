"""``sweep.hil`` and device objectives: every mistake reported before Ray starts."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import UserError
from orchestrator.sweep.space import load_sweep


@pytest.fixture
def boards(tmp_path) -> Path:
    f = tmp_path / "boards.yaml"
    f.write_text("boards:\n  - {name: tx2-a, transport: local, labels: [tx2], fs_root: /tmp/x}\n"
                 "  - {name: orin-a, transport: local, labels: [orin], fs_root: /tmp/y}\n")
    return f


def sweep_file(tmp_path: Path, sweep: str) -> Path:
    f = tmp_path / "s.yaml"
    f.write_text(f"data: {{root: {tmp_path}}}\nmodel: {{name: deeplabv3plus, variant: small}}\n"
                 f"train: {{epochs: 3}}\nsweep:\n{sweep}")
    return f


def problems(path: Path) -> str:
    with pytest.raises(UserError) as exc:
        load_sweep(path, check_data=False)
    return str(exc.value)


def test_device_objectives_need_a_hil_section_and_a_search_that_can_wait(tmp_path):
    text = problems(sweep_file(tmp_path, """
  space: {optim.lr: {choice: [0.01, 0.02]}}
  search: optuna
  objectives: [{metric: miou, mode: max}, {metric: device.energy_j_per_image, mode: min},
               {metric: device.joules, mode: min}]
"""))
    assert "device.energy_j_per_image is measured on boards: add a sweep.hil section" in text
    assert "optuna learns from what trials report" in text
    assert "unknown metric 'device.joules'" in text


def test_hil_mistakes_are_named(tmp_path, boards):
    text = problems(sweep_file(tmp_path, f"""
  objectives: [{{metric: miou, mode: max}}, {{metric: device.train_energy_j_per_step, mode: min}}]
  hil: {{boards: {boards}, labels: [jetson-nano], measure: promoted, wait: maybe}}
"""))
    assert "sweep.hil.wait" in text
    text = problems(sweep_file(tmp_path, f"""
  objectives: [{{metric: miou, mode: max}}, {{metric: device.train_energy_j_per_step, mode: min}}]
  hil: {{boards: {boards}, labels: [jetson-nano], measure: promoted}}
"""))
    assert "needs sweep.hil.train_steps > 0" in text
    assert "promoted means 'passed an ASHA rung'" in text
    assert "labels ['jetson-nano']: no board" in text and "tx2-a ['tx2']" in text
    text = problems(sweep_file(tmp_path, f"""
  objectives: [{{metric: miou, mode: max}}]
  hil: {{boards: {boards}, measure: predicted_front, primary: tx3}}
"""))
    assert "predicted_front ranks on predicted device figures" in text
    assert "sweep.hil.primary 'tx3': not a board kind" in text and "tx2-a, orin-a" in text
    text = problems(sweep_file(tmp_path, """
  objectives: [{metric: miou, mode: max}]
  hil: {boards: /no/such/boards.yaml}
"""))
    assert "/no/such/boards.yaml" in text


def test_a_good_hil_section_loads(tmp_path, boards):
    spec = load_sweep(sweep_file(tmp_path, f"""
  objectives: [{{metric: miou, mode: max}}, {{metric: device.energy_j_per_image, mode: min}}]
  hil: {{boards: {boards}, labels: [tx2], measure: {{pareto_top: 2}}, train_steps: 2}}
"""), check_data=False)
    hil = spec.sweep.hil
    assert hil.mode == "pareto_top" and hil.top_ranks == 2 and not hil.wait and hil.train_steps == 2


def test_what_could_never_be_measured_or_predicted_is_refused(tmp_path):
    f = tmp_path / "boards.yaml"
    f.write_text("boards:\n  - {name: pc, transport: local, labels: [pc], power: none}\n")
    text = problems(sweep_file(tmp_path, f"""
  objectives: [{{metric: miou, mode: max}}, {{metric: device.energy_j_per_image, mode: min}},
               {{metric: device.latency_ms_p90, mode: min}}]
  hil: {{boards: {f}, measure: predicted_front, buckets: "64x12x:1"}}
"""))
    assert "not device.latency_ms_p90" in text
    assert "sweep.hil.buckets: bad bucket '64x12x:1'" in text
    assert "every selected board has power: none" in text
