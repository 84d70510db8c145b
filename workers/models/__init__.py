"""Segmentation models: DeepLabv3+, PSPNet, ICNet, BiSeNet and bring-your-own.

Every model exposes ``backbone``, ``header`` and ``classifier`` (see :mod:`.base`).
"""

from .base import ModelParts, SegmentationModel, check_header, get_parts, header_layer_groups, size_rule
from .pretrained import PretrainedReport, load_backbone_weights
from .registry import build_model, list_models, list_variants, model_options

__all__ = [
    "build_model", "list_models", "list_variants", "model_options", "get_parts", "SegmentationModel", "ModelParts",
    "load_backbone_weights", "PretrainedReport", "header_layer_groups", "check_header", "size_rule",
]
