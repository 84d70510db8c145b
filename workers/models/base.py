"""The contract every segmentation model honours: backbone, header, classifier.

* ``backbone`` — the ImageNet classification trunk (a ResNet for the built-in models). Its
  outputs are never pruned and it is what pretrained weights load into.
* ``header`` — everything added after the backbone (the paper's definition, §3.3): ASPP,
  pyramid pooling, cascade/feature fusion, decoders, and also extra randomly-initialised
  branches such as BiSeNet's spatial path and ICNet's full-resolution branch. ANS prunes
  the header's channels.
* ``classifier`` — the final conv producing ``num_classes`` channels; its outputs are never
  pruned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import Tensor, nn

from .layers import resize

__all__ = ["SegmentationModel", "ModelParts", "get_parts", "PART_NAMES", "header_layer_groups",
           "check_header", "size_rule"]

PART_NAMES = ("backbone", "header", "classifier")


class SegmentationModel(nn.Module):
    """Base class: ``forward(x) = upsample(classifier(header(backbone(x), x)))``.

    Attributes:
        spec: JSON-serialisable ``build_model`` arguments that rebuild the unpruned model.
        size_quantum: input H and W must be multiples of it.
        min_size: smallest supported input side (a multiple of ``size_quantum``).
        num_classes: channels of the logits.
        multiscale_modules: dotted names (relative to the model) of the header submodules
            doing multi-scale aggregation; every other header layer counts as "other"
            (paper Fig. 4 / Table 7). A layer belongs to a group if its name equals or is
            below one of these names.

    The header's forward takes ``(features, image)``: the backbone's feature dict and the
    normalised input (used by branches that read the image directly).
    """

    if TYPE_CHECKING:  # plain class annotations would trip torch.jit.script
        backbone: nn.Module
        header: nn.Module
        classifier: nn.Module

    def __init__(self, backbone: nn.Module | None, header: nn.Module | None, classifier: nn.Module | None, *,
                 num_classes: int, spec: Mapping[str, Any], size_quantum: int, min_size: int | None = None,
                 multiscale_modules: list[str] | None = None) -> None:
        super().__init__()
        # Custom models expose the parts as properties over the wrapped module instead.
        if backbone is not None:
            self.backbone = backbone
        if header is not None:
            self.header = header
        if classifier is not None:
            self.classifier = classifier
        self.num_classes = int(num_classes)
        self.spec: dict[str, Any] = dict(spec)
        self.size_quantum = int(size_quantum)
        self.min_size = int(min_size if min_size is not None else max(2 * self.size_quantum, 32))
        self.multiscale_modules: list[str] = list(multiscale_modules or [])
        self.pretrained_report: Any = None  # set by build_model(pretrained_backbone=...)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) normalised images -> (N, num_classes, H, W) logits."""
        features = self.backbone(x)
        logits = self.classifier(self.header(features, x))
        return resize(logits, x)

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ValueError unless (height, width) is a supported input size."""
        q = self.size_quantum
        for side, v in (("height", height), ("width", width)):
            if v % q or v < self.min_size:
                raise ValueError(f"input {side} {v} must be a multiple of {q} and at least {self.min_size}")

    def extra_repr(self) -> str:
        return f"spec={self.spec}, size_quantum={self.size_quantum}, min_size={self.min_size}"


def size_rule(model: nn.Module, size_quantum: int | None = None) -> tuple[int, int]:
    """``(quantum, min_size)`` that input sizes for ``model`` are cut at (CAD buckets, eval sizes, exports).

    ``size_quantum`` is ``train.size_quantum``: a coarser quantum (fewer size buckets) that must
    be a multiple of the model's own; None keeps the model's. ``min_size`` is the model's own
    (a model without one: twice the quantum). A model without ``size_quantum`` counts as 32.
    """
    quantum = int(getattr(model, "size_quantum", 32))
    if size_quantum is not None:
        if size_quantum % quantum:
            raise ValueError(f"train.size_quantum ({size_quantum}) must be a multiple of the model's size quantum "
                             f"({quantum})")
        quantum = int(size_quantum)
    return quantum, int(getattr(model, "min_size", 2 * quantum))


@dataclass(frozen=True)
class ModelParts:
    """The three parts of a model and their dotted names relative to the model."""

    backbone: nn.Module
    header: nn.Module
    classifier: nn.Module
    backbone_name: str
    header_name: str
    classifier_name: str


def _unwrap(model: nn.Module) -> nn.Module:
    # DDP / DataParallel keep the real model under .module.
    while not isinstance(model, SegmentationModel) and isinstance(getattr(model, "module", None), nn.Module):
        model = model.module  # type: ignore[assignment]
    return model


def _resolve(model: nn.Module, path: str, part: str) -> nn.Module:
    try:
        sub = model.get_submodule(path) if path else model
    except AttributeError:
        names = [n for n, _ in model.named_children()]
        raise ValueError(f"{part} path {path!r} does not name a submodule of {type(model).__name__} "
                         f"(its top-level children are {names})") from None
    return sub


def get_parts(model: nn.Module, parts: Mapping[str, str] | None = None) -> ModelParts:
    """Return the backbone, header and classifier of ``model`` with their dotted names.

    Works for built-in and custom models (also when wrapped in DDP/DataParallel; the names
    are then relative to the unwrapped model). ``parts`` maps "backbone"/"header"/"classifier"
    to dotted paths for any other ``nn.Module``.
    """
    model = _unwrap(model)
    if parts is None:
        if not isinstance(model, SegmentationModel):
            raise TypeError(f"{type(model).__name__} is not a SegmentationModel: pass parts="
                            "{'backbone': ..., 'header': ..., 'classifier': ...} "
                            "or build it with build_model('custom', ...)")
        paths = getattr(model, "part_paths", None) or {p: p for p in PART_NAMES}
    else:
        missing = [p for p in PART_NAMES if p not in parts]
        if missing:
            raise ValueError(f"parts is missing {missing}; it needs {list(PART_NAMES)}")
        paths = dict(parts)
    mods = {p: _resolve(model, paths[p], p) for p in PART_NAMES}
    return ModelParts(mods["backbone"], mods["header"], mods["classifier"],
                      paths["backbone"], paths["header"], paths["classifier"])


def _under(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def header_layer_groups(model: nn.Module) -> dict[str, list[str]]:
    """Header convs by group: ``{"multiscale": [...], "other": [...]}`` (full dotted names).

    Used for the paper's Fig. 4 / Table 7 split (multi-scale aggregation vs other layers).
    """
    model = _unwrap(model)
    parts = get_parts(model)
    prefixes = list(getattr(model, "multiscale_modules", []) or [])
    groups: dict[str, list[str]] = {"multiscale": [], "other": []}
    for name, m in parts.header.named_modules():
        if isinstance(m, nn.Conv2d):
            full = f"{parts.header_name}.{name}" if name else parts.header_name
            groups["multiscale" if _under(full, prefixes) else "other"].append(full)
    return groups


def check_header(model: nn.Module, example_input: Tensor) -> list[str]:
    """Problems that would stop Network Slimming / Torch-Pruning from pruning the header.

    Runs one eval-mode forward and reports every header conv that is grouped/depthwise or
    whose output does not go straight into a BatchNorm2d. An empty list means the header
    is fit for ANS.
    """
    model = _unwrap(model)
    parts = get_parts(model)
    convs = {m: n for n, m in parts.header.named_modules() if isinstance(m, nn.Conv2d)}
    problems = [f"{parts.header_name}.{n}: grouped/depthwise conv (groups={m.groups})"
                for m, n in convs.items() if m.groups != 1]
    outputs: dict[int, tuple[str, Tensor]] = {}
    fed_to_bn: set[str] = set()
    ran: set[str] = set()

    def conv_hook(mod: nn.Module, _inp: Any, out: Tensor) -> None:
        ran.add(convs[mod])
        outputs[id(out)] = (convs[mod], out)  # keep the tensor alive so its id stays unique

    def bn_hook(_mod: nn.Module, inp: tuple[Tensor, ...]) -> None:
        hit = outputs.get(id(inp[0]))
        if hit is not None and hit[1] is inp[0]:
            fed_to_bn.add(hit[0])

    handles = [m.register_forward_hook(conv_hook) for m in convs]
    handles += [m.register_forward_pre_hook(bn_hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    problems += [f"{parts.header_name}.{n}: output does not feed a BatchNorm2d"
                 for n in convs.values() if n in ran and n not in fed_to_bn]
    problems += [f"{parts.header_name}.{n}: never ran in forward" for n in convs.values() if n not in ran]
    return problems
