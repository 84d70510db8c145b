"""Seeds and verdicts: rows pair by seed, three verdicts from ±2 standard errors, both DANCE budgets,
adaptation runs said to be adaptation — on real MLflow runs (tests/orchestrator/report/conftest.py)."""
from __future__ import annotations

import pytest

from orchestrator.report import stats
from orchestrator.report.build import build_report
from orchestrator.report.claims import FAILS, HOLDS, INCONCLUSIVE
from tests.orchestrator.report.conftest import BASELINE

RD = {"slimming": {"cad": False, "casd": False, "cal": False, "rd": True}}
CASD = {"slimming": {"cad": False, "cal": False}}


def test_paired_statistics_and_verdicts():
    p = stats.paired({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.0, 1: 0.5, 2: 1.0, 7: 9.0})  # seed 7 has no partner
    assert p.n == 3 and p.mean == pytest.approx(1.5) and p.sd == pytest.approx(0.5)
    assert p.se == pytest.approx(0.5 / 3 ** 0.5) and p.lo == pytest.approx(1.5 - 4.302653 * p.se, rel=1e-5)
    assert stats.verdict(p) == HOLDS and stats.verdict(p, higher_is_claimed=False) == FAILS
    noisy = stats.paired({0: 1.0, 1: -0.8, 2: 0.3}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert stats.verdict(noisy) == INCONCLUSIVE  # mean 0.17 inside ±2 se
    assert stats.verdict(stats.paired({0: 5.0}, {0: 0.0})) == INCONCLUSIVE  # one seed: no spread
    assert stats.paired({0: 1.0}, {1: 1.0}) is None and stats.verdict(None) == INCONCLUSIVE


def test_three_seeds_pair_and_judge(sweep_logger, tmp_path):
    lg = sweep_logger
    lg.sweep("seeds")
    base = {0: 0.300, 1: 0.310, 2: 0.290}
    for s, m in base.items():
        lg.trial({**BASELINE, "seed": s}, m, 1.0e12, 4.0e8)
        # DANCE at equal steps: +1.0, +1.2, +0.9 points on the same seeds: clearly above 2 se
        lg.trial({"seed": s}, m + {0: 0.010, 1: 0.012, 2: 0.009}[s], 0.65e12, 2.0e8)
        # DANCE at equal epochs (shorter ones): −0.5, +0.6, −0.2 points: inconclusive
        lg.trial({"seed": s, "slimming": {"drop_budget": "epochs"}}, m + {0: -0.005, 1: 0.006, 2: -0.002}[s],
                 0.35e12, 2.0e8)
        # CASD below RD on every seed by 2 points, at 30 % more training FLOPs
        lg.trial({**RD, "seed": s}, m, 0.6e12, 3.0e8)
        lg.trial({**CASD, "seed": s}, m - 0.02 + 0.001 * s, 0.78e12, 3.0e8)
    rep = build_report(["seeds"], lg.uri, runtime_rounds=0)
    assert rep.setting.drop_budget == "steps" and not rep.setting.adaptation
    rows = {r["kind"]: r for r in rep.tables["compare"].rows}
    steps, epochs = rows["equal steps"], rows["equal epochs"]
    assert steps["seeds"] == 3 and steps["verdict"] == HOLDS and steps["d_miou"] == pytest.approx(1.0333, abs=1e-3)
    assert epochs["budget"] == "epochs" and epochs["verdict"] == INCONCLUSIVE
    t8 = {r["no"]: r for r in rep.tables["table8"].rows}
    assert t8[1]["seeds"] == 3 and t8[1]["miou_sd"] == pytest.approx(1.0)  # 30/31/29 %: sd 1 point
    assert "…" in t8[6]["d_miou_ci"]
    steps_claim = next(c for c in rep.claims if "equal steps" in c.text)
    epochs_claim = next(c for c in rep.claims if "equal epochs" in c.text)
    assert steps_claim.verdict == HOLDS and "3 seeds" in steps_claim.evidence
    assert epochs_claim.verdict == INCONCLUSIVE
    casd = next(c for c in rep.claims if c.text.startswith("CASD beats random dropping"))
    assert casd.verdict == FAILS and "arms differ by +30 % in training FLOPs" in casd.evidence


def test_adaptation_runs_are_set_beside_the_adaptation_table(sweep_logger, tmp_path):
    lg = sweep_logger
    lg.sweep("adapted")
    ckpt = str(tmp_path / "pretrained.pt")
    for s in (0, 1):
        lg.trial({**BASELINE, "seed": s, "train": {"init_checkpoint": ckpt}}, 0.30, 1.0e12, 4.0e8)
        lg.trial({"seed": s, "train": {"init_checkpoint": ckpt}}, 0.31, 0.6e12, 2.0e8)
    rep = build_report(["adapted"], lg.uri, runtime_rounds=0)
    assert rep.setting.adaptation
    assert "Table 3" in rep.tables["compare"].paper_ref and "adaptation" in rep.tables["compare"].paper_ref
    assert any("adaptation runs" in n and "Table 3" in n for n in rep.tables["table8"].notes)
