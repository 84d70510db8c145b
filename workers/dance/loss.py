"""Paper Eq. 2: the complexity-adaptive loss L = Σ wᵢ·lᵢ / Σ wᵢ over a batch's kept images."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from workers.data.datasets.base import IGNORE_INDEX


def per_image_ce(logits: torch.Tensor, target: torch.Tensor,
                 ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean pixel cross-entropy of each image over its non-ignored pixels → (losses (N,), has_pixels (N,))."""
    ce = F.cross_entropy(logits, target.long(), ignore_index=ignore_index, reduction="none")
    valid = (target != ignore_index).to(ce.dtype)
    count = valid.sum(dim=(1, 2))
    return ce.sum(dim=(1, 2)) / count.clamp_min(1.0), count > 0


def weighted_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    *,
    across_ranks: bool = False,
) -> torch.Tensor:
    """Σ wᵢ·lᵢ / Σ wᵢ; images without a labelled pixel carry no weight.

    With ``across_ranks`` (under DDP), Σ wᵢ is all-reduced and the loss scaled by the
    world size, so that DDP's gradient *average* equals the gradient of Eq. 2 over the
    whole global batch — not an average of per-rank ratios. When every weight is zero
    (CAL's default range gives p = 0 images weight 0) the loss is a zero that still has
    a graph, so every rank's backward stays in step.
    """
    losses, has_pixels = per_image_ce(logits, target, ignore_index)
    w = weights.to(losses.dtype) * has_pixels.to(losses.dtype)
    total = w.sum()
    scale = 1.0
    if across_ranks:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            total = total.detach().clone()
            dist.all_reduce(total)
            scale = float(dist.get_world_size())
    return (w * losses).sum() * scale / total.clamp_min(torch.finfo(losses.dtype).tiny)
