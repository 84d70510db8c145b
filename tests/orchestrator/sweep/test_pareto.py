"""Pareto ranks and hypervolume on points whose answers are known by hand."""
from __future__ import annotations

import numpy as np
import pytest

from orchestrator.runs.pareto import (
    default_reference,
    dominates,
    hypervolume,
    normalized_hypervolume,
    pareto_ranks,
    plot_front,
    write_csv,
)


def test_ranks_peel_fronts():
    v = np.array([[1, 3], [2, 2], [3, 1], [3, 3], [4, 4], [2, 2]], float)
    assert pareto_ranks(v, ["min", "min"]).tolist() == [1, 1, 1, 2, 3, 1]  # a duplicate is not dominated


def test_max_objectives_are_flipped():
    # (mIoU max, FLOPs min): b is better in both than c; a trades mIoU for FLOPs.
    v = np.array([[0.5, 10.0], [0.6, 20.0], [0.55, 25.0]])
    assert pareto_ranks(v, ["max", "min"]).tolist() == [1, 1, 2]
    assert dominates(np.array([1.0, 1.0]), np.array([1.0, 2.0])) and not dominates(np.array([1.0, 1.0]),
                                                                                   np.array([1.0, 1.0]))


def test_hypervolume_2d_by_hand():
    v = np.array([[1, 3], [2, 2], [3, 1]], float)
    # Staircase under (4, 4): 3·1 + 2·1 + 1·1 = 6.
    assert hypervolume(v, ["min", "min"], [4, 4]) == pytest.approx(6.0)
    # Dominated points add nothing; points outside the box add nothing.
    assert hypervolume(np.vstack([v, [[3.5, 3.5], [5, 0]]]), ["min", "min"], [4, 4]) == pytest.approx(6.0)
    m = np.array([[0.5, 10.0], [0.6, 20.0]])  # mIoU max, FLOPs min, reference (0, 40): 15 + 12 − 10
    assert hypervolume(m, ["max", "min"], [0.0, 40.0]) == pytest.approx(17.0)


def test_hypervolume_3d_by_hand():
    # Two boxes under (2, 2, 2): [0,2]x[0,2]x[1,2] from (0,0,1) → 4 and [1,2]x[1,2]x[0,2] from (1,1,0) → 2;
    # their overlap [1,2]x[1,2]x[1,2] = 1; union 5.
    v = np.array([[0, 0, 1], [1, 1, 0]], float)
    assert hypervolume(v, ["min"] * 3, [2, 2, 2]) == pytest.approx(5.0)
    # Monte-Carlo cross-check on random points.
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1, size=(6, 3))
    samples = rng.uniform(0, 1, size=(200_000, 3))
    dominated = np.zeros(len(samples), bool)
    for p in pts:
        dominated |= np.all(samples >= p, axis=1)
    assert hypervolume(pts, ["min"] * 3, [1, 1, 1]) == pytest.approx(dominated.mean(), abs=5e-3)


def test_normalised_hypervolume_and_reference():
    v = np.array([[0.5, 10.0], [0.6, 20.0]])
    ref = default_reference(v, ["max", "min"])
    assert ref.tolist() == pytest.approx([0.49, 21.0])  # worst value moved 10 % of the range further
    hv = normalized_hypervolume(v, ["max", "min"], ref)
    assert 0.0 < hv < 1.0
    # One trial at the ideal of every objective fills the unit box.
    assert normalized_hypervolume(np.array([[0.6, 10.0]]), ["max", "min"], ref) == pytest.approx(1.0)


def test_csv_and_plot(tmp_path):
    rows = [{"trial": "a", "miou": 0.5, "train_flops": 1e9, "is_pareto": 1},
            {"trial": "b", "miou": 0.4, "train_flops": 2e9, "is_pareto": 0}]
    write_csv(tmp_path / "p.csv", rows, ["trial", "miou", "train_flops", "is_pareto"])
    assert (tmp_path / "p.csv").read_text().splitlines()[1] == "a,0.5,1000000000.0,1"
    png = plot_front(tmp_path / "p.png", rows, "train_flops", "miou", label_key="trial")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
