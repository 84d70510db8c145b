"""Paper Eq. 2, the complexity-adaptive loss, with the choice of its normaliser.

``batch`` (Eq. 2 as printed): L = Σ wᵢ·lᵢ / Σ wᵢ over the batch's images.
``epoch``: L = Σ wᵢ·lᵢ / (n · E[w]), where n is the batch's image count and E[w] the
expected weight over the training set. Batches hold one CAD size, hence nearly one p, so
the ``batch`` form cancels the weights; the ``epoch`` form keeps them, and because
E[Σ wᵢ·lᵢ / (n·E[w])] is an ordinary mean loss, the learning rate keeps its meaning.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from workers.data.datasets.base import IGNORE_INDEX


class CalLoss(NamedTuple):
    """The loss, and each image's effective weight: the factor by which its loss enters the
    gradient relative to an unweighted mean over the (global) batch (detached; 0 without pixels)."""

    loss: torch.Tensor
    effective: torch.Tensor


def per_image_ce(logits: torch.Tensor, target: torch.Tensor,
                 ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean pixel cross-entropy of each image over its non-ignored pixels → (losses (N,), has_pixels (N,))."""
    ce = F.cross_entropy(logits, target.long(), ignore_index=ignore_index, reduction="none")
    valid = (target != ignore_index).to(ce.dtype)
    count = valid.sum(dim=(1, 2))
    return ce.sum(dim=(1, 2)) / count.clamp_min(1.0), count > 0


def _global_sums(values: list[torch.Tensor], across_ranks: bool) -> tuple[list[torch.Tensor], float]:
    """Sum scalar tensors over DDP ranks (when asked and running); → (sums, world size)."""
    if across_ranks:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            stacked = torch.stack([v.detach().clone() for v in values])
            dist.all_reduce(stacked)
            return list(stacked.unbind()), float(dist.get_world_size())
    return [v.detach() for v in values], 1.0


def cal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    *,
    expected_weight: float | None = None,
    across_ranks: bool = False,
) -> CalLoss:
    """CAL over a batch: ``expected_weight=None`` is Eq. 2's Σ wᵢ·lᵢ / Σ wᵢ, a number is the ``epoch`` form.

    Images without a labelled pixel carry no weight and are not counted. With
    ``across_ranks`` (under DDP) the normaliser is summed over ranks and the loss scaled by
    the world size, so DDP's gradient *average* equals the gradient over the whole global
    batch, not an average of per-rank ratios. A loss whose every weight is zero is a zero
    that still has a graph, so every rank's backward stays in step.
    """
    losses, has_pixels = per_image_ce(logits, target, ignore_index)
    w = weights.to(losses.dtype) * has_pixels.to(losses.dtype)
    (total_w, count), world = _global_sums([w.sum(), has_pixels.to(losses.dtype).sum()], across_ranks)
    tiny = torch.finfo(losses.dtype).tiny
    if expected_weight is None:
        denominator = total_w
    else:
        if expected_weight <= 0:
            raise ValueError(f"expected_weight must be > 0, got {expected_weight}")
        denominator = count * float(expected_weight)
    denominator = denominator.clamp_min(tiny)
    loss = (w * losses).sum() * world / denominator
    effective = (w * count / denominator).detach()
    return CalLoss(loss, effective)


def weighted_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    *,
    across_ranks: bool = False,
) -> torch.Tensor:
    """Eq. 2 as printed: Σ wᵢ·lᵢ / Σ wᵢ (see :func:`cal_loss`)."""
    return cal_loss(logits, target, weights, ignore_index, across_ranks=across_ranks).loss


def expected_weight(weights, keep_prob) -> float:
    """E[w] over the images an epoch trains: the weights averaged with each image's chance of being kept.

    Dropping favours complex images (CASD keeps an image with probability p), so the mean over
    the kept images, not over the whole set, is what a batch's weights average to.
    """
    w = np.asarray(weights, dtype=np.float64)
    k = np.clip(np.asarray(keep_prob, dtype=np.float64), 0.0, 1.0)
    if k.sum() <= 0:
        k = np.ones_like(w)
    mean = float((w * k).sum() / k.sum())
    return mean if mean > 0 else 1.0
