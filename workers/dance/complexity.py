"""Paper Eq. 1: spatial complexity SC_mean of an image.

gray = ITU-R BT.601 luma of RGB in [0, 255]; ``s_h`` and ``s_v`` are the 3×3 Sobel
responses with replicate padding; ``SC_mean = mean(sqrt(s_h² + s_v²))`` over all pixels
at the image's stored resolution. Batched in torch, so it runs on CPU or GPU.
"""
from __future__ import annotations

import numpy as np
import torch

BT601 = (0.299, 0.587, 0.114)


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of a (N, H, W, 3) RGB batch (channels last, as decoded) → (N, H, W) float32."""
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise ValueError(f"expected a (N, H, W, 3) RGB batch, got shape {tuple(rgb.shape)}")
    # Planar copy first: strided channel reads of an HWC uint8 buffer are ~2x slower.
    planes = rgb.permute(0, 3, 1, 2).contiguous()
    gray = planes[:, 0] * BT601[0]
    gray.add_(planes[:, 1], alpha=BT601[1]).add_(planes[:, 2], alpha=BT601[2])
    return gray


def _replicate_diff(gray: torch.Tensor, dim: int) -> torch.Tensor:
    """Central difference x[i+1] − x[i−1] along ``dim`` with replicate padding at both ends."""
    n = gray.shape[dim]
    out = torch.empty_like(gray)
    torch.sub(gray.narrow(dim, 2, n - 2), gray.narrow(dim, 0, n - 2), out=out.narrow(dim, 1, n - 2))
    torch.sub(gray.narrow(dim, 1, 1), gray.narrow(dim, 0, 1), out=out.narrow(dim, 0, 1))
    torch.sub(gray.narrow(dim, n - 1, 1), gray.narrow(dim, n - 2, 1), out=out.narrow(dim, n - 1, 1))
    return out


def _replicate_smooth(d: torch.Tensor, dim: int) -> torch.Tensor:
    """[1, 2, 1] smoothing along ``dim`` with replicate padding."""
    n = d.shape[dim]
    out = torch.empty_like(d)
    mid = out.narrow(dim, 1, n - 2)
    torch.add(d.narrow(dim, 0, n - 2), d.narrow(dim, 2, n - 2), out=mid).add_(d.narrow(dim, 1, n - 2), alpha=2.0)
    first, last = d.narrow(dim, 0, 1), d.narrow(dim, n - 1, 1)
    out.narrow(dim, 0, 1).copy_(first).mul_(3.0).add_(d.narrow(dim, 1, 1))
    out.narrow(dim, n - 1, 1).copy_(last).mul_(3.0).add_(d.narrow(dim, n - 2, 1))
    return out


def sobel_magnitude(gray: torch.Tensor) -> torch.Tensor:
    """sqrt(s_h² + s_v²) of a (N, H, W) batch, 3×3 Sobel with replicate padding.

    The Sobel kernels are separable ([1, 2, 1] smoothing × [−1, 0, 1] difference), and
    with replicate padding a padded row/column equals its neighbour, which is what the
    edge cases of the two helpers encode. Images must be at least 2×2.
    """
    if gray.shape[-1] < 2 or gray.shape[-2] < 2:
        raise ValueError(f"images must be at least 2x2 for Sobel filtering, got {tuple(gray.shape[-2:])}")
    s_h = _replicate_smooth(_replicate_diff(gray, dim=2), dim=1)
    s_v = _replicate_smooth(_replicate_diff(gray, dim=1), dim=2)
    return s_h.mul_(s_h).addcmul_(s_v, s_v).sqrt_()


@torch.no_grad()
def sc_mean(rgb: torch.Tensor) -> torch.Tensor:
    """SC_mean (Eq. 1) of each image in a (N, H, W, 3) RGB batch → (N,) float64 on the CPU."""
    mag = sobel_magnitude(luma(rgb))
    pixels = mag.shape[1] * mag.shape[2]
    return (mag.sum(dim=(1, 2), dtype=torch.float64) / pixels).cpu()


def sc_mean_numpy(rgb: np.ndarray) -> float:
    """SC_mean of one (H, W, 3) uint8 image; convenience wrapper over :func:`sc_mean`."""
    return float(sc_mean(torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True))[None])[0])
