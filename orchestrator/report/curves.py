"""Did the compared runs train long enough? The val mIoU curves of the main setting's baseline and
default DANCE, mean over seeds per evaluated epoch, and whether the baseline's curve is flattening.

A curve is *flattening* when its slope over the last evaluation interval (points per epoch) is at most
``FLAT_SLOPE`` of its mean slope since the first evaluation, or when it fell over that interval; it is
*still rising* otherwise. Slopes, not shares of the gain, so that the verdict does not depend on how
often or how unevenly the runs evaluated: a straight line is "still rising" at 3 evaluations or at 40.
A verdict the reader can check against the numbers beside it, not a convergence proof.
"""
from __future__ import annotations

from typing import Callable, Sequence

from orchestrator.report.collect import Trial
from orchestrator.report.tables import Column, Setting, Table

FLAT_SLOPE = 0.25
History = Callable[[Trial], list[tuple[int, float]]]  # trial → (epoch, val mIoU) pairs


def mean_curve(trials: Sequence[Trial], history: History) -> dict[int, float]:
    """Epoch → mean val mIoU over the trials that evaluated at that epoch."""
    acc: dict[int, list[float]] = {}
    for t in trials:
        for epoch, v in history(t):
            acc.setdefault(int(epoch), []).append(float(v))
    return {e: sum(v) / len(v) for e, v in sorted(acc.items())}


def flattening(curve: dict[int, float]) -> tuple[str, str]:
    """(verdict, the numbers it rests on) for one mean curve."""
    pts = sorted(curve.items())
    if len(pts) < 3:
        return "unknown", f"{len(pts)} evaluation(s): too few to tell"
    (e0, v0), (ea, va), (eb, vb) = pts[0], pts[-2], pts[-1]
    total, last = vb - v0, vb - va
    mean_slope, last_slope = total / (eb - e0), last / (eb - ea)
    rising = last > 0 and (total <= 0 or last_slope > FLAT_SLOPE * mean_slope)
    verdict = "still rising" if rising else "flattening"
    ratio = f", {last_slope / mean_slope:.2f}x its mean slope" if total > 0 else ""
    text = (f"last interval (epochs {ea + 1}→{eb + 1}) {100 * last:+.2f} points "
            f"({100 * last_slope:+.2f}/epoch{ratio}); {100 * total:+.2f} points since epoch {e0 + 1}")
    return verdict, text


def curves_table(base: Sequence[Trial], dance: Sequence[Trial], s: Setting | None, history: History) -> Table:
    """The val curves of Table 8's rows 1 (baseline) and 7 (DANCE), and the baseline's flattening verdict."""
    cols = [Column("epoch", "epoch", "int"), Column("base", "baseline val mIoU", "miou"),
            Column("dance", "DANCE val mIoU", "miou")]
    t = Table("curves", "Training length: val mIoU by epoch (mean over seeds)",
              "the paper trains to convergence; here the budget is fixed, so the curve shows how close it came", cols)
    if s is None or not base:
        t.missing = "not in this sweep: needs the main setting's baseline trials"
        return t
    b, d = mean_curve(base, history), mean_curve(dance, history)
    if not b:
        t.missing = "the baseline trials logged no val mIoU history"
        return t
    for e in sorted(set(b) | set(d)):
        t.rows.append({"epoch": e + 1, "base": b.get(e), "dance": d.get(e)})
    verdict, text = flattening(b)
    t.notes.append(f"baseline ({len({x.seed for x in base})} seed(s)): **{verdict}** — {text}; "
                   f"'flattening' means the last interval's slope is at most {FLAT_SLOPE:.0%} of the curve's "
                   "mean slope, or the curve fell")
    if d:
        dv, dt = flattening(d)
        t.notes.append(f"DANCE ({len({x.seed for x in dance})} seed(s)): {dv} — {dt}")
    return t
