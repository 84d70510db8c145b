"""The paper's directional claims, checked against the tables: holds / does not hold / not
testable (trials missing), each with the numbers it rests on.

One seed per trial: differences smaller than ``NOISE_PTS`` mIoU points are flagged as within
the run-to-run spread measured on the synthetic set (docs/training.md: about ±0.5 point),
but the verdict itself is the plain comparison of the numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from orchestrator.report.tables import Table

NOISE_PTS = 0.5
HOLDS, FAILS, PARTLY, UNTESTED = "holds", "does not hold", "holds partly", "not testable"


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


def _noise(diff_pts: float) -> str:
    return (f" (|Δ| {abs(diff_pts):.2f} points: within the ±{NOISE_PTS} spread of one seed)"
            if abs(diff_pts) < NOISE_PTS else "")


def claim_dance_vs_baseline(compare: Table) -> list[Claim]:
    text_ep = "DANCE reaches at least the baseline's mIoU at lower training and inference cost (equal epochs)"
    text_fl = "DANCE reaches at least the baseline's mIoU at equal training FLOPs"
    if compare.missing or not compare.rows:
        return [Claim(text_ep, UNTESTED, compare.missing or "no pair"),
                Claim(text_fl, UNTESTED, compare.missing or "no pair")]
    out = []
    eq = next((r for r in compare.rows if "equal epochs" in r["kind"]), None)
    if eq is None or eq["d_miou"] is None or eq["flops_ratio"] is None or eq["infer_ratio"] is None:
        out.append(Claim(text_ep, UNTESTED,
                         "no baseline and DANCE trial with the same number of epochs and all metrics"))
    else:
        ok_miou = eq["d_miou"] >= 0
        cheaper = eq["flops_ratio"] < 1 and eq["infer_ratio"] < 1
        ev = (f"{eq['dance_epochs']} epochs: DANCE {_pct(eq['dance_miou'])} vs baseline {_pct(eq['base_miou'])} "
              f"(Δ {eq['d_miou']:+.2f} points{_noise(eq['d_miou'])}) at {eq['flops_ratio']:.2f}× training and "
              f"{eq['infer_ratio']:.2f}× inference FLOPs")
        out.append(Claim(text_ep, HOLDS if ok_miou and cheaper else FAILS, ev))
    fl = next((r for r in compare.rows if "equal training FLOPs" in r["kind"]), None)
    if fl is None or fl["d_miou"] is None or fl["flops_ratio"] is None:
        out.append(Claim(text_fl, UNTESTED, "no baseline/DANCE pair at different epochs (so at comparable FLOPs)"))
    else:
        ev = (f"baseline {fl['base_epochs']} epochs vs DANCE {fl['dance_epochs']} epochs at {fl['flops_ratio']:.2f}× "
              f"the baseline's training FLOPs: DANCE {_pct(fl['dance_miou'])} vs {_pct(fl['base_miou'])} "
              f"(Δ {fl['d_miou']:+.2f} points{_noise(fl['d_miou'])})"
              + (f", {fl['infer_ratio']:.2f}× inference FLOPs" if fl["infer_ratio"] is not None else ""))
        out.append(Claim(text_fl, HOLDS if fl["d_miou"] >= 0 else FAILS, ev))
    return out


def claim_order(table: Table, key: str, order: Sequence[str], text: str) -> Claim:
    """``order`` strictly decreasing in mIoU (each adjacent pair checked)."""
    if table.missing:
        return Claim(text, UNTESTED, table.missing)
    rows = [(name, _row(table, key, name)) for name in order]
    absent = [n for n, r in rows if r is None]
    if absent:
        return Claim(text, UNTESTED, f"no finished trial for {', '.join(absent)}")
    parts, ok = [], []
    for (a, ra), (b, rb) in zip(rows, rows[1:]):
        d = 100 * (ra["miou"] - rb["miou"])
        ok.append(d > 0)
        parts.append(f"{a} {_pct(ra['miou'])} {'>' if d > 0 else '≤'} {b} {_pct(rb['miou'])} (Δ {d:+.2f}{_noise(d)})")
    verdict = HOLDS if all(ok) else (FAILS if not any(ok) else PARTLY)
    return Claim(text, verdict, "; ".join(parts))


def claim_co_vs_separate(t4: Table) -> Claim:
    text = "co-optimisation beats separate optimisation (higher mIoU than both network-then-data and data-then-network)"
    if t4.missing:
        return Claim(text, UNTESTED, t4.missing)
    co = _row(t4, "mode", "co")
    seps = [(m, _row(t4, "mode", m)) for m in ("network_then_data", "data_then_network")]
    seps = [(m, r) for m, r in seps if r is not None]
    if co is None or not seps:
        return Claim(text, UNTESTED, "co-optimised or separate trials missing")
    parts, ok = [], []
    for m, r in seps:
        d = 100 * (co["miou"] - r["miou"])
        ok.append(d > 0)
        parts.append(f"co {_pct(co['miou'])} vs {m} {_pct(r['miou'])} (Δ {d:+.2f}{_noise(d)}; train FLOPs "
                     f"{co['train_flops']:.3g} vs {r['train_flops']:.3g})")
    verdict = HOLDS if all(ok) and len(seps) == 2 else (FAILS if not any(ok) else PARTLY)
    return Claim(text, verdict, "; ".join(parts))


def claim_casd_vs_rd(t8: Table) -> Claim:
    text = "CASD beats random dropping (Table 8 row 6 ANS+CASD > row 5 ANS+RD in mIoU)"
    if t8.missing:
        return Claim(text, UNTESTED, t8.missing)
    r5, r6 = _row(t8, "no", 5), _row(t8, "no", 6)
    if r5 is None or r6 is None:
        return Claim(text, UNTESTED, f"no finished trial for row {'5' if r5 is None else '6'}")
    d = 100 * (r6["miou"] - r5["miou"])
    return Claim(text, HOLDS if d > 0 else FAILS,
                 f"ANS+CASD {_pct(r6['miou'])} vs ANS+RD {_pct(r5['miou'])} (Δ {d:+.2f} points{_noise(d)}); "
                 f"train FLOPs {r6['train_flops']:.3g} vs {r5['train_flops']:.3g}")


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
