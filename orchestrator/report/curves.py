"""Did the compared runs train long enough? The val mIoU curves of the main setting's baseline and
default DANCE, mean over seeds per evaluated epoch, and whether the baseline's curve is flattening.

A curve is *flattening* when its last evaluation interval gained at most ``FLAT_SHARE`` of what the
whole curve gained from its first evaluation (and *still rising* otherwise): a verdict the reader can
check against the numbers beside it, not a convergence proof.
"""
from __future__ import annotations

from typing import Callable, Sequence

from orchestrator.report.collect import Trial
from orchestrator.report.tables import Column, Setting, Table

FLAT_SHARE = 0.10
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
    total = pts[-1][1] - pts[0][1]
    last = pts[-1][1] - pts[-2][1]
    share = last / total if total > 0 else float("inf")
    verdict = "flattening" if total > 0 and share <= FLAT_SHARE else "still rising" if last > 0 else "flattening"
    text = (f"last interval (epochs {pts[-2][0] + 1}→{pts[-1][0] + 1}) {100 * last:+.2f} points of "
            f"{100 * total:+.2f} since epoch {pts[0][0] + 1}")
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
                   f"'flattening' means the last interval gained at most {FLAT_SHARE:.0%} of the whole curve's gain")
    if d:
        dv, dt = flattening(d)
        t.notes.append(f"DANCE ({len({x.seed for x in dance})} seed(s)): {dv} — {dt}")
    return t
