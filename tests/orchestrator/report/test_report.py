"""`dance report`: tables, "not in this sweep", claims (one that fails), bad input — on real
MLflow runs in a temporary sqlite store (tests/orchestrator/report/conftest.py), no Ray."""
from __future__ import annotations

import pytest

from orchestrator.cli import main
from orchestrator.report.build import build_report
from orchestrator.report.claims import INCONCLUSIVE, PARTLY, UNTESTED
from tests.orchestrator.report.conftest import ANS_ONLY, BASELINE, summary

DANCE: dict = {}


def claim(report, start: str):
    return next(c for c in report.claims if c.text.startswith(start))


@pytest.fixture(scope="module")
def full(sweep_logger):
    """The store with sweep "full" logged once for the tests that read it."""
    return full_sweep(sweep_logger)


def full_sweep(lg):
    """Every table's trials; numbers chosen so some claims hold and some fail."""
    lg.sweep("full")
    lg.trial(BASELINE, 0.30, 1.0e12, 4.0e8, extra={"device.energy_j_per_image": 2.0})
    lg.trial(ANS_ONLY, 0.29, 0.8e12, 3.0e8, report=summary(0.40, 0.55))
    lg.trial({"slimming": {"casd": False, "cal": False}}, 0.27, 0.5e12, 2.0e8)
    lg.trial({"slimming": {"casd": False}}, 0.28, 0.5e12, 2.0e8)
    lg.trial({"slimming": {"cad": False, "casd": False, "cal": False, "rd": True}}, 0.285, 0.6e12, 3.0e8)
    lg.trial({"slimming": {"cad": False, "cal": False}}, 0.280, 0.6e12, 3.0e8)  # CASD < RD: that claim fails
    lg.trial(DANCE, 0.31, 0.4e12, 2.0e8, report=summary(0.60, 0.45), extra={"device.energy_j_per_image": 1.2})
    lg.trial({"train": {"mode": "network_then_data"}}, 0.25, 0.6e12, 2.0e8)
    lg.trial({"train": {"mode": "data_then_network"}}, 0.26, 0.5e12, 2.0e8)
    lg.trial({"slimming": {"p_mode": "random"}}, 0.27, 0.4e12, 2.0e8)
    lg.trial({"slimming": {"p_mode": "inverse"}}, 0.28, 0.4e12, 2.0e8)  # inverse > random: partly
    lg.trial({"slimming": {"cal_range": {"lo": 1.0, "hi": 2.0}}}, 0.29, 0.41e12, 2.1e8)
    lg.trial({"slimming": {"casd_range": {"lo": 0.4, "hi": 0.6}}}, 0.30, 0.5e12, 2.0e8)
    lg.trial({**ANS_ONLY, "ans": {"target_ratio": 0.2}}, 0.30, 0.9e12, 3.5e8, report=summary(0.10, 0.25))
    lg.trial({"ans": {"target_ratio": 0.2}}, 0.30, 0.45e12, 2.5e8, report=summary(0.05, 0.27))  # fewer at 20 %
    lg.trial({"train": {"epochs": 12}}, 0.33, 1.1e12, 2.0e8)  # equal FLOPs
    lg.trial(BASELINE, 0.0, 0.0, 0.0, status="FAILED")
    return lg


def test_tables_from_a_sweep(full):
    lg = full
    rep = build_report(["full"], lg.uri, runtime_rounds=0)
    t8 = {r["no"]: r for r in rep.tables["table8"].rows}
    assert [t8[n]["n"] for n in range(1, 8)] == [1] * 7  # the FAILED baseline is left out
    assert [t.status for t in rep.excluded] == ["FAILED"]
    assert t8[7]["d_train"] == pytest.approx(-60.0) and t8[7]["d_infer"] == pytest.approx(-50.0)
    assert t8[7]["d_miou"] == pytest.approx(1.0) and t8[2]["d_miou"] == pytest.approx(-1.0)
    assert t8[7]["d_energy"] == pytest.approx(-40.0)
    assert t8[2]["energy"] is None and t8[2]["d_energy"] is None  # not measured: absent, never 0
    assert t8[7]["paper_miou"] == 3.41 and t8[5]["paper_train"] == -13.73
    t4 = {r["mode"]: r for r in rep.tables["table4"].rows}
    assert t4["network_then_data"]["d_miou"] == pytest.approx(-5.0)
    t6 = {r["p_mode"]: r for r in rep.tables["table6"].rows}
    assert t6["random"]["d_miou"] == pytest.approx(-4.0) and t6["proposed"]["d_miou"] == pytest.approx(0.0)
    cal = rep.tables["table9_cal"].rows
    assert [r["range"] for r in cal] == ["2–1", "1–0 (default)"]
    assert cal[1]["d_miou"] == pytest.approx(2.0)  # vs the paper's first row (2.0-1.0)
    casd = rep.tables["table9_casd"].rows
    assert [r["range"] for r in casd] == ["60%–40%", "100%–0% (default)"]
    f4 = rep.tables["fig4"].rows
    assert [r["ratio"] for r in f4] == [0.2, 0.5]
    assert f4[1]["dance_ms"] == pytest.approx(0.6) and f4[1]["ans_ms"] == pytest.approx(0.4)
    assert f4[1]["d_ms_weights"] == 2000 and f4[1]["paper_ms_weights"] == 96674
    cmp_rows = {r["kind"]: r for r in rep.tables["compare"].rows}
    eq = cmp_rows["equal steps"]  # the default drop_budget: steps
    assert eq["flops_ratio"] == pytest.approx(0.4) and eq["d_miou"] == pytest.approx(1.0)
    fl = cmp_rows["equal training FLOPs (closest pair)"]
    assert (fl["base_epochs"], fl["dance_epochs"]) == (4, 12) and fl["d_miou"] == pytest.approx(3.0)


def test_markdown_and_figures(full, tmp_path):
    from orchestrator.report.render import write_report

    lg = full
    path = write_report(build_report(["full"], lg.uri, runtime_rounds=0), tmp_path / "r", lg.uri)
    text = path.read_text()
    row7 = next(line for line in text.splitlines() if line.startswith("| 7 | ANS+CAD+CAL+CASD |"))
    assert "-60.00 %" in row7 and "-40.00 %" in row7 and "+1.00" in row7 and "+3.41" in row7
    row2 = next(line for line in text.splitlines() if line.startswith("| 2 | ANS |"))
    assert "| -1.00 | — | — |" in row2 and " 0.00 %" not in row2  # energy not measured: "—", not 0
    assert "Left out (not FINISHED)" in text
    assert (tmp_path / "r" / "fig4.png").stat().st_size > 1000 and "![Fig. 4](fig4.png)" in text
    assert "Table 12" in text and "not measured (--no-runtime)" in text


def test_one_seed_gives_no_verdict_on_miou_but_shows_the_numbers(full):
    """One seed has no spread: every mIoU claim is inconclusive, whatever the sign of the difference."""
    rep = build_report(["full"], full.uri, runtime_rounds=0)
    steps = claim(rep, "DANCE reaches at least the baseline's mIoU at lower")
    assert steps.verdict == INCONCLUSIVE and "equal steps" in steps.text and "+1.00 points (one seed" in steps.evidence
    assert claim(rep, "DANCE reaches at least the baseline's mIoU at equal").verdict == INCONCLUSIVE
    casd = claim(rep, "CASD beats random dropping")
    assert casd.verdict == INCONCLUSIVE and "28.00 %" in casd.evidence and "28.50 %" in casd.evidence
    assert claim(rep, "the proposed p").verdict == INCONCLUSIVE
    assert claim(rep, "co-optimisation").verdict == INCONCLUSIVE
    ms = claim(rep, "DANCE prunes a larger share")  # not an mIoU claim: judged on the pruned shares
    assert ms.verdict == PARTLY and "20 %: DANCE 5.0 % vs ANS 10.0 % (not more)" in ms.evidence


def test_tables_not_in_the_sweep_and_the_markdown(sweep_logger, tmp_path, capsys):
    lg = sweep_logger
    parent = lg.sweep("small")
    lg.trial(BASELINE, 0.30, 1.0e12, 4.0e8)
    lg.trial(DANCE, 0.28, 0.4e12, 2.0e8)
    out = tmp_path / "rep"
    assert main(["report", parent, "--out", str(out), "--tracking-uri", lg.uri, "--no-runtime"]) == 0
    text = (out / "report.md").read_text()
    for title in ("Table 4", "Table 6", "Table 9", "Fig. 4"):
        section = text.split(f"### {title}", 1)[1].split("###", 1)[0]
        assert "not in this sweep" in section, title
    assert "| 3 | ANS+CAD | *not in this sweep* |" in text  # a Table 8 row with no trial
    assert "| 7 | ANS+CAD+CAL+CASD | 1 |" in text
    assert "〰 inconclusive" in text  # DANCE 28 % < baseline 30 %, but one seed: no spread to judge by
    assert "no board measured" in text  # no trial has device.energy_j_per_image
    assert (out / "tradeoff.png").stat().st_size > 1000
    stdout = capsys.readouterr().out
    assert "inconclusive" in stdout and f"report: {out / 'report.md'}" in stdout
    rep = build_report(["small"], lg.uri, runtime_rounds=0)
    assert claim(rep, "the proposed p").verdict == UNTESTED
    assert claim(rep, "DANCE reaches at least the baseline's mIoU at equal").verdict == UNTESTED


@pytest.mark.parametrize("target, message", [
    ("0123456789abcdef0123456789abcdef", "no such run"),
    ("no-such-sweep", "neither a sweep's parent run id nor a sweep id"),
])
def test_unknown_sweep_exits_2(sweep_logger, tmp_path, capsys, target, message):
    lg = sweep_logger
    assert main(["report", target, "--out", str(tmp_path / "o"), "--tracking-uri", lg.uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dance: error:") and message in err and target in err
    assert not (tmp_path / "o").exists()


def test_a_trial_run_id_is_not_a_sweep(sweep_logger, tmp_path, capsys):
    lg = sweep_logger
    lg.sweep("s")
    rid = lg.trial(BASELINE, 0.3, 1e12, 4e8)
    assert main(["report", rid, "--tracking-uri", lg.uri]) == 2
    assert "not a sweep's parent run" in capsys.readouterr().err


def test_missing_store_exits_2(tmp_path, capsys):
    assert main(["report", "x", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert "no MLflow store" in capsys.readouterr().err


def test_a_store_written_before_the_metric_groups_still_reports(sweep_logger, tmp_path):
    """Stores written before the metrics were grouped (``miou``, not ``accuracy/miou``) read the same in
    `dance report`, `dance runs`, the Pareto ranking and the metric history as ones written now."""
    import mlflow

    from orchestrator.report.collect import collect_trials, find_sweep, metric_history
    from orchestrator.runs.pareto import rank_front

    lg = sweep_logger
    fronts, tables = {}, {}
    for sweep_id, grouped in (("plain-names", False), ("grouped-names", True)):
        lg.grouped = grouped
        try:
            parent = lg.sweep(sweep_id)
            lg.trial(BASELINE, 0.30, 1.0e12, 4.0e8)
            lg.trial(DANCE, 0.28, 0.4e12, 2.0e8)
        finally:
            lg.grouped = True
        client = mlflow.MlflowClient(lg.uri)
        names = set(client.get_run(collect_trials(client, find_sweep(client, sweep_id))[0].run_id).data.metrics)
        assert ("miou" in names, "accuracy/miou" in names) == (not grouped, grouped)
        trials = collect_trials(client, find_sweep(client, sweep_id))
        assert [t.metric("miou") for t in trials] == [pytest.approx(0.30), pytest.approx(0.28)]
        assert [s for s, _ in metric_history(client, trials[0], "epoch")] == [0, 1, 2, 3]
        rows, _, _ = rank_front(client, lg.exp, parent, sweep_id, [("miou", "max"), ("train_flops", "min")])
        fronts[sweep_id] = sorted((r["miou"], r["train_flops"], r["epochs"], r["pareto_rank"]) for r in rows)
        tables[sweep_id] = [{k: v for k, v in r.items() if k not in ("run_id", "trials")}
                            for r in build_report([sweep_id], lg.uri, runtime_rounds=0).tables["table8"].rows]
        csv = tmp_path / f"{sweep_id}.csv"
        assert main(["runs", sweep_id, "--tracking-uri", lg.uri, "--csv", str(csv), "--sort", "accuracy/miou"]) == 0
        assert csv.read_text().splitlines()[1].endswith(",baseline,0.3,1000000000000.0,400000000.0,1.0")
    assert fronts["plain-names"] == fronts["grouped-names"] and fronts["plain-names"][0][2] == 4
    assert tables["plain-names"] == tables["grouped-names"]
