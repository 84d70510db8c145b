"""PSPNet (Zhao et al., CVPR 2017) on a dilated ResNet at output stride 8.

Header = pyramid pooling module (bins 1, 2, 3, 6: pool -> 1x1 conv/BN/ReLU -> upsample,
concatenated with the input) + 3x3 conv/BN/ReLU + dropout. Classifier = 1x1 conv. The
auxiliary layer3 loss of the original is left out (it would be pruned/ignored by ANS and
adds nothing at inference). Multi-scale aggregation = the pyramid branches
(``header.ppm``); the 3x3 fusion conv counts as "other".
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .base import SegmentationModel
from .deeplab import DILATION_FLAGS
from .layers import ConvBNReLU, adaptive_avg_pool, init_header, resize
from .resnet import resnet

__all__ = ["PyramidPooling", "PSPHeader", "build_pspnet"]


class PyramidBranch(nn.Module):
    """Adaptive average pool to ``bins`` x ``bins`` -> 1x1 conv/BN/ReLU -> bilinear back."""

    def __init__(self, cin: int, cout: int, bins: int) -> None:
        super().__init__()
        self.bins = bins
        self.conv = ConvBNReLU(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return resize(self.conv(adaptive_avg_pool(x, self.bins)), x)


class PyramidPooling(nn.Module):
    """Concatenate the input with one pooled branch per bin size."""

    def __init__(self, cin: int, branch_channels: int, bins: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(PyramidBranch(cin, branch_channels, b) for b in bins)
        self.out_channels = cin + branch_channels * len(bins)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x] + [b(x) for b in self.branches], dim=1)


class PSPHeader(nn.Module):
    def __init__(self, cin: int, bins: Sequence[int], ppm_channels: int, head_channels: int, dropout: float) -> None:
        super().__init__()
        self.ppm = PyramidPooling(cin, ppm_channels, bins)
        self.fuse = ConvBNReLU(self.ppm.out_channels, head_channels, 3)
        self.dropout = nn.Dropout(dropout)
        init_header(self)

    def forward(self, features: dict[str, Tensor], image: Tensor) -> Tensor:
        return self.dropout(self.fuse(self.ppm(features["layer4"])))


def build_pspnet(num_classes: int, *, backbone: str, backbone_width: int, backbone_depths: list[int] | None,
                 output_stride: int, bins: list[int], ppm_channels: int, head_channels: int, dropout: float,
                 spec: dict) -> SegmentationModel:
    """PSPNet; ``output_stride`` 8 (paper) or 16."""
    if output_stride not in (8, 16):
        raise ValueError(f"pspnet output_stride must be 8 or 16, got {output_stride}")
    if not bins or min(bins) < 1:
        raise ValueError(f"pspnet bins must be positive ints, got {bins}")
    trunk = resnet(backbone, backbone_width, backbone_depths, DILATION_FLAGS[output_stride])
    header = PSPHeader(trunk.out_channels["layer4"], bins, ppm_channels, head_channels, dropout)
    classifier = nn.Conv2d(head_channels, num_classes, 1)
    return SegmentationModel(trunk, header, classifier, num_classes=num_classes, spec=spec,
                             size_quantum=output_stride, multiscale_modules=["header.ppm"])
