"""Bring your own model: any ``nn.Module`` plus the dotted paths of its three parts.

    build_model("custom", num_classes=19, factory="mypkg.mymod:make_net",
                factory_kwargs={"width": 32},
                parts={"backbone": "encoder", "header": "decoder.aspp", "classifier": "head"},
                size_quantum=32)

The factory is imported from ``"module:attribute"`` (so that the model can be rebuilt from
its spec on a Ray worker or from a checkpoint) and called with ``factory_kwargs``, plus
``num_classes`` when its signature accepts it and ``factory_kwargs`` does not set it.
The wrapper keeps the user's module as ``net`` and its forward: a dict output uses its
``"out"`` entry, a tuple/list its first element, and logits smaller than the input are
upsampled bilinearly. Part paths are relative to the user's module; ``get_parts`` reports
them prefixed with ``net.``.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Mapping

from torch import Tensor, nn

from .base import PART_NAMES, SegmentationModel, _resolve
from .layers import resize

__all__ = ["CustomSegmentationModel", "build_custom", "import_factory"]

WRAPPED = "net"


def import_factory(ref: str | Callable[..., nn.Module]) -> tuple[str, Callable[..., nn.Module]]:
    """Resolve ``"pkg.module:attr"`` (or an importable callable) to ``(reference, callable)``."""
    if callable(ref):
        module, qualname = getattr(ref, "__module__", None), getattr(ref, "__qualname__", "")
        text = f"{module}:{qualname}"
        if not module or "<" in qualname:
            raise ValueError(f"factory {ref!r} is not importable by name (a lambda or local function?); "
                             "give it as 'module:attribute' so the model can be rebuilt from its spec")
        ref = text
    if not isinstance(ref, str) or ref.count(":") != 1:
        raise ValueError(f"factory must be 'module:attribute', got {ref!r}")
    mod_name, attr = ref.split(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"cannot import factory module {mod_name!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"factory {ref!r}: {mod_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"factory {ref!r} is not callable")
    return ref, obj


class CustomSegmentationModel(SegmentationModel):
    """Wraps a user module; the three parts are views of its submodules (no duplicate params)."""

    def __init__(self, net: nn.Module, parts: Mapping[str, str], *, num_classes: int, spec: Mapping[str, Any],
                 size_quantum: int, min_size: int | None = None, multiscale_modules: list[str] | None = None) -> None:
        missing = [p for p in PART_NAMES if p not in parts]
        extra = sorted(set(parts) - set(PART_NAMES))
        if missing or extra:
            raise ValueError(f"parts needs exactly {list(PART_NAMES)}; missing {missing}, unknown {extra}")
        for p in PART_NAMES:
            _resolve(net, parts[p], p)  # fail early with the missing path in the message
        for name in multiscale_modules or []:
            _resolve(net, name, "multiscale_modules entry")
        super().__init__(None, None, None, num_classes=num_classes, spec=spec, size_quantum=size_quantum,
                         min_size=min_size, multiscale_modules=[f"{WRAPPED}.{m}" for m in multiscale_modules or []])
        self.net = net
        self.part_paths = {p: f"{WRAPPED}.{parts[p]}" for p in PART_NAMES}

    @property  # type: ignore[override]
    def backbone(self) -> nn.Module:
        return self.get_submodule(self.part_paths["backbone"])

    @property  # type: ignore[override]
    def header(self) -> nn.Module:
        return self.get_submodule(self.part_paths["header"])

    @property  # type: ignore[override]
    def classifier(self) -> nn.Module:
        return self.get_submodule(self.part_paths["classifier"])

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        if isinstance(out, Mapping):
            if "out" not in out:
                raise ValueError(f"custom model returned a dict without 'out' (keys {list(out)})")
            out = out["out"]
        elif isinstance(out, (tuple, list)):
            out = out[0]
        if out.dim() != 4 or out.shape[1] != self.num_classes:
            raise ValueError(f"custom model must return (N, {self.num_classes}, h, w) logits, got {tuple(out.shape)}")
        return resize(out, x)


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def build_custom(num_classes: int, *, factory: str | Callable[..., nn.Module], parts: Mapping[str, str],
                 factory_kwargs: Mapping[str, Any] | None = None, size_quantum: int = 32,
                 min_size: int | None = None, multiscale_modules: list[str] | None = None) -> CustomSegmentationModel:
    """Build the user's model and wrap it (see the module docstring)."""
    ref, fn = import_factory(factory)
    kwargs = dict(factory_kwargs or {})
    call_kwargs = dict(kwargs)
    if "num_classes" not in call_kwargs and _accepts(fn, "num_classes"):
        call_kwargs["num_classes"] = num_classes
    net = fn(**call_kwargs)
    if not isinstance(net, nn.Module):
        raise ValueError(f"factory {ref} returned {type(net).__name__}, not an nn.Module")
    if int(size_quantum) < 1:
        raise ValueError(f"size_quantum must be a positive int, got {size_quantum}")
    spec = {"name": "custom", "num_classes": num_classes, "variant": None, "factory": ref,
            "factory_kwargs": kwargs, "parts": dict(parts), "size_quantum": int(size_quantum),
            "min_size": min_size, "multiscale_modules": list(multiscale_modules or [])}
    return CustomSegmentationModel(net, parts, num_classes=num_classes, spec=spec, size_quantum=size_quantum,
                                   min_size=min_size, multiscale_modules=multiscale_modules)
