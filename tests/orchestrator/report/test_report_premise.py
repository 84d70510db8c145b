"""The report prints the premise figures of its data first: the newest `dance data premise` run of each
dataset its trials trained on, and what to run for a dataset with none (real MLflow runs, conftest.py)."""
from __future__ import annotations

import time

from orchestrator.report.build import build_report
from orchestrator.report.render import write_report
from orchestrator.runs.schema import DATASET_TAG, KIND_PREMISE, KIND_TAG, PREMISE_VERDICT_TAG
from tests.orchestrator.report.conftest import BASELINE
from workers.premise import PREMISE_MIOU_DROP, PREMISE_SPEARMAN, PREMISE_SPEARMAN_HI, PREMISE_SPEARMAN_LO


def _premise(lg, root: str, verdict: str, spearman: float) -> str:
    run = lg.client.create_run(lg.exp, run_name="premise", tags={
        KIND_TAG: KIND_PREMISE, DATASET_TAG: f"synthetic:{root}", PREMISE_VERDICT_TAG: verdict})
    rid = run.info.run_id
    for key, v in {PREMISE_SPEARMAN: spearman, PREMISE_SPEARMAN_LO: spearman - 0.2, PREMISE_SPEARMAN_HI: spearman + 0.2,
                   **dict(zip(PREMISE_MIOU_DROP, (0.05, 0.06, 0.09)))}.items():
        lg.client.log_metric(rid, key, v)
    lg.client.log_param(rid, "split", "val")
    lg.client.set_terminated(rid, "FINISHED")
    return rid


def test_the_premise_comes_first_and_a_dataset_without_one_says_what_to_run(sweep_logger, tmp_path):
    lg = sweep_logger
    checked, unchecked = str(tmp_path / "dusk"), str(tmp_path / "night")
    lg.sweep("premise-report")
    lg.trial({**BASELINE, "data": {"kind": "synthetic", "root": checked}}, 0.30, 1.0e12, 4.0e8)
    lg.trial({"data": {"kind": "synthetic", "root": checked}}, 0.29, 0.6e12, 2.0e8)
    lg.trial({"data": {"kind": "synthetic", "root": unchecked}}, 0.28, 0.6e12, 2.0e8)
    _premise(lg, checked, "unclear", 0.05)  # an older check of the same data is superseded by the newer one
    time.sleep(0.02)  # MLflow orders runs by their start in milliseconds
    newest = _premise(lg, checked, "holds", 0.41)
    rep = build_report(["premise-report"], lg.uri, runtime_rounds=0)
    assert [c.run_id for c in rep.premise] == [newest] and rep.premise_missing == [f"synthetic:{unchecked}"]
    text = write_report(rep, tmp_path / "r", lg.uri).read_text()
    assert text.index("## The premise on this data") < text.index("## Claims")
    line = next(ln for ln in text.splitlines() if newest in ln)
    assert "**holds**" in line and "+0.410 [+0.210, +0.610]" in line and "0.0500 / 0.0600 / 0.0900" in line
    assert f"dance data premise {unchecked} --checkpoint" in text
