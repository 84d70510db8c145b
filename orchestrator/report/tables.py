"""The paper's tables from a sweep's trials, each found by its config, never by a label.

Every table is a :class:`Table`: rows of raw numbers (the renderer formats them) beside the
paper's numbers. A table none of whose trials are in the sweep(s) has ``missing`` set and no
rows: the report says "not in this sweep" instead of inventing one.

Trials are compared only within one *setting*: the same context (model, dataset, initial
checkpoint, lr, batch, stages, λ, CAD range, CAL normaliser, ...; :meth:`Trial.context`), the
same number of epochs, with ANS on the same pruning ratio, and with dropping on the same
``drop_budget``. The main setting is the one in which a baseline and a default DANCE trial
(co-optimisation, proposed p, default ranges) trained the same number of epochs.

Seeds are replicates: a row averages its trials, reports the spread over seeds, and its
difference to the reference row is *paired* by seed (:mod:`orchestrator.report.stats`).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from orchestrator.report import stats
from orchestrator.report.collect import FULL, Trial

NOT_IN_SWEEP = "not in this sweep"
ENERGY_INFER = "device.energy_j_per_image"
ENERGY_TRAIN = "device.train_energy_j_per_step"


def _defaults() -> dict[str, tuple[float, float]]:
    from workers.dance.slimming import SlimmingConfig

    s = SlimmingConfig()
    return {"cal_range": (s.cal_range.lo, s.cal_range.hi), "casd_range": (s.casd_range.lo, s.casd_range.hi)}


DEFAULT_RANGES = _defaults()


@dataclass
class Column:
    key: str
    header: str
    fmt: str = "text"  # text | int | sci | pct (signed %) | pts (signed points) | miou (a fraction shown in %) | share


@dataclass
class Table:
    key: str
    title: str
    paper_ref: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    missing: str | None = None  # why the table is empty ("not in this sweep: ...")
    notes: list[str] = field(default_factory=list)


@dataclass
class Setting:
    context: tuple
    epochs: int | None
    ratio: float | None
    drop_budget: str | None = None  # of the trials that drop (CASD, RD); None: any
    adaptation: bool = False        # trials start from a trained model (the paper's Table 3 setting)

    def holds(self, t: Trial, *, epochs: bool = True, ratio: bool = True, budget: bool = True) -> bool:
        if t.context() != self.context:
            return False
        if epochs and t.epochs != self.epochs:
            return False
        if ratio and "ANS" in t.switches and self.ratio is not None and not _close(t.target_ratio, self.ratio):
            return False
        if budget and self.drop_budget and t.switches & {"CASD", "RD"} and t.drop_budget != self.drop_budget:
            return False
        return True


# ---------------------------------------------------------------- helpers
def _close(a: float | None, b: float | None, tol: float = 1e-9) -> bool:
    return a is not None and b is not None and abs(a - b) <= tol


def finished(trials: Iterable[Trial]) -> list[Trial]:
    return [t for t in trials if t.status == "FINISHED"]


def is_default(t: Trial, *, mode: bool = True, p_mode: bool = True,
               ranges: Sequence[str] = ("cal_range", "casd_range")) -> bool:
    """Co-optimisation, proposed p, the default CAL/CASD ranges (where the switch is on)."""
    if mode and t.mode != "co":
        return False
    if p_mode and t.p_mode != "proposed":
        return False
    for r in ranges:
        switch = "CAL" if r == "cal_range" else "CASD"
        if switch in t.switches and t.range_of(r) != DEFAULT_RANGES[r]:
            return False
    return True


def mean(trials: Sequence[Trial], metric: str) -> float | None:
    vals = [v for v in (t.metric(metric) for t in trials) if v is not None]
    return sum(vals) / len(vals) if vals else None


def d_pct(x: float | None, base: float | None) -> float | None:
    return None if x is None or base in (None, 0) else 100.0 * (x / base - 1.0)


def d_pts(x: float | None, base: float | None) -> float | None:
    return None if x is None or base is None else 100.0 * (x - base)


def main_setting(trials: Sequence[Trial]) -> Setting | None:
    """The setting the main tables use (see the module docstring); None without any candidate."""
    dance = [t for t in trials if t.is_dance and is_default(t)]
    base = [t for t in trials if t.is_baseline and t.mode == "co"]
    groups = Counter((t.context(), t.epochs, t.target_ratio, t.drop_budget) for t in dance)
    if groups:
        def score(key):
            ctx, ep, ratio, budget = key
            paired = any(b.context() == ctx and b.epochs == ep for b in base)
            same = sum(1 for t in trials if t.context() == ctx and t.epochs == ep)
            return (paired, _close(ratio, 0.5), budget == "steps", same, groups[key])

        ctx, ep, ratio, budget = max(groups, key=score)
        adapt = any(t.is_adaptation for t in dance if t.context() == ctx)
        return Setting(ctx, ep, ratio, budget, adapt)
    if base:
        ctx, ep = Counter((b.context(), b.epochs) for b in base).most_common(1)[0][0]
        return Setting(ctx, ep, None, None, any(b.is_adaptation for b in base if b.context() == ctx))
    return None


def by_seed(trials: Sequence[Trial], metric: str = "miou") -> dict[int, float]:
    """Seed → the metric's mean over that seed's trials (a seed run twice counts once)."""
    out: dict[int, list[float]] = {}
    for t in trials:
        v = t.metric(metric)
        if v is not None:
            out.setdefault(t.seed, []).append(v)
    return {s: sum(v) / len(v) for s, v in out.items()}


def paired_pts(arm: Sequence[Trial], base: Sequence[Trial]) -> stats.Paired | None:
    """mIoU difference arm − base in points, paired by seed."""
    a = {s: 100.0 * v for s, v in by_seed(arm).items()}
    b = {s: 100.0 * v for s, v in by_seed(base).items()}
    return stats.paired(a, b)


def budget_note(arm_flops: float | None, base_flops: float | None, limit: float = 0.10) -> str:
    """Says so when two compared arms differ by more than ``limit`` in training FLOPs ('' otherwise)."""
    if not arm_flops or not base_flops or abs(arm_flops / base_flops - 1.0) <= limit:
        return ""
    return f"arms differ by {100 * (arm_flops / base_flops - 1.0):+.0f} % in training FLOPs"


ADAPTATION_NOTE = ("these are adaptation runs (train.init_checkpoint): the paper's columns are its full-training "
                   "table, so compare directions, not sizes; the paper's adaptation figures are Table 3 (DeepLabv3+ "
                   "Cityscapes → BDD100K: DANCE +0.12 mIoU at −79 % training FLOPs, −77 % training energy)")


def _metrics_row(ts: Sequence[Trial], base: Sequence[Trial] | None) -> dict[str, Any]:
    """Absolute values and deltas vs ``base`` (FLOPs and energy in %, mIoU in points)."""
    seeds = by_seed(ts)
    _, sd = stats.mean_sd(list(seeds.values()))
    row = {"n": len(ts), "trials": ", ".join(t.trial_id for t in ts), "seeds": len(seeds), "by_seed": seeds,
           "miou_sd": None if sd is None else 100.0 * sd,
           "train_flops": mean(ts, "train_flops"), "infer_flops": mean(ts, "infer_flops_per_image"),
           "miou": mean(ts, "miou"), "energy": mean(ts, ENERGY_INFER), "train_energy": mean(ts, ENERGY_TRAIN)}
    if base:
        pd = paired_pts(ts, base)
        row["d_miou_ci"] = None if pd is None or pd.lo is None else f"{pd.lo:+.2f} … {pd.hi:+.2f}"
        b = {k: mean(base, m) for k, m in (("train_flops", "train_flops"), ("infer_flops", "infer_flops_per_image"),
                                            ("miou", "miou"), ("energy", ENERGY_INFER), ("train_energy", ENERGY_TRAIN))}
        row.update(d_train=d_pct(row["train_flops"], b["train_flops"]),
                   d_infer=d_pct(row["infer_flops"], b["infer_flops"]),
                   d_miou=d_pts(row["miou"], b["miou"]), d_energy=d_pct(row["energy"], b["energy"]),
                   d_train_energy=d_pct(row["train_energy"], b["train_energy"]))
    return row


COST_COLUMNS = [Column("seeds", "seeds", "int"),
                Column("train_flops", "train FLOPs", "sci"), Column("d_train", "Δ train FLOPs", "pct"),
                Column("infer_flops", "infer FLOPs/img", "sci"), Column("d_infer", "Δ infer FLOPs", "pct"),
                Column("miou", "mIoU", "miou"), Column("miou_sd", "mIoU sd (points)", "sd"),
                Column("d_miou", "Δ mIoU", "pts"), Column("d_miou_ci", "Δ mIoU 95 % CI (paired by seed)")]


# ---------------------------------------------------------------- Table 8
TABLE8_ROWS = [(1, frozenset()), (2, frozenset({"ANS"})), (3, frozenset({"ANS", "CAD"})),
               (4, frozenset({"ANS", "CAD", "CAL"})), (5, frozenset({"ANS", "RD"})), (6, frozenset({"ANS", "CASD"})),
               (7, frozenset(FULL))]


def table8_trials(trials: Sequence[Trial], s: Setting | None) -> dict[int, list[Trial]]:
    out: dict[int, list[Trial]] = {}
    if s is None:
        return out
    for no, sw in TABLE8_ROWS:
        out[no] = [t for t in trials if t.switches == sw and s.holds(t) and is_default(t)]
    return out


def table8(trials: Sequence[Trial], s: Setting | None, paper: dict) -> Table:
    p = paper["table8"]
    cols = [Column("no", "No.", "int"), Column("components", "components"), Column("n", "trials", "int"),
            *COST_COLUMNS, Column("d_energy", "Δ infer energy (board)", "pct"),
            Column("d_train_energy", "Δ train energy/step (board)", "pct"),
            Column("paper_train", "paper Δ train FLOPs", "pct"), Column("paper_infer", "paper Δ infer FLOPs", "pct"),
            Column("paper_energy", "paper Δ infer energy", "pct"), Column("paper_miou", "paper Δ mIoU", "pts")]
    t = Table("table8", "Table 8: DANCE's components (ANS, CAD, CAL, CASD, RD), Δ vs the baseline (row 1)",
              p["ref"], cols)
    rows = table8_trials(trials, s)
    if not any(rows.values()):
        t.missing = f"{NOT_IN_SWEEP}: no trial with the baseline or a Table 8 combination of components"
        return t
    base = rows.get(1) or []
    if not base:
        t.notes.append("no baseline trial in this setting: deltas cannot be computed")
    paper_rows = {r["row"]: r for r in p["rows"]}
    for no, sw in TABLE8_ROWS:
        ts = rows[no]
        pr = paper_rows.get(no, {})
        comp = "+".join(k for k in ("ANS", "CAD", "CAL", "CASD", "RD") if k in sw) or "baseline"
        row = {"no": no, "components": comp, "paper_train": pr.get("train_flops_pct"),
               "paper_infer": pr.get("infer_flops_pct"), "paper_energy": pr.get("infer_energy_pct"),
               "paper_miou": pr.get("miou_pts")}
        if ts:
            row.update(_metrics_row(ts, base))
        else:
            row.update(n=0, missing=NOT_IN_SWEEP)
        t.rows.append(row)
    if not any(r.get("energy") is not None for r in t.rows):
        t.notes.append(f"no trial has `{ENERGY_INFER}` (no board measured these models): "
                       "the energy columns are empty, not zero")
    return t


# ---------------------------------------------------------------- Tables 4, 6, 9
def _dance_variants(trials: Sequence[Trial], s: Setting | None, keep: Callable[[Trial], bool]) -> list[Trial]:
    if s is None:
        return []
    return [t for t in trials if t.is_dance and s.holds(t) and keep(t)]


def table4(trials: Sequence[Trial], s: Setting | None, paper: dict, base: Sequence[Trial]) -> Table:
    p = paper["table4"]
    cols = [Column("mode", "train.mode"), Column("method", "paper's name"), Column("n", "trials", "int"), *COST_COLUMNS,
            Column("paper_train", "paper Δ train FLOPs", "pct"), Column("paper_infer", "paper Δ infer FLOPs", "pct"),
            Column("paper_miou", "paper Δ mIoU", "pts")]
    t = Table("table4", "Table 4: co-optimisation vs separate optimisation, Δ vs the baseline", p["ref"], cols)
    by_mode = {m: _dance_variants(trials, s, lambda x, m=m: x.mode == m and is_default(x, mode=False))
               for m in ("co", "network_then_data", "data_then_network")}
    if not by_mode["network_then_data"] and not by_mode["data_then_network"]:
        t.missing = f"{NOT_IN_SWEEP}: no DANCE trial with train.mode network_then_data or data_then_network"
        return t
    if not base:
        t.notes.append("no baseline trial in this setting: deltas cannot be computed")
    for m, ts in by_mode.items():
        pr = p["rows"][m]
        row = {"mode": m, "method": pr["label"], "paper_train": pr["train_flops_pct"],
               "paper_infer": pr["infer_flops_pct"], "paper_miou": pr["miou_pts"]}
        row.update(_metrics_row(ts, base) if ts else {"n": 0, "missing": NOT_IN_SWEEP})
        t.rows.append(row)
    return t


def table6(trials: Sequence[Trial], s: Setting | None, paper: dict) -> Table:
    p = paper["table6"]
    cols = [Column("p_mode", "slimming.p_mode"), Column("n", "trials", "int"),
            Column("train_flops", "train FLOPs", "sci"), Column("d_train", "Δ train FLOPs", "pct"),
            Column("miou", "mIoU", "miou"), Column("d_miou", "Δ mIoU", "pts"),
            Column("paper_train", "paper Δ train FLOPs", "pct"), Column("paper_miou", "paper Δ mIoU", "pts")]
    t = Table("table6", "Table 6: the complexity indicator p (proposed vs random vs inverse 1 − p), Δ vs proposed",
              p["ref"], cols)
    by = {m: _dance_variants(trials, s, lambda x, m=m: x.p_mode == m and is_default(x, p_mode=False))
          for m in ("proposed", "random", "inverse")}
    if not by["random"] and not by["inverse"]:
        t.missing = f"{NOT_IN_SWEEP}: no DANCE trial with slimming.p_mode random or inverse"
        return t
    ref = by["proposed"]
    if not ref:
        t.notes.append("no trial with the proposed p in this setting: deltas cannot be computed")
    for m, ts in by.items():
        pr = p["rows"].get(m, {"train_flops_pct": 0.0, "miou_pts": 0.0} if m == "proposed" else {})
        row = {"p_mode": m, "paper_train": pr.get("train_flops_pct"), "paper_miou": pr.get("miou_pts")}
        row.update(_metrics_row(ts, ref) if ts else {"n": 0, "missing": NOT_IN_SWEEP})
        t.rows.append(row)
    return t


def _fmt_range(r: tuple[float, float] | None, pct: bool) -> str:
    if r is None:
        return "?"
    lo, hi = r
    return f"{100 * hi:g}%–{100 * lo:g}%" if pct else f"{hi:g}–{lo:g}"


def table9(trials: Sequence[Trial], s: Setting | None, paper: dict) -> list[Table]:
    p = paper["table9"]
    out = []
    for key, other, title in (("cal_range", "casd_range", "CAL weight range (hi–lo)"),
                              ("casd_range", "cal_range", "CASD drop-probability range (hi–lo)")):
        paper_rows = p["cal" if key == "cal_range" else "casd"]
        cols = [Column("range", title), Column("n", "trials", "int"), *COST_COLUMNS,
                Column("paper_train", "paper Δ train FLOPs", "pct"),
                Column("paper_infer", "paper Δ infer FLOPs", "pct"), Column("paper_miou", "paper Δ mIoU", "pts")]
        t = Table(f"table9_{key.split('_')[0]}", f"Table 9: {title}, Δ vs the paper's first row", p["ref"], cols)
        ts = _dance_variants(trials, s, lambda x, other=other: is_default(x, ranges=(other,)))
        groups: dict[tuple, list[Trial]] = {}
        for x in ts:
            groups.setdefault(x.range_of(key), []).append(x)
        if len(groups) < 2:
            t.missing = f"{NOT_IN_SWEEP}: fewer than two DANCE trials that differ only in slimming.{key}"
            out.append(t)
            continue
        order = [(r["lo"], r["hi"]) for r in paper_rows]
        keys = sorted(groups, key=lambda r: (order.index(r) if r in order else len(order), r))
        ref_key = order[0] if order[0] in groups else keys[0]
        if ref_key != order[0]:
            t.notes.append(f"the paper's first row ({_fmt_range(order[0], key == 'casd_range')}) is not in this sweep: "
                           f"deltas are vs {_fmt_range(ref_key, key == 'casd_range')}")
        for r in keys:
            pr = next((x for x in paper_rows if (x["lo"], x["hi"]) == r), {})
            first = r == order[0]
            row = {"range": _fmt_range(r, key == "casd_range") + (" (default)" if r == DEFAULT_RANGES[key] else ""),
                   "paper_train": 0.0 if first else pr.get("train_flops_pct"),
                   "paper_infer": 0.0 if first else pr.get("infer_flops_pct"),
                   "paper_miou": 0.0 if first else pr.get("miou_pts")}
            row.update(_metrics_row(groups[r], groups[ref_key]))
            t.rows.append(row)
        out.append(t)
    return out


# ---------------------------------------------------------------- Fig. 4
def fig4(trials: Sequence[Trial], s: Setting | None, paper: dict, reports: dict[str, dict | None]) -> Table:
    """``reports``: run id → the trial's pruning_report.json (None when it has none)."""
    cols = [Column("ratio", "target ratio", "share"), Column("ans_ms", "ANS: multi-scale pruned", "share"),
            Column("ans_other", "ANS: other pruned", "share"), Column("dance_ms", "DANCE: multi-scale pruned", "share"),
            Column("dance_other", "DANCE: other pruned", "share"),
            Column("d_ms_weights", "Δ pruned weights multi-scale (DANCE − ANS)", "int"),
            Column("d_other_weights", "Δ pruned weights other", "int"),
            Column("paper_ms_weights", "paper Table 7 Δ multi-scale", "int"),
            Column("paper_other_weights", "paper Table 7 Δ other", "int")]
    t = Table("fig4", "Fig. 4 / Table 7: share of pruned channels in multi-scale vs other header layers, "
                      "DANCE vs ANS only",
              f"{paper['fig4']['ref']}; {paper['table7']['ref']}", cols)
    if s is None:
        t.missing = f"{NOT_IN_SWEEP}: no ANS-only and DANCE trials"
        return t
    pool = [x for x in trials if s.holds(x, ratio=False) and is_default(x)
            and x.switches in (frozenset({"ANS"}), frozenset(FULL))]
    by: dict[tuple[float, str], list[dict]] = {}
    for x in pool:
        rep = reports.get(x.run_id)
        if rep and "summary" in rep and x.target_ratio is not None:
            by.setdefault((round(x.target_ratio, 6), "dance" if x.is_dance else "ans"), []).append(rep["summary"])
    ratios = sorted({r for r, k in by if (r, "ans") in by and (r, "dance") in by})
    if not ratios:
        t.missing = (f"{NOT_IN_SWEEP}: no pruning ratio with both an ANS-only and a DANCE trial "
                     "(and their pruning reports)")
        return t
    p7 = {round(r["ratio"], 6): r for r in paper["table7"]["rows"]}

    def avg(sums: list[dict], kind: str, key: str) -> float:
        return sum(x[kind][key] for x in sums) / len(sums)

    for r in ratios:
        a, d = by[(r, "ans")], by[(r, "dance")]
        t.rows.append({"ratio": r, "ans_ms": avg(a, "multiscale", "pruned_channel_fraction"),
                       "ans_other": avg(a, "other", "pruned_channel_fraction"),
                       "dance_ms": avg(d, "multiscale", "pruned_channel_fraction"),
                       "dance_other": avg(d, "other", "pruned_channel_fraction"),
                       "d_ms_weights": round(avg(d, "multiscale", "pruned_params")
                                             - avg(a, "multiscale", "pruned_params")),
                       "d_other_weights": round(avg(d, "other", "pruned_params") - avg(a, "other", "pruned_params")),
                       "paper_ms_weights": p7.get(r, {}).get("multiscale"),
                       "paper_other_weights": p7.get(r, {}).get("other")})
    t.notes.append("Fig. 4 has no numbers in the paper's text; its claim: " + paper["fig4"]["claim"] +
                   ". Table 7's weight differences come from unstructured pruning, ours from ANS's channel pruning.")
    return t


# ---------------------------------------------------------------- equal steps / epochs / FLOPs
EQUAL_STEPS, EQUAL_EPOCHS, EQUAL_FLOPS = "equal steps", "equal epochs", "equal training FLOPs (closest pair)"


def comparisons(trials: Sequence[Trial], s: Setting | None, paper: dict) -> Table:
    """Baseline vs default DANCE, paired by seed: at the baseline's epochs with ``drop_budget: steps`` (equal
    steps, the paper's ~0.64× point) and ``epochs`` (equal epochs, shorter ones), and the pair closest in FLOPs."""
    cols = [Column("kind", "comparison"), Column("budget", "DANCE drop_budget"),
            Column("base_epochs", "baseline epochs", "int"), Column("dance_epochs", "DANCE epochs", "int"),
            Column("seeds", "paired seeds", "int"), Column("flops_ratio", "train FLOPs DANCE/baseline", "ratio"),
            Column("infer_ratio", "infer FLOPs DANCE/baseline", "ratio"), Column("base_miou", "baseline mIoU", "miou"),
            Column("dance_miou", "DANCE mIoU", "miou"), Column("d_miou", "DANCE − baseline", "pts"),
            Column("d_miou_ci", "95 % CI (paired by seed)"), Column("verdict", "verdict")]
    adapt = s is not None and s.adaptation
    p1 = paper.get("table3_deeplabv3plus" if adapt else "table1_deeplabv3plus", {})
    ref = ""
    if p1:
        d = p1.get("dance", {})
        ref = (f"{p1.get('ref', '')}: DANCE {d.get('miou_pts', '?'):+} mIoU points at "
               f"{d.get('train_flops_pct', '?')} % training FLOPs ({'adaptation' if adapt else 'full training'})")
    t = Table("compare", "DANCE vs baseline at equal steps, equal epochs and equal training FLOPs", ref, cols)
    if s is None:
        t.missing = f"{NOT_IN_SWEEP}: no baseline and DANCE trials"
        return t
    base = [x for x in trials if x.is_baseline and x.mode == "co" and s.holds(x, epochs=False)]
    dance = [x for x in trials if x.is_dance and is_default(x) and s.holds(x, epochs=False, budget=False)]
    pairs = []
    for be in sorted({x.epochs for x in base}):
        for de, budget in sorted({(x.epochs, x.drop_budget) for x in dance}):
            b = [x for x in base if x.epochs == be]
            d = [x for x in dance if x.epochs == de and x.drop_budget == budget]
            bf, df = mean(b, "train_flops"), mean(d, "train_flops")
            bi, di = mean(b, "infer_flops_per_image"), mean(d, "infer_flops_per_image")
            pd = paired_pts(d, b)
            pairs.append({"budget": budget, "base_epochs": be, "dance_epochs": de,
                          "flops_ratio": df / bf if bf and df else None, "infer_ratio": di / bi if bi and di else None,
                          "base_miou": mean(b, "miou"), "dance_miou": mean(d, "miou"),
                          "d_miou": d_pts(mean(d, "miou"), mean(b, "miou")), "paired": pd,
                          "seeds": pd.n if pd else 0,
                          "d_miou_ci": None if pd is None or pd.lo is None else f"{pd.lo:+.2f} … {pd.hi:+.2f}",
                          "verdict": stats.verdict(pd)})
    if not pairs:
        t.missing = f"{NOT_IN_SWEEP}: no baseline and default DANCE trials in one setting"
        return t
    same = [x for x in pairs if x["base_epochs"] == x["dance_epochs"] == s.epochs]
    others = [x for x in pairs if x not in same and x["flops_ratio"]]
    closest = min(others, key=lambda x: abs(math.log(x["flops_ratio"]))) if others else None
    for x in pairs:
        kinds = []
        if x in same:
            kinds.append(EQUAL_STEPS if x["budget"] == "steps" else EQUAL_EPOCHS)
        if x is closest:
            kinds.append(EQUAL_FLOPS)
        x["kind"] = ", ".join(kinds) or "other epochs"
        t.rows.append(x)
    if closest is None:
        t.notes.append("no baseline/DANCE pair at different epoch counts: "
                       "the equal-FLOPs comparison is not in this sweep")
    if not any(x["budget"] == "steps" for x in same):
        t.notes.append("no DANCE trial with slimming.drop_budget steps at the baseline's epochs: "
                       "the equal-steps comparison is not in this sweep")
    t.notes.append(f"verdict: holds / does not hold only when the paired difference lies outside "
                   f"±{stats.SE_MULTIPLE:g} standard errors, else inconclusive (one seed: always inconclusive)")
    return t
