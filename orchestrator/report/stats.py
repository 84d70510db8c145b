"""Paired comparisons over seeds, and the three verdicts a scientist would sign.

Two arms (say DANCE and the baseline) are paired by seed: each seed gives one difference
dₛ = arm(s) − base(s), so what both arms share through a seed (the initialisation, the
drops' generator) cancels. Over n seeds: the mean difference, its standard deviation, its
standard error se = sd/√n and a 95 % interval from Student's t with n − 1 degrees of freedom.

Verdict: "holds" / "does not hold" only when the mean difference lies outside ±2 standard
errors (in the claimed direction, or against it); otherwise "inconclusive". One seed has no
spread to judge by, so its verdict is always "inconclusive".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
SE_MULTIPLE = 2.0


@dataclass(frozen=True)
class Paired:
    """The paired difference of two arms over the seeds both have (mIoU in points where used so)."""

    n: int
    mean: float
    sd: float | None   # None with one seed
    se: float | None
    lo: float | None   # 95 % interval (Student's t)
    hi: float | None

    def text(self, unit: str = "") -> str:
        """``+0.42 ± 0.31 (95 % CI −0.91 … +1.75, 3 seeds)``: the numbers a verdict rests on."""
        if self.n < 2 or self.se is None:
            return f"{self.mean:+.2f}{unit} (one seed: no spread)"
        return (f"{self.mean:+.2f}{unit} ± {self.se:.2f} se (95 % CI {self.lo:+.2f} … {self.hi:+.2f}, "
                f"{self.n} seeds)")


def _t975(df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def paired(arm: Mapping[int, float], base: Mapping[int, float]) -> Paired | None:
    """Differences arm − base over the seeds both arms have; None when they share no seed."""
    seeds = sorted(set(arm) & set(base))
    if not seeds:
        return None
    d = [arm[s] - base[s] for s in seeds]
    n = len(d)
    m = sum(d) / n
    if n < 2:
        return Paired(1, m, None, None, None, None)
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / (n - 1))
    se = sd / math.sqrt(n)
    half = _t975(n - 1) * se
    return Paired(n, m, sd, se, m - half, m + half)


def verdict(p: Paired | None, *, higher_is_claimed: bool = True) -> str:
    """Three-way verdict on a paired difference (see the module doc)."""
    if p is None or p.se is None:
        return INCONCLUSIVE
    signed = p.mean if higher_is_claimed else -p.mean
    if p.se == 0:  # identical differences on every seed: the sign is the answer
        return HOLDS if signed > 0 else (FAILS if signed < 0 else INCONCLUSIVE)
    if signed > SE_MULTIPLE * p.se:
        return HOLDS
    if signed < -SE_MULTIPLE * p.se:
        return FAILS
    return INCONCLUSIVE


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None for the sd of fewer than two values)."""
    if not values:
        return None, None
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in values) / (len(values) - 1))
