"""Model registry: ``build_model(name, num_classes, variant, **options)``.

Each built-in model has two variants: ``"paper"`` (the configuration of the DANCE paper's
experiments) and ``"small"`` (narrow, shallow: trains in seconds on a CPU). Keyword options
override the variant's defaults; the resolved options are kept in ``model.spec`` so that
``build_model(**model.spec)`` rebuilds the same unpruned architecture.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from .base import SegmentationModel
from .bisenet import build_bisenet
from .deeplab import build_deeplabv3, build_deeplabv3plus
from .icnet import build_icnet
from .pspnet import build_pspnet

__all__ = ["build_model", "list_models", "list_variants", "model_options", "register_model", "PRESETS"]

log = logging.getLogger(__name__)

_SMALL_TRUNK = {"backbone_width": 16, "backbone_depths": [1, 1, 1, 1]}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "deeplabv3plus": {
        "paper": {"backbone": "resnet50", "backbone_width": 64, "backbone_depths": None, "output_stride": 16,
                  "aspp_rates": None, "aspp_channels": 256, "low_level_channels": 48, "decoder_channels": 256,
                  "dropout": 0.1},
        "small": {"backbone": "resnet50", **_SMALL_TRUNK, "output_stride": 16, "aspp_rates": None,
                  "aspp_channels": 32, "low_level_channels": 8, "decoder_channels": 32, "dropout": 0.1},
        # The paper's DeepLabv3+ on MobileNetV2 (its VOC row), for torchvision's ImageNet mobilenet_v2 weights.
        "mobilenetv2": {"backbone": "mobilenetv2", "backbone_width": 32, "backbone_depths": None, "output_stride": 16,
                        "aspp_rates": None, "aspp_channels": 256, "low_level_channels": 48, "decoder_channels": 256,
                        "dropout": 0.1},
    },
    # DeepLabv3 (no decoder): the model of the paper's VOC row, there on MobileNetV2.
    "deeplabv3": {
        "paper": {"backbone": "resnet50", "backbone_width": 64, "backbone_depths": None, "output_stride": 16,
                  "aspp_rates": None, "aspp_channels": 256, "head_channels": 256, "dropout": 0.1},
        "small": {"backbone": "resnet50", **_SMALL_TRUNK, "output_stride": 16, "aspp_rates": None,
                  "aspp_channels": 32, "head_channels": 32, "dropout": 0.1},
        "mobilenetv2": {"backbone": "mobilenetv2", "backbone_width": 32, "backbone_depths": None, "output_stride": 16,
                        "aspp_rates": None, "aspp_channels": 256, "head_channels": 256, "dropout": 0.1},
    },
    "pspnet": {
        "paper": {"backbone": "resnet50", "backbone_width": 64, "backbone_depths": None, "output_stride": 8,
                  "bins": [1, 2, 3, 6], "ppm_channels": 512, "head_channels": 512, "dropout": 0.1},
        "small": {"backbone": "resnet50", **_SMALL_TRUNK, "output_stride": 8, "bins": [1, 2, 3, 6],
                  "ppm_channels": 16, "head_channels": 32, "dropout": 0.1},
    },
    "icnet": {
        "paper": {"backbone": "resnet50", "backbone_width": 64, "backbone_depths": None, "bins": [1, 2, 3, 6],
                  "sub1_channels": [32, 32, 64], "psp_channels": 256, "fusion_channels": 128},
        "small": {"backbone": "resnet50", **_SMALL_TRUNK, "bins": [1, 2, 3, 6],
                  "sub1_channels": [8, 8, 16], "psp_channels": 32, "fusion_channels": 32},
    },
    "bisenet": {
        "paper": {"backbone": "resnet18", "backbone_width": 64, "backbone_depths": None,
                  "spatial_channels": [64, 64, 64, 128], "context_channels": 128, "fusion_channels": 256,
                  "head_channels": 256},
        "small": {"backbone": "resnet18", **_SMALL_TRUNK, "spatial_channels": [8, 8, 8, 16],
                  "context_channels": 16, "fusion_channels": 32, "head_channels": 32},
    },
}

_BUILDERS: dict[str, Callable[..., SegmentationModel]] = {
    "deeplabv3": build_deeplabv3,
    "deeplabv3plus": build_deeplabv3plus,
    "pspnet": build_pspnet,
    "icnet": build_icnet,
    "bisenet": build_bisenet,
}

DEFAULT_VARIANT = "paper"


def register_model(name: str, builder: Callable[..., SegmentationModel], presets: dict[str, dict[str, Any]]) -> None:
    """Add a model family. ``builder(num_classes, *, spec, **options)`` gets every preset key."""
    if name in _BUILDERS or name == "custom":
        raise ValueError(f"model {name!r} is already registered")
    keys = {frozenset(p) for p in presets.values()}
    if len(keys) != 1:
        raise ValueError("every variant of a model must define the same option keys")
    _BUILDERS[name] = builder
    PRESETS[name] = presets


def list_models(include_custom: bool = False) -> list[str]:
    """Registered model names (``"custom"``, which needs a factory, only on request)."""
    names = sorted(_BUILDERS)
    return names + ["custom"] if include_custom else names


def list_variants(name: str) -> list[str]:
    """Variants of a registered model, e.g. ``["paper", "small"]``."""
    return sorted(PRESETS[_check_name(name)])


def model_options(name: str, variant: str = DEFAULT_VARIANT) -> dict[str, Any]:
    """The default options of a model variant (what keyword arguments may override)."""
    name = _check_name(name)
    if variant not in PRESETS[name]:
        raise ValueError(f"{name} has no variant {variant!r}; choose one of {sorted(PRESETS[name])}")
    return _jsonable(dict(PRESETS[name][variant]))


def _check_name(name: str) -> str:
    key = str(name).lower()
    if key not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {list_models(include_custom=True)}")
    return key


def _jsonable(v: Any) -> Any:
    # Tuples become lists so that a spec survives a JSON round trip unchanged.
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


def build_model(name: str, num_classes: int, variant: str | None = None, *,
                pretrained_backbone: str | None = None, **options: Any) -> SegmentationModel:
    """Build a segmentation model by registry name.

    Args:
        name: "deeplabv3plus", "deeplabv3", "pspnet", "icnet", "bisenet", or "custom" (see
            :func:`workers.models.custom.build_custom` for its options).
        num_classes: output channels of the classifier.
        variant: "paper" (default), "small", or another of :func:`list_variants` (the DeepLabs: "mobilenetv2").
        pretrained_backbone: optional local torchvision-format ResNet or MobileNetV2 state dict
            (``.pth``/``.pt``/``.safetensors``) loaded into the backbone; the report is kept in
            ``model.pretrained_report``. Not part of ``model.spec``.
        **options: overrides of the variant's defaults (see :func:`model_options`).
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if str(name).lower() == "custom":
        from .custom import build_custom

        model = build_custom(num_classes, **options)
    else:
        key = _check_name(name)
        variant = DEFAULT_VARIANT if variant is None else variant
        opts = model_options(key, variant)
        unknown = sorted(set(options) - set(opts))
        if unknown:
            raise TypeError(f"{key} got unknown option(s) {unknown}; valid options are {sorted(opts)}")
        opts.update(_jsonable(options))
        spec = {"name": key, "num_classes": num_classes, "variant": variant, **opts}
        model = _BUILDERS[key](num_classes, spec=spec, **opts)
    if pretrained_backbone:
        from .pretrained import load_backbone_weights

        report = load_backbone_weights(model, pretrained_backbone)
        model.pretrained_report = report
        log.log(logging.INFO if report.complete else logging.WARNING, "%s", report.summary())
    return model
