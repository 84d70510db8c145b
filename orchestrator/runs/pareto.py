"""The Pareto front of a sweep: non-dominated ranks, hypervolume, CSV and scatter plot.

Objectives are ``(metric, mode)`` pairs; internally every one is turned into a cost to
minimise (``max`` objectives are negated). Rank 1 is the front; rank k+1 is the front of
what remains after removing ranks 1..k. The hypervolume is the volume dominated by the
front inside the box spanned by a reference point (exact, by slicing one objective at a
time — fine for the tens to hundreds of trials of a sweep).
"""
from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from orchestrator.runs.front_html import write_front_html
from orchestrator.runs.schema import (
    COMPONENTS_TAG,
    HIL_STATE_TAG,
    HYPERVOLUME,
    IS_PARETO,
    PARETO_RANK,
    TRIAL_ID_TAG,
    TRIALS_RANKED,
    UNIT_COPIES,
    plain_metrics,
)
from orchestrator.runs.tracking import log_artifacts, log_epoch, sweep_children
from workers.metrics import INFER_FLOPS_PER_IMAGE, TRAIN_FLOPS


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


#: axis scale and label of the figures a front is usually drawn on
UNITS = {TRAIN_FLOPS: (UNIT_COPIES[TRAIN_FLOPS][1], "training TFLOPs"),
         INFER_FLOPS_PER_IMAGE: (UNIT_COPIES[INFER_FLOPS_PER_IMAGE][1], "inference GFLOPs / image"),
         "device.energy_j_per_image": (1.0, "J / image (measured on the board)"),
         "device.latency_ms_p50": (1.0, "p50 latency, ms (measured on the board)"), "miou": (1.0, "mIoU")}


def plot_front(path: Path, rows: list[dict], x: str | Sequence[str], y: str, *, title: str = "",
               label_key: str = "label") -> Path:
    """Scatter of every trial on ``y`` against each of ``x`` (one panel per cost objective); the front is
    joined and highlighted, points carry their ``label_key`` (what sets the trial apart), axes their units."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [x] if isinstance(x, str) else list(x)
    fig, axes = plt.subplots(1, len(xs), figsize=(5.8 * len(xs), 4.6), squeeze=False)
    for ax, xk in zip(axes[0], xs):
        _panel(ax, rows, xk, y, label_key)
    fig.suptitle(title or f"{y} against the cost objectives")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # labels near an edge stay in the picture
    plt.close(fig)
    return Path(path)


def _panel(ax, rows: list[dict], x: str, y: str, label_key: str) -> None:
    sx, lx = UNITS.get(x, (1.0, x))
    sy, ly = UNITS.get(y, (1.0, y))
    ranked = [r for r in rows if r.get(x) is not None and r.get(y) is not None]
    others = [r for r in ranked if not r.get("is_pareto")]
    front = sorted((r for r in ranked if r.get("is_pareto")), key=lambda r: r[x])
    if others:  # a legend entry only for what is drawn
        ax.scatter([r[x] / sx for r in others], [r[y] / sy for r in others], c="0.6", s=28, label="dominated")
    if front:
        ax.plot([r[x] / sx for r in front], [r[y] / sy for r in front], "-o", c="tab:red", ms=7,
                label="Pareto front")
    for r in ranked:
        ax.annotate(str(r.get(label_key, "")), (r[x] / sx, r[y] / sy), fontsize=7, xytext=(4, 4),
                    textcoords="offset points", annotation_clip=False)
    ax.set_xlabel(lx)
    ax.set_ylabel(ly)
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    ax.legend(loc="best", fontsize=8)


# -- ranking a sweep's runs in MLflow
def rank_front(client, exp_id: str, parent_id: str, sweep_id: str, objectives: Sequence[tuple[str, str]], *,
               reference: Sequence[float] | None = None, hil: bool = False):
    """Rank a sweep's ended trials on ``objectives`` (``(metric, mode)`` pairs) and log the front to the parent.

    Called when the sweep ends and again whenever a board measurement lands. A trial lacking
    an objective (stopped early, failed, not measured) is ranked after every complete one and
    its missing figure stays empty: never 0; a FAILED trial gets no rank at all. Every child gets
    ``is_pareto`` and, unless it failed, ``pareto_rank``;
    the parent gets ``pareto.csv``, ``pareto.png`` and the normalised hypervolume.
    Returns (rows, ranked, hypervolume).
    """
    names, modes = [m for m, _ in objectives], [mode for _, mode in objectives]
    predicted = [f"predicted.{k}" for k in names if k.startswith("device.")] if hil else []
    rows = [_front_row(run, names, predicted, hil) for run in sweep_children(client, exp_id, sweep_id)]
    rows.sort(key=lambda r: r["trial"])
    ranked = [r for r in rows if r["status"] == "FINISHED" and all(r.get(k) is not None for k in names)]
    hv = None
    if ranked:
        values = np.array([[r[k] for k in names] for r in ranked], dtype=np.float64)
        ranks = pareto_ranks(values, modes)
        for r, k in zip(ranked, ranks):
            r[PARETO_RANK], r[IS_PARETO] = int(k), int(k == 1)
        ref = np.asarray(reference, dtype=np.float64) if reference else default_reference(values, modes)
        hv = normalized_hypervolume(values[ranks == 1], modes, ref)
    worst = max((r[PARETO_RANK] for r in ranked), default=0)
    for r in rows:
        if r["status"] == "FAILED":  # its own error: nothing to rank (no rank, not the front's)
            r[PARETO_RANK], r[IS_PARETO] = None, 0
        elif PARETO_RANK not in r:  # stopped early or missing an objective: after every complete trial
            r[PARETO_RANK], r[IS_PARETO] = worst + 1, 0
        log_epoch({PARETO_RANK: r[PARETO_RANK], IS_PARETO: r[IS_PARETO]}, 0, r["run_id"], client)
        # the same as tags: filterable in the UI's search box (tags.is_pareto = 'true')
        client.set_tag(r["run_id"], IS_PARETO, "true" if r[IS_PARETO] else "false")
        client.set_tag(r["run_id"], PARETO_RANK, "-" if r[PARETO_RANK] is None else str(r[PARETO_RANK]))
    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        cols = ["trial", "run_id", "status", "label", "epochs", *names, *(["hil"] if hil else []), *predicted,
                PARETO_RANK, IS_PARETO]
        files = [write_csv(tmp_p / "pareto.csv", sorted(rows, key=rank_order), cols)]
        if len(names) >= 2 and ranked:
            y = "miou" if "miou" in names else plot_axes(names)[1]
            xs = [n for n in names if n != y]
            files.append(plot_front(tmp_p / "pareto.png", ranked, xs, y, title=f"sweep {sweep_id}", label_key="name"))
            files.append(write_front_html(tmp_p / "pareto.html", ranked, xs, y, exp_id, UNITS, f"sweep {sweep_id}"))
        log_artifacts(files, parent_id, client=client)
    if hv is not None:
        log_epoch({HYPERVOLUME: hv, TRIALS_RANKED: len(ranked)}, 0, parent_id, client)
    return rows, ranked, hv


def rank_order(row: dict) -> tuple:
    """Sort key of a front row: ranked trials by rank, then those without a rank (failed)."""
    rank = row.get(PARETO_RANK)
    return (rank is None, rank or 0, row.get("trial", ""))


def _front_row(run, names: list[str], predicted: list[str], hil: bool) -> dict:
    """One trial run as a row of the front: its id, status, label, epochs done and objectives."""
    m, tags = plain_metrics(run.data.metrics), run.data.tags  # grouped names, or a store's plain ones
    row = {"run_id": run.info.run_id, "trial": tags.get(TRIAL_ID_TAG, "?"), "status": run.info.status,
           "label": tags.get(COMPONENTS_TAG, ""), "epochs": int(m["epoch"]) + 1 if "epoch" in m else 0,
           "name": run.info.run_name or tags.get(TRIAL_ID_TAG, "?")}
    row.update({k: m.get(k) for k in names})
    for k in ("miou", "train_flops", "infer_flops_per_image"):
        row.setdefault(k, m.get(k))
    if hil:
        row["hil"] = tags.get(HIL_STATE_TAG, "not measured")
        row.update({k: m.get(k) for k in predicted})
    return row


def plot_axes(names: list[str]) -> tuple[str, str]:
    """(x, y) of the front's plot: accuracy against measured energy, else training FLOPs, else the first two."""
    for x in ("device.energy_j_per_image", "train_flops"):
        if {x, "miou"} <= set(names):
            return x, "miou"
    return names[1], names[0]
