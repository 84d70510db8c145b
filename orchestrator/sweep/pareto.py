"""The Pareto front of a sweep: non-dominated ranks, hypervolume, CSV and scatter plot.

Objectives are ``(metric, mode)`` pairs; internally every one is turned into a cost to
minimise (``max`` objectives are negated). Rank 1 is the front; rank k+1 is the front of
what remains after removing ranks 1..k. The hypervolume is the volume dominated by the
front inside the box spanned by a reference point (exact, by slicing one objective at a
time — fine for the tens to hundreds of trials of a sweep).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np


def to_costs(values: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Minimisation form: ``max`` columns negated."""
    sign = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    return np.asarray(values, dtype=np.float64) * sign


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def pareto_ranks(values: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Rank of every row (1 = non-dominated), by repeated peeling of fronts."""
    costs = to_costs(values, modes)
    n = len(costs)
    ranks = np.zeros(n, dtype=int)
    remaining = set(range(n))
    rank = 1
    while remaining:
        front = [i for i in remaining if not any(dominates(costs[j], costs[i]) for j in remaining if j != i)]
        for i in front:
            ranks[i] = rank
        remaining -= set(front)
        rank += 1
    return ranks


def _hv_min(points: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of points (minimisation) against ``ref``; points not better than ref in every axis add nothing."""
    pts = points[np.all(points < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    if pts.shape[1] == 1:
        return float(ref[0] - pts[:, 0].min())
    order = np.argsort(pts[:, 0])
    pts = pts[order]
    volume = 0.0
    for i in range(len(pts)):
        x_lo = pts[i, 0]
        x_hi = pts[i + 1, 0] if i + 1 < len(pts) else ref[0]
        if x_hi <= x_lo:
            continue
        # The slab [x_lo, x_hi) is dominated by the first i+1 points in the remaining axes.
        volume += (x_hi - x_lo) * _hv_min(pts[: i + 1, 1:], ref[1:])
    return float(volume)


def hypervolume(values: np.ndarray, modes: Sequence[str], reference: Sequence[float]) -> float:
    """Volume dominated by ``values`` up to ``reference`` (both in the objectives' own units)."""
    costs = to_costs(values, modes)
    ref = to_costs(np.asarray(reference, dtype=np.float64)[None, :], modes)[0]
    return _hv_min(costs, ref)


def normalized_hypervolume(values: np.ndarray, modes: Sequence[str], reference: Sequence[float]) -> float:
    """Hypervolume after mapping each objective's ideal (best observed) value to 0 and the reference to 1.

    Raw hypervolumes multiply FLOPs by mIoU and mean little; this one lies in [0, 1] (1: a
    single trial at the ideal in every objective) and compares sweeps with the same reference.
    """
    costs = to_costs(values, modes)
    ref = to_costs(np.asarray(reference, dtype=np.float64)[None, :], modes)[0]
    ideal = costs.min(axis=0)
    span = np.where(ref > ideal, ref - ideal, 1.0)
    return _hv_min((costs - ideal) / span, np.ones(len(ref)))


def default_reference(values: np.ndarray, modes: Sequence[str], margin: float = 0.1) -> np.ndarray:
    """Each objective's worst value, moved ``margin`` of its range (or of its size) further out."""
    costs = to_costs(values, modes)
    worst, best = costs.max(axis=0), costs.min(axis=0)
    span = np.where(worst > best, worst - best, np.maximum(np.abs(worst), 1.0))
    return to_costs((worst + margin * span)[None, :], modes)[0]  # back to own units (negation is its own inverse)


def write_csv(path: Path, rows: list[dict], columns: Sequence[str]) -> Path:
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def plot_front(path: Path, rows: list[dict], x: str, y: str, *, title: str = "", label_key: str = "label") -> Path:
    """Scatter of every trial on two objectives; the front is joined and highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    ranked = [r for r in rows if r.get(x) is not None and r.get(y) is not None]
    others = [r for r in ranked if not r.get("is_pareto")]
    front = sorted((r for r in ranked if r.get("is_pareto")), key=lambda r: r[x])
    ax.scatter([r[x] for r in others], [r[y] for r in others], c="0.6", s=28, label="dominated")
    ax.plot([r[x] for r in front], [r[y] for r in front], "-o", c="tab:red", ms=7, label="Pareto front")
    for r in ranked:
        ax.annotate(str(r.get(label_key, "")), (r[x], r[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title or f"{y} vs {x}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
