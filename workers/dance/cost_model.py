"""Paper §3.4: theoretical cost savings, Eqs. 3 and 4, and a refined predictor.

The paper's equations, exactly as printed (``r`` = ANS keep ratio, ``S`` = stages):

    Eq. 3   R_infer = 1/I Σ_i [1 − (0.5·p_i + 0.5)² · r]
    Eq. 4   R_train = 1/(S·I) Σ_s Σ_i p_i · [1 − (0.5·p_i + 0.5)² · r^(s/S)]

Both are cost *reductions* (1 − remaining cost / baseline cost). Their assumptions:

* CAD scales an image's cost by ratio² (cost ∝ pixels), with ratio = 0.5p + 0.5;
* ANS scales the *whole network's* cost by r (inference) or r^(s/S) (training stage s);
* CASD keeps an image with probability p (drop probability 1 − p).

Eq. 4 as printed puts p_i outside the bracket, which makes an always-dropped image (p = 0)
save nothing; the consistent form — expected remaining cost p_i·(0.5p_i+0.5)²·r^(s/S) — is
``1 − p_i(0.5p_i+0.5)²r^(s/S)``. :func:`paper_eq4` implements the printed form,
:func:`training_reduction` the consistent one, generalised to the configured ranges
(CAD ratio ``lo + (hi−lo)p``, keep probability ``1 − drop_probability(p)``).

In reality only the header is pruned, and pruning channels by a factor k cuts a header
conv's FLOPs by k (first layer: outputs only) to k² (inner layers: inputs and outputs). The
refined predictor therefore uses the header's FLOP share ``h`` of the unpruned network and
the pruned header's FLOP fraction ``q`` (both counted, see :func:`workers.cost.count_flops`):
remaining cost per image = area ratio × ((1 − h) + h·q), with the area ratio of the
quantised size the network really sees. Sizes are quantised to the network's size quantum,
so the area ratio is not exactly ratio².
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from workers.dance.slimming import SlimmingConfig, cad_ratio, drop_probability, quantize_size

__all__ = ["paper_eq3", "paper_eq4", "inference_reduction", "training_reduction", "network_cost_fraction",
           "area_ratios", "predict_inference_fraction", "predict_training_fraction", "stage_keep_fractions"]


def _p(p: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError("need at least one p value")
    if np.any((arr < 0) | (arr > 1)) or not np.all(np.isfinite(arr)):
        raise ValueError("p values must lie in [0, 1]")
    return arr


def paper_eq3(p: Sequence[float] | np.ndarray, r: float) -> float:
    """Eq. 3 as printed: inference cost reduction ``mean(1 − (0.5p+0.5)²·r)``."""
    p = _p(p)
    return float(np.mean(1.0 - (0.5 * p + 0.5) ** 2 * r))


def paper_eq4(p: Sequence[float] | np.ndarray, r: float, stages: int) -> float:
    """Eq. 4 as printed: ``1/(S·I) Σ_s Σ_i p_i·[1 − (0.5p_i+0.5)²·r^(s/S)]``."""
    p = _p(p)
    s = np.arange(1, stages + 1)[:, None] / stages
    return float(np.mean(p[None, :] * (1.0 - (0.5 * p[None, :] + 0.5) ** 2 * r ** s)))


def stage_keep_fractions(r: float, stages: int, schedule: str = "paper") -> np.ndarray:
    """Channel keep fraction during each training stage s = 1..S.

    ``"paper"`` (= ``"algorithm1"``): r^(s/S), as in Eq. 4. Algorithm 1 as DESIGN §3 states it
    prunes after epochs 0, t_max/S, …, so apart from the first epoch, stage s trains the
    network pruned s times. ``"end_of_stage"``: r^((s−1)/S) — pruning at the END of stage s
    means stage s trains the network pruned s−1 times (the last prune only helps inference).
    """
    s = np.arange(1, stages + 1, dtype=np.float64)
    if schedule in ("paper", "algorithm1"):
        return r ** (s / stages)
    if schedule == "end_of_stage":
        return r ** ((s - 1) / stages)
    raise ValueError(f"schedule must be 'paper', 'algorithm1' or 'end_of_stage', got {schedule!r}")


def inference_reduction(p: Sequence[float] | np.ndarray, cfg: SlimmingConfig, keep: float) -> float:
    """Eq. 3 with the configured CAD range: ``mean(1 − ratio(p)²·keep)`` (= Eq. 3 at the defaults)."""
    ratio = cad_ratio(_p(p), cfg)
    return float(np.mean(1.0 - ratio ** 2 * keep))


def training_reduction(p: Sequence[float] | np.ndarray, cfg: SlimmingConfig, r: float, stages: int,
                       schedule: str = "paper") -> float:
    """Eq. 4 in its consistent form, with the configured ranges:
    ``mean_s mean_i [1 − keep_i·ratio_i²·k_s]``, keep_i = 1 − drop probability, k_s per ``schedule``."""
    p = _p(p)
    keep_i = 1.0 - drop_probability(p, cfg)
    ratio = cad_ratio(p, cfg)
    k = stage_keep_fractions(r, stages, schedule)[:, None]
    return float(np.mean(1.0 - keep_i[None, :] * ratio[None, :] ** 2 * k))


def network_cost_fraction(header_share: float, header_cost_fraction: float) -> float:
    """Remaining cost of a network whose header (share h of the cost) keeps a fraction q: ``1 − h + h·q``."""
    if not 0.0 <= header_share <= 1.0:
        raise ValueError("header_share must lie in [0, 1]")
    return 1.0 - header_share + header_share * header_cost_fraction


def area_ratios(p: Sequence[float] | np.ndarray, cfg: SlimmingConfig, image_sizes: Sequence[tuple[int, int]],
                quantum: int | None = None, min_size: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pixels the network sees, pixels at the baseline) per image.

    With ``quantum`` the sizes are quantised exactly as the data pipeline does (the baseline
    too: the unslimmed pipeline also rounds to the quantum); without, the area is ratio²·H·W.
    """
    p = _p(p)
    if len(image_sizes) != len(p):
        raise ValueError("need one image size per p value")
    ratio = cad_ratio(p, cfg)
    seen, base = np.empty(len(p)), np.empty(len(p))
    for i, ((h, w), rt) in enumerate(zip(image_sizes, ratio)):
        if quantum:
            hh, ww = quantize_size(h, w, float(rt), quantum, min_size)
            bh, bw = quantize_size(h, w, 1.0, quantum, min_size)
        else:
            hh, ww, bh, bw = rt * h, rt * w, h, w
        seen[i], base[i] = hh * ww, bh * bw
    return seen, base


def predict_inference_fraction(p: Sequence[float] | np.ndarray, cfg: SlimmingConfig,
                               image_sizes: Sequence[tuple[int, int]], header_share: float,
                               header_cost_fraction: float, quantum: int | None = None, min_size: int = 0) -> float:
    """Refined Eq. 3: inference cost with DANCE / baseline cost (1 − this = the reduction).

    ``Σ_i A_i·(1 − h + h·q) / Σ_i A_i^base`` with A the (quantised) pixel counts.
    """
    seen, base = area_ratios(p, cfg, image_sizes, quantum, min_size)
    return float(seen.sum() * network_cost_fraction(header_share, header_cost_fraction) / base.sum())


def predict_training_fraction(p: Sequence[float] | np.ndarray, cfg: SlimmingConfig,
                              image_sizes: Sequence[tuple[int, int]], header_share: float,
                              header_cost_fractions: Sequence[float], quantum: int | None = None,
                              min_size: int = 0) -> float:
    """Refined Eq. 4: expected training cost with DANCE / baseline, over S equal stages.

    ``(1/S) Σ_s Σ_i keep_i·A_i·(1 − h + h·q_s) / Σ_i A_i^base``: ``q_s`` is the header's FLOP
    fraction in the structure trained during stage s, keep_i = 1 − drop probability, and
    ``header_share`` the header's share of forward+backward FLOPs.
    """
    p = _p(p)
    seen, base = area_ratios(p, cfg, image_sizes, quantum, min_size)
    keep_i = 1.0 - drop_probability(p, cfg)
    per_stage = [network_cost_fraction(header_share, q) for q in header_cost_fractions]
    return float(np.mean(per_stage) * (keep_i * seen).sum() / base.sum())
