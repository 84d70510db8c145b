"""ResNet backbones with torchvision's module names.

The attribute names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0`` ...)
match torchvision's ResNet so that its ImageNet state dicts load directly. There is no
``avgpool``/``fc``: the segmentation models only use the four stages, and a checkpoint's
``fc.*`` keys are reported as expected-unexpected by :mod:`workers.models.pretrained`.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "RESNET_CONFIGS", "resnet", "STAGES"]

STAGES = ("layer1", "layer2", "layer3", "layer4")


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs. Unlike torchvision it accepts dilation > 1 (for dilated small models)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, dilation) -> 1x1, ResNet v1.5 as in torchvision."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


RESNET_CONFIGS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nn.Module):
    """ResNet trunk (stem + four stages) returning every stage's output.

    ``replace_stride_with_dilation`` has torchvision's meaning: three flags for layer2..4;
    output stride 16 is ``(False, False, True)``, output stride 8 ``(False, True, True)``.
    ``width`` is the stem/first-stage width (64 in the standard networks); smaller widths
    give the narrow test models.
    """

    def __init__(self, block: type[nn.Module], layers: Sequence[int], width: int = 64,
                 replace_stride_with_dilation: Sequence[bool] = (False, False, False)) -> None:
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"ResNet needs four stage depths >= 1, got {list(layers)}")
        if len(replace_stride_with_dilation) != 3:
            raise ValueError("replace_stride_with_dilation needs three flags (layer2, layer3, layer4)")
        self.block = block
        self.inplanes = width
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], 2, replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(width * 4, layers[2], 2, replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(width * 8, layers[3], 2, replace_stride_with_dilation[2])
        exp = block.expansion  # type: ignore[attr-defined]
        self.out_channels = {name: width * (2 ** i) * exp for i, name in enumerate(STAGES)}
        self.output_stride = 32 // (2 ** sum(bool(f) for f in replace_stride_with_dilation))
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        exp = self.block.expansion  # type: ignore[attr-defined]
        downsample = None
        if stride != 1 or self.inplanes != planes * exp:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * exp, stride), nn.BatchNorm2d(planes * exp))
        # As in torchvision, the first block of a newly dilated stage keeps the previous dilation.
        layers = [self.block(self.inplanes, planes, stride, downsample, previous_dilation)]
        self.inplanes = planes * exp
        layers += [self.block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stem(self, x: Tensor) -> Tensor:
        """conv1/bn1/relu/maxpool: stride 4."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Return ``{"layer1": ..., "layer4": ...}`` (strides 4, 8, 16, 32 before dilation)."""
        out: dict[str, Tensor] = {}
        x = self.stem(x)
        for name in STAGES:
            x = getattr(self, name)(x)
            out[name] = x
        return out


def resnet(name: str, width: int = 64, depths: Sequence[int] | None = None,
           replace_stride_with_dilation: Sequence[bool] = (False, False, False),
           cls: type[ResNet] = ResNet) -> ResNet:
    """Build a ResNet by torchvision name, optionally narrower (``width``) or shallower (``depths``)."""
    if name not in RESNET_CONFIGS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(RESNET_CONFIGS)}")
    block, std_depths = RESNET_CONFIGS[name]
    return cls(block, list(depths) if depths is not None else list(std_depths), width,
               replace_stride_with_dilation)
