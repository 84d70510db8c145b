"""Paper §3.2 and Table 9: what p does to each image.

CAD scales the image by ``lo + (hi − lo)·p`` (default [0.5, 1]); CASD drops it from an
epoch with probability ``hi − (hi − lo)·p`` (default [0, 1], i.e. 1 − p); CAL weighs its
loss by ``lo + (hi − lo)·p`` (default [0, 1], i.e. p). RD (the E2-Train baseline) drops
with a fixed probability regardless of p. Each is a switch; off means identity.

Knobs beyond the paper's rules (DESIGN §3 says why each exists):

* ``cad_levels``: the CAD ratio is snapped to that many evenly spaced levels in
  ``cad_range`` (nearest level), so the quantised sizes form a handful of buckets and the
  size-bucketed batches stay full (DESIGN §3: mean batch fill ≥ 95 %; the continuous ratio
  at a 16-px quantum makes ~31 buckets on Cityscapes and 89–93 % full batches). ``null``
  keeps the continuous ratio.
* ``p_mode`` (paper Table 6): ``proposed`` uses p = CDF(SC); ``random`` replaces it by a
  seeded uniform p per image, independent of complexity; ``inverse`` by ``1 − p``.
* ``cal_normalize``: ``batch`` is Eq. 2 as printed (Σ wᵢ·lᵢ / Σ wᵢ over the batch); ``epoch``
  divides Σ wᵢ·lᵢ by the batch's image count times the expected weight over the training
  set, so complex images get larger updates even when a batch holds images of one p (CAD
  buckets do), while the learning-rate scale stays that of an unweighted mean.
* ``drop_budget``: ``steps`` refills each epoch from kept images to the baseline's number of
  optimizer steps (dropping decides *which* images are seen); ``epochs`` trains the kept
  images once, so dropping also shortens the epoch.
"""
from __future__ import annotations

import math
import zlib
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lo: float = Field(ge=0.0)
    hi: float = Field(ge=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if self.lo > self.hi:
            raise ValueError(f"lo ({self.lo}) must not exceed hi ({self.hi})")
        return self


class SlimmingConfig(BaseModel):
    """The data-slimming switches and ranges (all on by default, RD off)."""

    model_config = ConfigDict(extra="forbid")
    cad: bool = True
    cad_range: Range = Range(lo=0.5, hi=1.0)
    casd: bool = True
    casd_range: Range = Range(lo=0.0, hi=1.0)
    cal: bool = True
    cal_range: Range = Range(lo=0.0, hi=1.0)
    rd: bool = False
    rd_prob: float = Field(default=0.5, ge=0.0, le=1.0)
    cad_levels: int | None = Field(default=6, ge=2, description=(
        "snap the CAD ratio to this many evenly spaced levels in cad_range (6: steps of 0.1 at [0.5, 1]), so sizes "
        "form few buckets and batches stay full; null = continuous ratio"))
    cal_normalize: Literal["batch", "epoch"] = Field(default="epoch", description=(
        "CAL's normaliser: batch = Eq. 2 as printed (divide by the batch's sum of weights, which cancels the "
        "weighting when a batch holds one p level); epoch = divide by the batch size times the expected weight "
        "over the training set, so complex images get larger updates"))
    drop_budget: Literal["steps", "epochs"] = Field(default="steps", description=(
        "what dropping (CASD, RD) saves: steps = each epoch is refilled from kept images to the baseline's "
        "number of optimizer steps (the paper's Table 8 FLOPs imply this); epochs = kept images once, "
        "shorter epochs"))
    p_mode: Literal["proposed", "random", "inverse"] = Field(default="proposed", description=(
        "the complexity indicator (paper Table 6): proposed p = CDF(SC), random = seeded uniform p per image "
        "independent of complexity, inverse = 1 - p"))

    @model_validator(mode="after")
    def _check(self) -> "SlimmingConfig":
        if self.casd and self.rd:
            raise ValueError("casd and rd are alternative dropping rules; switch one off")
        if self.cad and not (0.0 < self.cad_range.lo and self.cad_range.hi <= 1.0):
            raise ValueError("cad_range must lie in (0, 1]: CAD only downsamples")
        if self.casd and self.casd_range.hi > 1.0:
            raise ValueError("casd_range is a probability range and must lie in [0, 1]")
        if self.cal and self.cal_range.hi <= 0.0:
            raise ValueError("cal_range.hi must be > 0, or every image would weigh nothing")
        return self

    @property
    def uses_p(self) -> bool:
        """Whether any switch needs complexity scores at all."""
        return self.cad or self.casd or self.cal


def _lerp(p: np.ndarray, r: Range) -> np.ndarray:
    return r.lo + (r.hi - r.lo) * np.asarray(p, dtype=np.float64)


def indicator_p(p: np.ndarray, cfg: SlimmingConfig, seed: int, split: str) -> np.ndarray:
    """The p the slimming rules use, per ``cfg.p_mode`` (paper Table 6).

    ``proposed``: ``p`` itself; ``inverse``: ``1 − p``; ``random``: uniform [0, 1) draws from a
    generator seeded by (seed, split name, image count), one per image in the split's order,
    the same in every worker and every command that reads the split.
    """
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    if cfg.p_mode == "inverse":
        return 1.0 - p
    if cfg.p_mode == "random":
        rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(split.encode()),
                                                            len(p), 0x9A]))
        return rng.random(len(p))
    return p


def cad_ratio(p: np.ndarray, cfg: SlimmingConfig) -> np.ndarray:
    """Per-image downsampling ratio (1 where CAD is off), snapped to ``cfg.cad_levels`` levels when set."""
    p = np.asarray(p, dtype=np.float64)
    if not cfg.cad:
        return np.ones_like(p)
    if cfg.cad_levels is not None:
        steps = cfg.cad_levels - 1
        p = np.floor(np.clip(p, 0.0, 1.0) * steps + 0.5) / steps  # nearest level, halves up
    return _lerp(p, cfg.cad_range)


def drop_probability(p: np.ndarray, cfg: SlimmingConfig) -> np.ndarray:
    """Per-image probability of being left out of an epoch (0 where no dropping is on)."""
    p = np.asarray(p, dtype=np.float64)
    if cfg.casd:
        return cfg.casd_range.hi - (cfg.casd_range.hi - cfg.casd_range.lo) * p
    if cfg.rd:
        return np.full_like(p, cfg.rd_prob)
    return np.zeros_like(p)


def loss_weight(p: np.ndarray, cfg: SlimmingConfig) -> np.ndarray:
    """Per-image CAL weight (1 where CAL is off)."""
    p = np.asarray(p, dtype=np.float64)
    return _lerp(p, cfg.cal_range) if cfg.cal else np.ones_like(p)


def quantize_size(height: int, width: int, ratio: float, quantum: int, min_size: int = 0) -> tuple[int, int]:
    """Scale (height, width) by ``ratio`` keeping the aspect ratio, on the ``quantum`` grid.

    The shorter side is rounded to the nearest multiple of ``quantum``; the longer side is
    scaled by the same factor and rounded, so the aspect ratio moves by at most one quantum
    step (a per-side snap turned 128×256 into 128×192: −0.6 mIoU measured, DESIGN §3).
    Never upsamples past the stored size rounded down to the quantum, and never goes below
    ``max(quantum, min_size)`` rounded up to the quantum.
    """
    if quantum < 1:
        raise ValueError("quantum must be >= 1")
    floor_q = max(quantum, int(math.ceil(min_size / quantum)) * quantum)

    def snap(n: float, full: int) -> int:
        top = max(floor_q, (full // quantum) * quantum)
        return int(min(top, max(floor_q, math.floor(n / quantum + 0.5) * quantum)))  # halves up

    short, long_ = (height, width) if height <= width else (width, height)
    q_short = snap(short * ratio, short)
    # The long side follows the short side's realised scale, not the requested ratio.
    q_long = snap(long_ * q_short / short, long_)
    return (q_short, q_long) if height <= width else (q_long, q_short)


def dance_sizes(
    image_sizes: list[tuple[int, int]],
    p: np.ndarray,
    cfg: SlimmingConfig,
    quantum: int,
    min_size: int = 0,
) -> list[tuple[int, int]]:
    """Per-image (height, width) the network sees: stored (height, width) scaled by the CAD ratio, quantised."""
    ratios = cad_ratio(p, cfg)
    return [quantize_size(h, w, float(r), quantum, min_size) for (h, w), r in zip(image_sizes, ratios)]
