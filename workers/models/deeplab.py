"""DeepLabv3+ (Chen et al., ECCV 2018) and DeepLabv3 (Chen et al., 2017) on a dilated ResNet or MobileNetV2.

DeepLabv3+ header = ASPP (1x1, three 3x3 atrous branches, image pooling, 1x1 projection) +
decoder (48-channel projection of the stride-4 features, two 3x3 convs). DeepLabv3 header =
the same ASPP + one 3x3 conv, no decoder (the paper's VOC row on MobileNetV2; torchvision's
``DeepLabHead`` has this shape). Classifier = 1x1 conv. Multi-scale aggregation (paper Table 7
"ASPP module layers") = the whole ``header.aspp``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .base import SegmentationModel
from .layers import ConvBNReLU, adaptive_avg_pool, init_header, resize
from .mobilenetv2 import MobileNetV2
from .resnet import resnet

__all__ = ["ASPP", "DeepLabV3Header", "DeepLabV3PlusHeader", "build_deeplabv3", "build_deeplabv3plus", "ASPP_RATES"]

ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
DILATION_FLAGS = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}


class ImagePooling(nn.Module):
    """Global average pool -> 1x1 conv/BN/ReLU -> broadcast back to the map size.

    In training mode its BN sees one value per image, so it needs batches of >= 2.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return resize(self.conv(adaptive_avg_pool(x, 1)), x)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling with image pooling; branches are concatenated and projected."""

    def __init__(self, cin: int, cout: int, rates: Sequence[int], dropout: float = 0.1) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvBNReLU(cin, cout, 1)]
        branches += [ConvBNReLU(cin, cout, 3, dilation=r) for r in rates]
        branches.append(ImagePooling(cin, cout))
        self.branches = nn.ModuleList(branches)
        self.project = ConvBNReLU(cout * len(branches), cout, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.project(torch.cat([b(x) for b in self.branches], dim=1)))


class DeepLabV3PlusHeader(nn.Module):
    """ASPP on the last stage, decoder fusing it with the stride-4 ``layer1`` features."""

    def __init__(self, high_channels: int, low_channels: int, rates: Sequence[int], aspp_channels: int = 256,
                 low_level_channels: int = 48, decoder_channels: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.aspp = ASPP(high_channels, aspp_channels, rates, dropout)
        self.low_level = ConvBNReLU(low_channels, low_level_channels, 1)
        self.decoder = nn.Sequential(
            ConvBNReLU(aspp_channels + low_level_channels, decoder_channels, 3),
            ConvBNReLU(decoder_channels, decoder_channels, 3),
        )
        init_header(self)

    def forward(self, features: dict[str, Tensor], image: Tensor) -> Tensor:
        low = self.low_level(features["layer1"])
        high = resize(self.aspp(features["layer4"]), low)
        return self.decoder(torch.cat([high, low], dim=1))


class DeepLabV3Header(nn.Module):
    """ASPP on the last stage, then one 3x3 conv: DeepLabv3's head, no decoder."""

    def __init__(self, high_channels: int, rates: Sequence[int], aspp_channels: int = 256, head_channels: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.aspp = ASPP(high_channels, aspp_channels, rates, dropout)
        self.head = ConvBNReLU(aspp_channels, head_channels, 3)
        init_header(self)

    def forward(self, features: dict[str, Tensor], image: Tensor) -> Tensor:
        return self.head(self.aspp(features["layer4"]))


def _trunk(name: str, backbone: str, backbone_width: int, backbone_depths: list[int] | None,
           output_stride: int, aspp_rates: list[int] | None) -> tuple[nn.Module, list[int]]:
    """The dilated backbone and the ASPP rates (``None``: the paper's for the output stride)."""
    if output_stride not in ASPP_RATES:
        raise ValueError(f"{name} output_stride must be 16 or 8, got {output_stride}")
    rates = list(aspp_rates) if aspp_rates is not None else list(ASPP_RATES[output_stride])
    if backbone == "mobilenetv2":
        # The paper's VOC row: the head on the 320-channel map; backbone_width is the stem's 32 channels,
        # scaled (a multiplier of width / 32), and the depths are MobileNetV2's own.
        if backbone_depths is not None:
            raise ValueError("backbone_depths does not apply to mobilenetv2 (its stages are fixed)")
        return MobileNetV2(width_mult=backbone_width / 32, output_stride=output_stride), rates
    return resnet(backbone, backbone_width, backbone_depths, DILATION_FLAGS[output_stride]), rates


def build_deeplabv3(num_classes: int, *, backbone: str, backbone_width: int, backbone_depths: list[int] | None,
                    output_stride: int, aspp_rates: list[int] | None, aspp_channels: int, head_channels: int,
                    dropout: float, spec: dict) -> SegmentationModel:
    """DeepLabv3; ``aspp_rates=None`` takes the paper's rates for the output stride."""
    trunk, rates = _trunk("deeplabv3", backbone, backbone_width, backbone_depths, output_stride, aspp_rates)
    header = DeepLabV3Header(trunk.out_channels["layer4"], rates, aspp_channels, head_channels, dropout)
    classifier = nn.Conv2d(head_channels, num_classes, 1)
    return SegmentationModel(trunk, header, classifier, num_classes=num_classes, spec=spec,
                             size_quantum=output_stride, multiscale_modules=["header.aspp"])


def build_deeplabv3plus(num_classes: int, *, backbone: str, backbone_width: int, backbone_depths: list[int] | None,
                        output_stride: int, aspp_rates: list[int] | None, aspp_channels: int,
                        low_level_channels: int, decoder_channels: int, dropout: float,
                        spec: dict) -> SegmentationModel:
    """DeepLabv3+; ``aspp_rates=None`` takes the paper's rates for the output stride."""
    trunk, rates = _trunk("deeplabv3plus", backbone, backbone_width, backbone_depths, output_stride, aspp_rates)
    header = DeepLabV3PlusHeader(trunk.out_channels["layer4"], trunk.out_channels["layer1"], rates,
                                 aspp_channels, low_level_channels, decoder_channels, dropout)
    classifier = nn.Conv2d(decoder_channels, num_classes, 1)
    return SegmentationModel(trunk, header, classifier, num_classes=num_classes, spec=spec,
                             size_quantum=output_stride, multiscale_modules=["header.aspp"])
