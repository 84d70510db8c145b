"""The paper's directional claims, checked against the tables: holds / does not hold /
inconclusive / not testable (trials missing), each with the numbers it rests on.

A claim about mIoU compares two rows *paired by seed* (:mod:`orchestrator.report.stats`):
"holds" or "does not hold" only when the mean paired difference lies outside ±2 standard
errors, otherwise "inconclusive" — always so with one seed, whose spread is unknown. A claim
over several pairs holds when every pair holds, does not hold when every pair fails, and
holds partly on a mix. Arms that differ by more than 10 % in training FLOPs say so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from orchestrator.report import stats
from orchestrator.report.tables import EQUAL_EPOCHS, EQUAL_FLOPS, EQUAL_STEPS, Table, budget_note

HOLDS, FAILS, INCONCLUSIVE = stats.HOLDS, stats.FAILS, stats.INCONCLUSIVE
PARTLY, UNTESTED = "holds partly", "not testable"


@dataclass
class Claim:
    text: str
    verdict: str
    evidence: str


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def _row(table: Table, key: str, value: Any) -> dict | None:
    r = next((r for r in table.rows if r.get(key) == value), None)
    return r if r is not None and r.get("n", 1) and r.get("miou") is not None else None


def _pair(a: dict, b: dict) -> tuple[str, str]:
    """(verdict that row ``a`` beats row ``b`` in mIoU, the paired difference as text) — paired by seed."""
    pd = stats.paired({s: 100 * v for s, v in a.get("by_seed", {}).items()},
                      {s: 100 * v for s, v in b.get("by_seed", {}).items()})
    if pd is None:
        return INCONCLUSIVE, "no seed in common: cannot pair"
    note = budget_note(a.get("train_flops"), b.get("train_flops"))
    return stats.verdict(pd), "Δ " + pd.text(" points") + (f"; {note}" if note else "")


def _combine(verdicts: Sequence[str]) -> str:
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    if verdicts and all(v == FAILS for v in verdicts):
        return FAILS
    return PARTLY if HOLDS in verdicts else INCONCLUSIVE


def claim_dance_vs_baseline(compare: Table) -> list[Claim]:
    """DANCE ≥ the baseline at equal steps and at equal epochs (cheaper), and at about equal training FLOPs."""
    texts = {EQUAL_STEPS: "DANCE reaches at least the baseline's mIoU at lower training and inference cost "
                          "(equal steps: drop_budget steps, the paper's ~0.64× point)",
             EQUAL_EPOCHS: "DANCE reaches at least the baseline's mIoU at lower training and inference cost "
                           "(equal epochs: drop_budget epochs)",
             EQUAL_FLOPS: "DANCE reaches at least the baseline's mIoU at equal training FLOPs"}
    if compare.missing or not compare.rows:
        return [Claim(texts[EQUAL_STEPS], UNTESTED, compare.missing or "no pair"),
                Claim(texts[EQUAL_FLOPS], UNTESTED, compare.missing or "no pair")]
    out = []
    for kind in (EQUAL_STEPS, EQUAL_EPOCHS):
        r = next((r for r in compare.rows if kind in r["kind"]), None)
        if r is None:
            if kind == EQUAL_STEPS or not any(EQUAL_STEPS in x["kind"] for x in compare.rows):
                out.append(Claim(texts[kind], UNTESTED, f"no baseline and DANCE trial pair at {kind}"))
            continue
        if r["d_miou"] is None or r["flops_ratio"] is None or r["infer_ratio"] is None:
            out.append(Claim(texts[kind], UNTESTED, "a metric is missing on one of the arms"))
            continue
        cheaper = r["flops_ratio"] < 1 and r["infer_ratio"] < 1
        pd = r.get("paired")
        verdict = stats.verdict(pd) if cheaper else FAILS
        ev = (f"{r['dance_epochs']} epochs: DANCE {_pct(r['dance_miou'])} vs baseline {_pct(r['base_miou'])} "
              f"(Δ {pd.text(' points') if pd else 'unpaired'}) at {r['flops_ratio']:.2f}× training and "
              f"{r['infer_ratio']:.2f}× inference FLOPs" + ("" if cheaper else "; DANCE is not cheaper"))
        out.append(Claim(texts[kind], verdict, ev))
    fl = next((r for r in compare.rows if EQUAL_FLOPS in r["kind"]), None)
    if fl is None or fl["d_miou"] is None or fl["flops_ratio"] is None:
        out.append(Claim(texts[EQUAL_FLOPS], UNTESTED,
                         "no baseline/DANCE pair at different epochs (so at comparable FLOPs)"))
    else:
        pd = fl.get("paired")
        note = budget_note(fl["flops_ratio"], 1.0)  # the ratio is DANCE's FLOPs over the baseline's
        ev = (f"baseline {fl['base_epochs']} epochs vs DANCE {fl['dance_epochs']} epochs at {fl['flops_ratio']:.2f}× "
              f"the baseline's training FLOPs: DANCE {_pct(fl['dance_miou'])} vs {_pct(fl['base_miou'])} "
              f"(Δ {pd.text(' points') if pd else 'unpaired'})" + (f"; {note}" if note else ""))
        out.append(Claim(texts[EQUAL_FLOPS], stats.verdict(pd), ev))
    return out


def claim_order(table: Table, key: str, order: Sequence[str], text: str) -> Claim:
    """``order`` decreasing in mIoU: each adjacent pair judged on its paired difference."""
    if table.missing:
        return Claim(text, UNTESTED, table.missing)
    rows = [(name, _row(table, key, name)) for name in order]
    absent = [n for n, r in rows if r is None]
    if absent:
        return Claim(text, UNTESTED, f"no finished trial for {', '.join(absent)}")
    parts, verdicts = [], []
    for (a, ra), (b, rb) in zip(rows, rows[1:]):
        v, ev = _pair(ra, rb)
        verdicts.append(v)
        parts.append(f"{a} {_pct(ra['miou'])} vs {b} {_pct(rb['miou'])}: {ev} → {v}")
    return Claim(text, _combine(verdicts), "; ".join(parts))


def claim_co_vs_separate(t4: Table) -> Claim:
    text = "co-optimisation beats separate optimisation (higher mIoU than both network-then-data and data-then-network)"
    if t4.missing:
        return Claim(text, UNTESTED, t4.missing)
    co = _row(t4, "mode", "co")
    seps = [(m, _row(t4, "mode", m)) for m in ("network_then_data", "data_then_network")]
    seps = [(m, r) for m, r in seps if r is not None]
    if co is None or not seps:
        return Claim(text, UNTESTED, "co-optimised or separate trials missing")
    parts, verdicts = [], []
    for m, r in seps:
        v, ev = _pair(co, r)
        verdicts.append(v)
        parts.append(f"co {_pct(co['miou'])} vs {m} {_pct(r['miou'])}: {ev} → {v}")
    verdict = _combine(verdicts)
    if verdict == HOLDS and len(seps) < 2:
        verdict = PARTLY
    return Claim(text, verdict, "; ".join(parts))


def claim_casd_vs_rd(t8: Table) -> Claim:
    text = "CASD beats random dropping (Table 8 row 6 ANS+CASD > row 5 ANS+RD in mIoU)"
    if t8.missing:
        return Claim(text, UNTESTED, t8.missing)
    r5, r6 = _row(t8, "no", 5), _row(t8, "no", 6)
    if r5 is None or r6 is None:
        return Claim(text, UNTESTED, f"no finished trial for row {'5' if r5 is None else '6'}")
    v, ev = _pair(r6, r5)
    return Claim(text, v, f"ANS+CASD {_pct(r6['miou'])} vs ANS+RD {_pct(r5['miou'])}: {ev}")


def claim_multiscale(f4: Table) -> Claim:
    text = "DANCE prunes a larger share of the multi-scale (ASPP) channels than ANS alone, at every ratio"
    if f4.missing:
        return Claim(text, UNTESTED, f4.missing)
    parts, ok = [], []
    for r in f4.rows:
        more = r["dance_ms"] > r["ans_ms"]
        ok.append(more)
        parts.append(f"{100 * r['ratio']:.0f} %: DANCE {100 * r['dance_ms']:.1f} % vs ANS {100 * r['ans_ms']:.1f} % "
                     f"({'more' if more else 'not more'})")
    verdict = HOLDS if all(ok) else (FAILS if not any(ok) else PARTLY)
    return Claim(text, verdict, "; ".join(parts))


def evaluate_claims(tables: dict[str, Table]) -> list[Claim]:
    out = claim_dance_vs_baseline(tables["compare"])
    out.append(claim_casd_vs_rd(tables["table8"]))
    out.append(claim_order(tables["table6"], "p_mode", ("proposed", "random", "inverse"),
                           "the proposed p beats random p, which beats inverse 1 − p (mIoU)"))
    out.append(claim_co_vs_separate(tables["table4"]))
    out.append(claim_multiscale(tables["fig4"]))
    return out
