"""Checkpoints of (possibly pruned) models: architecture + weights + CDF + training state.

One file, written atomically (temporary name, then rename), read with
``torch.load(weights_only=True)`` — no arbitrary pickles. It holds:

* ``spec`` — ``model.spec``; ``build_model(**spec)`` rebuilds the UNPRUNED architecture;
* ``structure`` — for every module with parameters or buffers: its type, the shape of each
  of its own parameters/buffers and its channel attributes (``in_channels``,
  ``out_channels``, ``groups``, ``num_features``, ``in_features``, ...). Loading rebuilds
  the unpruned model and resizes every module whose shapes differ, which reproduces the
  pruned structure (ANS keeps module names and only shrinks channels);
* ``state_dict`` — the weights (and BN statistics);
* ``cdf`` — ``MaxwellCDF.to_dict()`` or None;
* ``extra`` — whatever the training loop needs to resume (optimizer state, epoch, pruning
  stage, sampler state, config). Tensors, numbers, strings, lists and dicts (what
  ``weights_only`` loading accepts); on saving, paths become strings, numpy scalars Python
  numbers, numpy arrays tensors, and pydantic models their JSON dicts;
* ``meta`` — format version, torch version, creation time, structure signature,
  class names when given.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from workers.dance.cdf import MaxwellCDF
from workers.models import build_model

__all__ = ["Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint", "model_structure",
           "apply_structure"]

FORMAT = "dance-checkpoint"
VERSION = 1

# Channel-carrying attributes of the module types ANS (Torch-Pruning) resizes.
_ATTRS: dict[type, tuple[str, ...]] = {
    nn.modules.conv._ConvNd: ("in_channels", "out_channels", "groups"),
    nn.modules.batchnorm._NormBase: ("num_features",),
    nn.Linear: ("in_features", "out_features"),
    nn.GroupNorm: ("num_groups", "num_channels"),
    nn.LayerNorm: ("normalized_shape",),
    nn.PReLU: ("num_parameters",),
}


class CheckpointError(Exception):
    """A checkpoint file is missing, unreadable, or does not fit the model; the message names the file."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns; ``model`` is in eval mode on ``map_location``."""

    model: nn.Module
    cdf: MaxwellCDF | None
    extra: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _attrs_of(m: nn.Module) -> dict[str, Any]:
    for cls, names in _ATTRS.items():
        if isinstance(m, cls):
            return {n: (list(v) if isinstance(v, tuple) else v) for n in names
                    if (v := getattr(m, n, None)) is not None}
    return {}


def model_structure(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Per module: ``{"type", "attrs", "shapes": {tensor name: shape}}`` (JSON-able)."""
    out: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        tensors = {n: list(t.shape)
                   for n, t in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False))
                   if t is not None}
        if tensors:
            out[name] = {"type": type(m).__name__, "attrs": _attrs_of(m), "shapes": tensors}
    return out


def apply_structure(model: nn.Module, structure: Mapping[str, Mapping[str, Any]]) -> None:
    """Resize ``model``'s modules in place to ``structure`` (values are left uninitialised)."""
    modules = dict(model.named_modules())
    for name, want in structure.items():
        m = modules.get(name)
        if m is None:
            raise ValueError(f"module {name!r} of the checkpoint does not exist in the rebuilt model")
        if type(m).__name__ != want["type"]:
            raise ValueError(f"module {name!r} is a {type(m).__name__} here but a {want['type']} in the checkpoint")
        for attr, value in want.get("attrs", {}).items():
            setattr(m, attr, tuple(value) if isinstance(value, list) else value)
        for tname, shape in want["shapes"].items():
            shape = tuple(shape)
            if tname in m._parameters and m._parameters[tname] is not None:
                old = m._parameters[tname]
                if tuple(old.shape) != shape:
                    m._parameters[tname] = nn.Parameter(old.new_empty(shape), requires_grad=old.requires_grad)
            elif tname in m._buffers and m._buffers[tname] is not None:
                old = m._buffers[tname]
                if tuple(old.shape) != shape:
                    m._buffers[tname] = old.new_empty(shape)
            else:
                raise ValueError(f"module {name!r} has no tensor {tname!r} to resize")


def _plain(v: Any) -> Any:
    """Make ``extra`` loadable with ``weights_only``: paths → str, numpy → Python numbers / tensors,
    pydantic models → JSON-able dicts."""
    import numpy as np

    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_plain(x) for x in v)
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(v))
    if isinstance(v, np.generic):
        return v.item()
    if hasattr(v, "model_dump"):
        return v.model_dump(mode="json")
    return v


def save_checkpoint(path: str | Path, model: nn.Module, cdf: MaxwellCDF | Mapping[str, Any] | None = None,
                    extra: Mapping[str, Any] | None = None, *, class_names: list[str] | None = None,
                    spec: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (pruned or not), its CDF and ``extra`` to ``path`` atomically.

    ``spec`` defaults to ``model.spec``; a model without one can still be saved, and is then
    loaded into a fresh unpruned instance passed to :func:`load_checkpoint`.
    """
    from workers.cost import structure_signature
    from workers.dance.ans import unwrap_model

    model = unwrap_model(model)
    spec = dict(spec if spec is not None else getattr(model, "spec", None) or {})
    if isinstance(cdf, MaxwellCDF):
        cdf_d: dict[str, Any] | None = cdf.to_dict()
    elif cdf is not None:
        cdf_d = MaxwellCDF.from_dict(cdf).to_dict()
    else:
        cdf_d = None
    payload = {
        "format": FORMAT, "version": VERSION, "spec": spec, "structure": model_structure(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "cdf": cdf_d, "extra": _plain(dict(extra or {})),
        "meta": {"torch": str(torch.__version__), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "structure_signature": structure_signature(model), "model_class": type(model).__name__,
                 "class_names": list(class_names) if class_names is not None else None},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, validated; :class:`CheckpointError` on a missing/corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # zip/pickle/EOF errors all mean the same thing to the user
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a DANCE checkpoint (no '{FORMAT}' header)")
    if int(data.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {data['version']} is newer than this code "
                              f"({VERSION})")
    return data


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    model: nn.Module | Callable[[], nn.Module] | None = None) -> Checkpoint:
    """Rebuild the (pruned) model of a checkpoint with its weights, CDF and extra.

    Args:
        path: the checkpoint file.
        map_location: device for the model and tensors.
        model: for checkpoints whose spec cannot rebuild the model (a model without
            ``spec``): a fresh UNPRUNED instance, or a callable returning one.
    """
    data = read_checkpoint(path, map_location)
    if model is None:
        if not data["spec"]:
            raise CheckpointError(f"{path}: the checkpoint has no model spec; pass model= (an unpruned instance)")

        try:
            net = build_model(**data["spec"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: cannot rebuild the model from its spec: {exc}") from None
    else:
        net = model() if callable(model) and not isinstance(model, nn.Module) else model
    try:
        apply_structure(net, data["structure"])
        net.load_state_dict(data["state_dict"], strict=True)
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the weights do not fit the rebuilt model: {str(exc)[:500]}") from None
    net.to(map_location).eval()
    cdf = MaxwellCDF.from_dict(data["cdf"]) if data.get("cdf") else None
    return Checkpoint(model=net, cdf=cdf, extra=dict(data.get("extra") or {}), meta=dict(data.get("meta") or {}))
