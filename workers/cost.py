"""Counted FLOPs per (model structure, input size), cached (DESIGN §4).

Convention: **FLOPs, not multiply–adds**. ``torch.utils.flop_counter.FlopCounterMode``
counts 2 FLOPs per multiply–add (so a conv costs 2·MACs) and counts only matmul- and
convolution-type ops (conv, mm/addmm/bmm, their backward, attention); BatchNorm, ReLU,
pooling, interpolation, softmax and element-wise ops count 0. Those are a few percent of a
segmentation network's arithmetic and none of its multiply-heavy work.

Training FLOPs = forward + backward, where backward computes the gradients of every
trainable parameter and of the activations feeding them, but not of the input image — what
one SGD step executes (the optimizer update itself is not counted).

Counting runs on the ``meta`` device (shapes only, no arithmetic), so even the paper models
at 1024×2048 count in well under a second, without touching the model's weights, gradients
or BatchNorm statistics. Results are cached by a structure signature (the shapes of every
parameter and buffer), the input size and the batch size, so the cache stays valid across
ANS stages: a pruned model has a new signature.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["FlopCount", "count_flops", "structure_signature", "flop_cache_info", "clear_flop_cache"]


@dataclass(frozen=True)
class FlopCount:
    """Counted FLOPs of one forward (and backward) pass of a batch.

    ``parts`` holds the forward FLOPs of the model's backbone, header and classifier (and
    "other" for anything outside them) when the model has those parts.
    """

    forward: int
    backward: int = 0
    parts: Mapping[str, int] = field(default_factory=dict)
    height: int = 0
    width: int = 0
    batch: int = 1

    @property
    def train(self) -> int:
        """forward + backward."""
        return self.forward + self.backward

    def share(self, part: str) -> float:
        """Fraction of the forward FLOPs spent in ``part`` ("backbone", "header", "classifier")."""
        return self.parts.get(part, 0) / self.forward if self.forward else 0.0


def structure_signature(model: nn.Module) -> str:
    """Hash of the model's class and every parameter/buffer name and shape (not the values)."""
    h = hashlib.sha1(type(model).__qualname__.encode())
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    return h.hexdigest()


_CACHE: "OrderedDict[tuple, FlopCount]" = OrderedDict()
_CACHE_MAX = 4096
_LOCK = threading.Lock()
_STATS = {"hits": 0, "misses": 0}


def flop_cache_info() -> dict[str, int]:
    """``{"hits", "misses", "size"}`` of the FLOP cache."""
    with _LOCK:
        return {**_STATS, "size": len(_CACHE)}


def clear_flop_cache() -> None:
    with _LOCK:
        _CACHE.clear()
        _STATS.update(hits=0, misses=0)


def _part_names(model: nn.Module, parts: Mapping[str, str] | None) -> dict[str, str]:
    try:
        from workers.models.base import get_parts

        p = get_parts(model, parts)
    except (TypeError, ValueError, ImportError):
        return {}
    return {"backbone": p.backbone_name, "header": p.header_name, "classifier": p.classifier_name}


def _count(model: nn.Module, x: torch.Tensor, backward: bool, tensors: dict[str, torch.Tensor] | None,
           part_paths: Mapping[str, str]) -> tuple[int, int, dict[str, int]]:
    def run() -> torch.Tensor:
        if tensors is None:
            return model(x)
        return torch.func.functional_call(model, tensors, (x,), strict=False)

    bwd_total = 0
    with torch.enable_grad() if backward else torch.no_grad():
        with FlopCounterMode(display=False) as fwd:
            out = run()
        if backward:
            params = [t for t in (tensors or dict(model.named_parameters())).values()
                      if isinstance(t, torch.Tensor) and t.requires_grad]
            with FlopCounterMode(display=False) as bwd:
                # autograd.grad, not backward(): no .grad is written on the real model.
                torch.autograd.grad(out.float().sum(), params, allow_unused=True)
            bwd_total = int(bwd.get_total_flops())
    counts = fwd.get_flop_counts()
    root = type(model).__name__
    parts: dict[str, int] = {}
    for part, path in part_paths.items():
        key = f"{root}.{path}" if path else root
        parts[part] = int(sum(counts.get(key, {}).values()))
    total = int(fwd.get_total_flops())
    if parts:
        parts["other"] = total - sum(parts.values())
    return total, bwd_total, parts


def count_flops(model: nn.Module, height: int, width: int, batch: int = 1, backward: bool = False,
                parts: Mapping[str, str] | None = None) -> FlopCount:
    """Counted FLOPs of ``model`` on a (batch, 3, height, width) input (cached).

    Args:
        model: any module taking an NCHW image batch (DDP wrappers are unwrapped).
        backward: also count the backward pass (training FLOPs = ``.train``).
        parts: part paths for models that are not a SegmentationModel (see ``get_parts``).
    """
    from workers.dance.ans import unwrap_model

    model = unwrap_model(model)
    key = (structure_signature(model), int(height), int(width), int(batch), bool(backward),
           tuple(sorted((parts or {}).items())))
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _STATS["hits"] += 1
            _CACHE.move_to_end(key)
            return hit
        _STATS["misses"] += 1
    part_paths = _part_names(model, parts)
    modes = {m: m.training for m in model.modules()}
    model.eval()  # BN in train mode refuses 1-value channels (image pooling at batch 1); FLOPs are the same
    try:
        try:
            tensors = {n: torch.empty_like(t, device="meta").requires_grad_(t.requires_grad)
                       if isinstance(t, nn.Parameter) else torch.empty_like(t, device="meta")
                       for n, t in list(model.named_parameters()) + list(model.named_buffers())}
            x = torch.empty(batch, 3, height, width, device="meta")
            fwd, bwd, by_part = _count(model, x, backward, tensors, part_paths)
        except (RuntimeError, NotImplementedError, TypeError):
            # Models holding plain tensor attributes (not buffers) cannot run on meta: count for real.
            p = next(model.parameters())
            x = torch.zeros(batch, 3, height, width, device=p.device, dtype=p.dtype)
            fwd, bwd, by_part = _count(model, x, backward, None, part_paths)
    finally:
        for m, flag in modes.items():
            m.training = flag
    result = FlopCount(forward=fwd, backward=bwd, parts=by_part, height=int(height), width=int(width),
                       batch=int(batch))
    with _LOCK:
        _CACHE[key] = result
        if len(_CACHE) > _CACHE_MAX:
            _CACHE.popitem(last=False)
    return result
