"""Assemble a report: sweeps → trials → tables (+ Table 12 timing) → claims → Markdown and PNGs."""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from orchestrator.errors import UserError
from orchestrator.report import claims as claims_mod
from orchestrator.report import tables as T
from orchestrator.report.collect import (
    Sweep,
    Trial,
    client_for,
    collect_trials,
    download_file,
    download_json,
    find_sweep,
    metric_history,
)
from orchestrator.report.curves import curves_table
from orchestrator.report.paper import load_paper_numbers
from orchestrator.report.premise import PremiseCheck, premise_checks
from orchestrator.report.provenance import start_line
from orchestrator.report.runtime import PARTS, compare_runtime, load_for_timing

log = logging.getLogger("dance.report")
REPORT_ARTIFACT = "checkpoint/pruning_report.json"
CHECKPOINT_ARTIFACT = "checkpoint/model.pt"


@dataclass
class Report:
    sweeps: list[Sweep]
    trials: list[Trial]
    setting: T.Setting | None
    tables: dict[str, T.Table]
    claims: list[claims_mod.Claim]
    excluded: list[Trial] = field(default_factory=list)
    premise: list[PremiseCheck] = field(default_factory=list)  # the data's premise checks, printed first
    premise_missing: list[str] = field(default_factory=list)  # datasets no premise check was logged for
    start: str = ""  # what the main setting's trials started from (weights, their digest and source)


def table12(client, t8_rows: dict[int, list[Trial]], paper: dict, rounds: int) -> T.Table:
    """Runtime breakdown of the baseline (row 1) and DANCE (row 7) checkpoints."""
    cols = [T.Column("part", "layers"), T.Column("base_ms", "w/o DANCE (ms/img)", "ms"),
            T.Column("dance_ms", "w/ DANCE (ms/img)", "ms"), T.Column("ratio", "w/ DANCE, % of w/o", "pct_abs"),
            T.Column("paper", "paper: w/ DANCE, % of w/o", "pct_abs")]
    t = T.Table("table12", "Table 12: inference runtime breakdown, with and without DANCE", paper["table12"]["ref"],
                cols)
    base, dance = (t8_rows.get(1) or []), (t8_rows.get(7) or [])
    if not base or not dance:
        t.missing = f"{T.NOT_IN_SWEEP}: needs the baseline (Table 8 row 1) and DANCE (row 7) trials"
        return t
    with tempfile.TemporaryDirectory() as tmp:
        loaded = {}
        for name, trial in (("baseline", base[0]), ("DANCE", dance[0])):
            f = download_file(client, trial, CHECKPOINT_ARTIFACT, Path(tmp) / name)
            if f is None:
                t.missing = f"trial {trial.trial_id} ({name}) has no {CHECKPOINT_ARTIFACT} artifact"
                return t
            try:
                loaded[name] = load_for_timing(f)
            except Exception as exc:  # e.g. the dataset is not on this machine
                t.missing = f"cannot time trial {trial.trial_id} ({name}): {str(exc)[:300]}"
                return t
        res = compare_runtime(loaded, rounds=rounds)
    n_b, n_d = len(loaded["baseline"][1]), len(loaded["DANCE"][1])
    names = {"backbone": "backbone", "multiscale": "header: multi-scale aggregation", "other": "header: other layers",
             "all": "all layers"}
    for p in PARTS:
        b, d = res["baseline"][p] / n_b, res["DANCE"][p] / n_d
        t.rows.append({"part": names[p], "base_ms": 1e3 * b, "dance_ms": 1e3 * d,
                       "ratio": 100 * d / b if b > 0 else None, "paper": paper["table12"]["rows"][p]})
    t.notes.append(f"trials {base[0].trial_id} (baseline) and {dance[0].trial_id} (DANCE); "
                   f"{n_b} val images each at the "
                   f"sizes its own inference uses, batch 1, CPU, 1 thread, median of {rounds} interleaved rounds; "
                   f"'all layers' includes the final upsampling (the paper: GPU)")
    return t


def build_report(targets: Sequence[str], tracking_uri: str, *, paper_file: str | Path | None = None,
                 runtime_rounds: int = 5, progress: Callable[[str], None] | None = None) -> Report:
    """Collect the sweeps' trials and build every table and claim (no files written)."""
    say = progress or (lambda _m: None)
    paper = load_paper_numbers(paper_file)
    client = client_for(tracking_uri)
    sweeps, trials = [], []
    for target in targets:
        sw = find_sweep(client, target)
        if any(s.parent_run_id == sw.parent_run_id for s in sweeps):
            continue
        sweeps.append(sw)
        trials += collect_trials(client, sw)
    say(f"{len(trials)} trial(s) in {len(sweeps)} sweep(s)")
    if not trials:
        raise UserError(f"sweep {', '.join(s.sweep_id for s in sweeps)} has no trial runs")
    done = T.finished(trials)
    excluded = [t for t in trials if t.status != "FINISHED"]
    s = T.main_setting(done)
    tables: dict[str, T.Table] = {}
    t8_rows = T.table8_trials(done, s)
    tables["table8"] = T.table8(done, s, paper)
    tables["compare"] = T.comparisons(done, s, paper)
    say("reading the val curves of the baseline and DANCE")
    tables["curves"] = curves_table(t8_rows.get(1) or [], t8_rows.get(7) or [], s,
                                    lambda t: metric_history(client, t, "miou"))
    tables["table4"] = T.table4(done, s, paper, t8_rows.get(1) or [])
    tables["table6"] = T.table6(done, s, paper)
    for t in T.table9(done, s, paper):
        tables[t.key] = t
    if s is not None and s.adaptation:  # never a full-training delta beside an adaptation run unsaid
        for key in ("table8", "table4", "table6", "table9_cal", "table9_casd"):
            if key in tables and not tables[key].missing:
                tables[key].notes.append(T.ADAPTATION_NOTE)
    say("reading the pruning reports (Fig. 4)")
    ans_like = [t for t in done if t.switches in (frozenset({"ANS"}), frozenset(T.FULL))]
    reports = {t.run_id: download_json(client, t, REPORT_ARTIFACT) for t in ans_like}
    tables["fig4"] = T.fig4(done, s, paper, reports)
    if runtime_rounds > 0:
        say("timing the baseline and DANCE checkpoints (Table 12)")
        tables["table12"] = table12(client, t8_rows, paper, runtime_rounds)
    else:
        tables["table12"] = T.Table("table12", "Table 12: inference runtime breakdown, with and without DANCE",
                                    paper["table12"]["ref"], [], missing="not measured (--no-runtime)")
    checks, unchecked = premise_checks(client, trials)
    start = start_line([t for t in done if s.holds(t, epochs=False, ratio=False, budget=False)]) if s else ""
    return Report(sweeps, trials, s, tables, claims_mod.evaluate_claims(tables), excluded, checks, unchecked, start)
