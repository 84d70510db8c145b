"""How full DANCE's size-bucketed batches are on a simulated dataset (DESIGN §3: ≥ 95 %).

Size bucketing (one size per batch, never padded) leaves a partial batch at the end of
every bucket, so many buckets mean small batches, while the baseline always trains full
ones — a confound in every comparison. :func:`simulated_fill` plans a few epochs of a
dataset with realistic p values (Maxwell-distributed complexity scores mapped through a
fitted CDF, so p is close to uniform) and reports the mean fill and bucket count, the
figure `benchmarks/bench_batch_fill.py` prints and the tests check.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from workers.dance.cdf import MaxwellCDF
from workers.dance.sampler import plan_epoch
from workers.dance.slimming import SlimmingConfig, dance_sizes, drop_probability

__all__ = ["FillResult", "simulated_p", "simulated_fill"]


@dataclass(frozen=True)
class FillResult:
    fill: float          # mean over epochs of images trained / (steps × batch × ranks)
    mean_batch: float    # mean images per rank per step
    buckets: float       # mean number of distinct sizes trained per epoch
    unbatched: float     # mean images per epoch that found no batch
    moved: float         # mean fraction of trained images placed in a smaller bucket than their own


def simulated_p(n: int, seed: int = 0) -> np.ndarray:
    """p of ``n`` images whose complexity scores are Maxwell-distributed, through a CDF fitted on them."""
    sc = stats.maxwell.rvs(loc=20.0, scale=8.0, size=n, random_state=np.random.default_rng(seed))
    return MaxwellCDF.fit(sc).p(sc)


def simulated_fill(n: int, size: tuple[int, int], batch_size: int, world_size: int, slimming: SlimmingConfig,
                   quantum: int, *, min_size: int = 0, epochs: int = 4, seed: int = 0,
                   fill: bool = False) -> FillResult:
    """Mean batch fill of the DANCE sampler over ``epochs`` epochs of ``n`` images stored at ``size``."""
    p = simulated_p(n, seed)
    sizes = dance_sizes([tuple(size)] * n, p, slimming, quantum, min_size)
    drop = drop_probability(p, slimming)
    fills, batches, buckets, unbatched, moved = [], [], [], [], []
    for e in range(epochs):
        plan = plan_epoch(sizes, drop, batch_size, seed=seed, epoch=e, world_size=world_size, fill=fill)
        fills.append(plan.batch_fill(batch_size))
        batches.append(plan.trained / max(1, len(plan.batches) * world_size))
        buckets.append(len(set(plan.sizes)))
        unbatched.append(plan.unbatched)
        moved.append(plan.moved / max(1, plan.trained))
    return FillResult(float(np.mean(fills)), float(np.mean(batches)), float(np.mean(buckets)),
                      float(np.mean(unbatched)), float(np.mean(moved)))
