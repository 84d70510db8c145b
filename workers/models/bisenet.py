"""BiSeNet v1 (Yu et al., ECCV 2018) with a ResNet-18 context path.

Backbone = the ResNet-18 of the context path (the only ImageNet-pretrained part).
Header = everything trained from scratch (the paper's definition of the header, §3.3):
the spatial path (7x7 s2, 3x3 s2, 3x3 s2, 1x1 conv/BN/ReLU -> 1/8), the global context
(pool -> 1x1 conv/BN/ReLU), the attention refinement modules on stages 3 and 4 with their
3x3 refine convs, the feature fusion module and the 3x3 conv of the output head.
Classifier = the output head's final 1x1 conv. The auxiliary context-path heads of the
original are left out.

Unlike the reference code, the attention convs of the ARMs and the FFM are each followed
by a BatchNorm, so Network Slimming can rank every header channel (the FFM's attention
therefore needs training batches of >= 2, like any image-pooling branch).
Multi-scale aggregation = ``header.global_context``, ``header.arm16``, ``header.arm32``,
``header.ffm``; the spatial path, refine convs and output conv are "other".
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .base import SegmentationModel
from .layers import ConvBN, ConvBNReLU, adaptive_avg_pool, init_header, resize
from .resnet import resnet

__all__ = ["AttentionRefinement", "FeatureFusion", "BiSeNetHeader", "build_bisenet"]


class AttentionRefinement(nn.Module):
    """3x3 conv/BN/ReLU, then channel attention sigmoid(BN(1x1 conv(global pool)))."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 3)
        self.attention = ConvBN(cout, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.attention(adaptive_avg_pool(feat, 1)))


class FeatureFusion(nn.Module):
    """Concat spatial + context, 1x1 conv/BN/ReLU, squeeze-excite style re-weighting, residual."""

    def __init__(self, cin: int, cout: int, reduction: int = 4) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 1)
        self.squeeze = ConvBNReLU(cout, max(cout // reduction, 1), 1)
        self.excite = ConvBN(max(cout // reduction, 1), cout, 1)

    def forward(self, spatial: Tensor, context: Tensor) -> Tensor:
        feat = self.conv(torch.cat([spatial, context], dim=1))
        att = torch.sigmoid(self.excite(self.squeeze(adaptive_avg_pool(feat, 1))))
        return feat + feat * att


class GlobalContext(nn.Module):
    """Global average pool -> 1x1 conv/BN/ReLU (kept at 1x1; broadcast by the caller)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(adaptive_avg_pool(x, 1))


class BiSeNetHeader(nn.Module):
    def __init__(self, c16: int, c32: int, spatial_channels: Sequence[int], context_channels: int,
                 fusion_channels: int, head_channels: int) -> None:
        super().__init__()
        s1, s2, s3, s4 = spatial_channels
        self.spatial = nn.Sequential(ConvBNReLU(3, s1, 7, stride=2), ConvBNReLU(s1, s2, 3, stride=2),
                                     ConvBNReLU(s2, s3, 3, stride=2), ConvBNReLU(s3, s4, 1))
        self.global_context = GlobalContext(c32, context_channels)
        self.arm32 = AttentionRefinement(c32, context_channels)
        self.arm16 = AttentionRefinement(c16, context_channels)
        self.refine32 = ConvBNReLU(context_channels, context_channels, 3)
        self.refine16 = ConvBNReLU(context_channels, context_channels, 3)
        self.ffm = FeatureFusion(s4 + context_channels, fusion_channels)
        self.head = ConvBNReLU(fusion_channels, head_channels, 3)
        init_header(self)

    def forward(self, features: dict[str, Tensor], image: Tensor) -> Tensor:
        f16, f32 = features["layer3"], features["layer4"]
        spatial = self.spatial(image)
        x32 = self.arm32(f32) + resize(self.global_context(f32), f32, mode="nearest")
        x32 = self.refine32(resize(x32, f16, mode="nearest"))
        x16 = self.arm16(f16) + x32
        x16 = self.refine16(resize(x16, spatial, mode="nearest"))
        return self.head(self.ffm(spatial, x16))


def build_bisenet(num_classes: int, *, backbone: str, backbone_width: int, backbone_depths: list[int] | None,
                  spatial_channels: list[int], context_channels: int, fusion_channels: int, head_channels: int,
                  spec: dict) -> SegmentationModel:
    """BiSeNet v1 (context path on an undilated ResNet, output stride 8)."""
    if len(spatial_channels) != 4:
        raise ValueError(f"bisenet spatial_channels needs four widths, got {spatial_channels}")
    trunk = resnet(backbone, backbone_width, backbone_depths)
    header = BiSeNetHeader(trunk.out_channels["layer3"], trunk.out_channels["layer4"], spatial_channels,
                           context_channels, fusion_channels, head_channels)
    classifier = nn.Conv2d(head_channels, num_classes, 1)
    return SegmentationModel(trunk, header, classifier, num_classes=num_classes, spec=spec, size_quantum=32,
                             multiscale_modules=["header.global_context", "header.arm16", "header.arm32",
                                                 "header.ffm"])
