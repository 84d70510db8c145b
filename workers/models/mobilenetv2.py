"""MobileNetV2 (Sandler et al., CVPR 2018) with torchvision's module names, as a segmentation trunk.

The names (``features.0.0.weight``, ``features.1.conv.0.0.weight``, ...,
``features.17.conv.3.running_var``) match torchvision's ``mobilenet_v2`` so its ImageNet
state dict loads directly. The trunk stops at ``features.17`` (320 channels), the map the
paper's VOC row puts its head on; the file's ``features.18`` (the 1×1 to 1280 channels)
and ``classifier.*`` are the ImageNet head and are reported as expected leftovers.

It returns ``{"layer1": stride-4 features (24 ch), "layer4": the 320-channel map}`` so the
ResNet headers take it unchanged. Output stride 16 or 8 replaces the last strides with
dilation, as DeepLab does.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MobileNetV2", "INVERTED_RESIDUAL_SETTING", "UNUSED_PRETRAINED_PREFIXES"]

# (expansion t, output channels c, repeats n, first stride s): the paper's Table 2, as torchvision.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                             (6, 160, 3, 2), (6, 320, 1, 1))
UNUSED_PRETRAINED_PREFIXES = ("features.18.", "classifier.")
_LOW_LEVEL_INDEX = 3  # features.3 ends the stride-4 stage (24 channels)


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, never below 90 % of ``v`` (torchvision's rule)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias) + BN + ReLU6: torchvision's Conv2dNormActivation with MobileNetV2's defaults."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 dilation: int = 1) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(nn.Conv2d(cin, cout, kernel_size, stride, padding, dilation=dilation, groups=groups,
                                   bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """1×1 expansion (unless t = 1) → 3×3 depthwise → 1×1 linear projection; residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int, dilation: int = 1) -> None:
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(cin, hidden, kernel_size=1))
        layers += [ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden, dilation=dilation),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = cout

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """``features.0`` … ``features.17`` of MobileNetV2; ``width_mult`` scales every stage (1.0: the paper's)."""

    def __init__(self, width_mult: float = 1.0, output_stride: int = 32) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"MobileNetV2 output_stride must be 8, 16 or 32, got {output_stride}")
        cin = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [ConvBNReLU6(3, cin, stride=2)]
        stride, dilation = 2, 1
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            cout = make_divisible(c * width_mult)
            for i in range(n):
                first = s if i == 0 else 1
                block_dilation = dilation
                if first > 1 and stride * first > output_stride:
                    # Past the output stride the stride becomes dilation (the block keeps the previous one).
                    dilation *= first
                    first = 1
                else:
                    stride *= first
                layers.append(InvertedResidual(cin, cout, first, t, block_dilation if i == 0 else dilation))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.out_channels = {"layer1": layers[_LOW_LEVEL_INDEX].out_channels, "layer4": cin}
        self.output_stride = output_stride
        self.unused_pretrained_prefixes = UNUSED_PRETRAINED_PREFIXES
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``{"layer1": stride 4, 24 channels; "layer4": the last, 320-channel map}``."""
        low = self.features[: _LOW_LEVEL_INDEX + 1](x)
        return {"layer1": low, "layer4": self.features[_LOW_LEVEL_INDEX + 1:](low)}
