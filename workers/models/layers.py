"""Building blocks shared by the segmentation headers.

Every header conv here is followed by a BatchNorm2d (Network Slimming ranks channels by the
BN scale) and nothing is grouped or depthwise, so Torch-Pruning can prune all of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvBNReLU", "ConvBN", "resize", "adaptive_avg_pool", "init_header"]


class ConvBN(nn.Sequential):
    """Conv2d (no bias: the BN shift replaces it) + BatchNorm2d."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 1, stride: int = 1, dilation: int = 1) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
        )


class ConvBNReLU(nn.Sequential):
    """Conv2d + BatchNorm2d + ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 1, stride: int = 1, dilation: int = 1) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


def resize(x: Tensor, like: Tensor | tuple[int, int] | torch.Size, mode: str = "bilinear") -> Tensor:
    """Resize ``x`` to the spatial size of ``like`` (a tensor or an (H, W) pair).

    The size always comes from a tensor's shape at run time, so any input multiple of the
    model's size quantum lines up; a no-op when the sizes already match.
    """
    # int() makes a traced export bake the static size in as constants instead of Shape ops.
    size = tuple(int(s) for s in (like.shape[-2:] if isinstance(like, Tensor) else like))
    if tuple(int(s) for s in x.shape[-2:]) == size:
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def _pool_matrix(n_in: int, n_out: int, like: Tensor) -> Tensor:
    """(n_out, n_in) matrix averaging over PyTorch's adaptive-pooling windows."""
    rows = []
    for i in range(n_out):
        start = (i * n_in) // n_out
        end = -((-(i + 1) * n_in) // n_out)  # ceil
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(n_in)])
    # Built from Python lists so a traced export records one constant, not the fill ops.
    return torch.tensor(rows, dtype=like.dtype, device=like.device)


def adaptive_avg_pool(x: Tensor, bins: int) -> Tensor:
    """``F.adaptive_avg_pool2d(x, bins)`` that also exports to ONNX for any static size.

    The TorchScript ONNX exporter refuses adaptive pooling when the feature map is not a
    multiple of the bin count (e.g. PSP's bins 3 and 6 on a 16x32 map). During export the
    same windows are expressed as two constant matrix products, which is exact, including
    maps smaller than the bin count (windows then overlap, i.e. the map is upsampled).
    """
    if bins == 1:
        return x.mean(dim=(2, 3), keepdim=True)
    if not torch.onnx.is_in_onnx_export():
        return F.adaptive_avg_pool2d(x, bins)
    return adaptive_avg_pool_static(x, bins)


def adaptive_avg_pool_static(x: Tensor, bins: int) -> Tensor:
    """Adaptive average pooling from fixed-window pooling or constant matrix products."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h % bins == 0 and w % bins == 0:
        return F.avg_pool2d(x, kernel_size=(h // bins, w // bins))
    # Rank-4 constants: no implicit rank broadcasting for older TensorRT parsers to handle.
    ph = _pool_matrix(h, bins, x)[None, None]
    pw = _pool_matrix(w, bins, x).t()[None, None]
    return torch.matmul(torch.matmul(ph, x), pw)


def init_header(module: nn.Module) -> None:
    """Kaiming init for convs, BN scale 1 and shift 0 (the headers are trained from scratch)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
