"""ICNet (Zhao et al., ECCV 2018): a three-resolution cascade.

* low branch (1/4 input): ResNet stages 3-4, dilated, run on the stage-2 features of the
  1/2 branch downsampled by 2 (shared computation, as in the original) -> 1/32, then the
  parameter-free pyramid *sum* pooling of ICNet (bins 1, 2, 3, 6) and a 1x1 reduction;
* medium branch (1/2 input): ResNet stem + stages 1-2 -> 1/16;
* high branch (full input): three stride-2 3x3 conv/BN/ReLU -> 1/8.

Two cascade feature fusion (CFF) units merge low+medium (1/16) and then +high (1/8):
upsample the coarser map x2, 3x3 dilation-2 conv/BN on it, 1x1 conv/BN on the finer one,
sum, ReLU. Classifier = 1x1 conv at 1/8 (a 1x1 conv commutes with bilinear upsampling,
so classifying before the final upsample equals the original's order at a quarter of the
cost). The cascade label guidance losses (auxiliary classifiers) are left out.

Backbone = the ResNet; header = high-res branch + PSP + CFFs. Multi-scale aggregation =
``header.psp``, ``header.cff_low``, ``header.cff_high``; the high-res branch is "other".
The input must be a multiple of 32 so the three branches line up exactly.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from .base import SegmentationModel
from .layers import ConvBN, ConvBNReLU, adaptive_avg_pool, init_header, resize
from .resnet import ResNet, resnet

__all__ = ["ICNetBackbone", "ICNetHeader", "CascadeFeatureFusion", "build_icnet"]


class ICNetBackbone(ResNet):
    """ResNet (torchvision names) running the 1/2 and 1/4 branches of ICNet.

    Returns ``{"medium": stage-2 features of the 1/2 image (1/16),
    "low": stage-4 features of the 1/4 branch (1/32)}``. Built with layers 3 and 4 dilated.
    """

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        h, w = x.shape[-2:]
        half = resize(x, (h // 2, w // 2))
        medium = self.layer2(self.layer1(self.stem(half)))
        mh, mw = medium.shape[-2:]
        low = resize(medium, (max(mh // 2, 1), max(mw // 2, 1)))
        low = self.layer4(self.layer3(low))
        return {"medium": medium, "low": low}


class PyramidSumPooling(nn.Module):
    """ICNet's pyramid pooling: the input plus each bin's pooled map upsampled back (no convs)."""

    def __init__(self, bins: Sequence[int]) -> None:
        super().__init__()
        self.bins = list(bins)

    def forward(self, x: Tensor) -> Tensor:
        out = x
        for b in self.bins:
            out = out + resize(adaptive_avg_pool(x, b), x)
        return out


class ICNetPSP(nn.Module):
    """Pyramid sum pooling followed by the 1x1 conv/BN/ReLU reduction (conv5_4_k1)."""

    def __init__(self, cin: int, cout: int, bins: Sequence[int]) -> None:
        super().__init__()
        self.pool = PyramidSumPooling(bins)
        self.reduce = ConvBNReLU(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.reduce(self.pool(x))


class CascadeFeatureFusion(nn.Module):
    """CFF: relu(BN(dilated 3x3 conv(up2(coarse))) + BN(1x1 conv(fine)))."""

    def __init__(self, coarse_channels: int, fine_channels: int, cout: int) -> None:
        super().__init__()
        self.coarse = ConvBN(coarse_channels, cout, 3, dilation=2)
        self.fine = ConvBN(fine_channels, cout, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, coarse: Tensor, fine: Tensor) -> Tensor:
        return self.relu(self.coarse(resize(coarse, fine)) + self.fine(fine))


class ICNetHeader(nn.Module):
    def __init__(self, medium_channels: int, low_channels: int, bins: Sequence[int], sub1_channels: Sequence[int],
                 psp_channels: int, fusion_channels: int) -> None:
        super().__init__()
        c1, c2, c3 = sub1_channels
        self.sub1 = nn.Sequential(ConvBNReLU(3, c1, 3, stride=2), ConvBNReLU(c1, c2, 3, stride=2),
                                  ConvBNReLU(c2, c3, 3, stride=2))
        self.psp = ICNetPSP(low_channels, psp_channels, bins)
        self.cff_low = CascadeFeatureFusion(psp_channels, medium_channels, fusion_channels)
        self.cff_high = CascadeFeatureFusion(fusion_channels, c3, fusion_channels)
        init_header(self)

    def forward(self, features: dict[str, Tensor], image: Tensor) -> Tensor:
        high = self.sub1(image)
        fused = self.cff_low(self.psp(features["low"]), features["medium"])
        return self.cff_high(fused, high)


def build_icnet(num_classes: int, *, backbone: str, backbone_width: int, backbone_depths: list[int] | None,
                bins: list[int], sub1_channels: list[int], psp_channels: int, fusion_channels: int,
                spec: dict) -> SegmentationModel:
    """ICNet on a ResNet with layers 3-4 dilated."""
    if len(sub1_channels) != 3:
        raise ValueError(f"icnet sub1_channels needs three widths, got {sub1_channels}")
    trunk = resnet(backbone, backbone_width, backbone_depths, (False, True, True), cls=ICNetBackbone)
    header = ICNetHeader(trunk.out_channels["layer2"], trunk.out_channels["layer4"], bins, sub1_channels,
                         psp_channels, fusion_channels)
    classifier = nn.Conv2d(fusion_channels, num_classes, 1)
    return SegmentationModel(trunk, header, classifier, num_classes=num_classes, spec=spec, size_quantum=32,
                             multiscale_modules=["header.psp", "header.cff_low", "header.cff_high"])
