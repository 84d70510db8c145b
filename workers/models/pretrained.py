"""Load ImageNet-pretrained backbone weights from a local file (never downloads).

The file is a torchvision-format ResNet state dict (``conv1.weight``, ``bn1.running_mean``,
``layer1.0.conv1.weight``, ..., ``fc.weight``) or MobileNetV2 one (``features.0.0.weight``, ...,
``classifier.1.weight``), as ``.pth``/``.pt`` (torch.save) or ``.safetensors``. Keys go straight
into the backbone module; the ImageNet head (``fc.*``; MobileNetV2's ``features.18.*`` and
``classifier.*``, which a backbone names in ``unused_pretrained_prefixes``) is expected to be
left over and is only listed as ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

__all__ = ["PretrainedReport", "load_backbone_weights", "read_state_dict"]

_EXPECTED_UNUSED_PREFIXES = ("fc.",)
_PREFIXES_TO_STRIP = ("module.", "backbone.", "encoder.")


@dataclass
class PretrainedReport:
    """What a :func:`load_backbone_weights` call did.

    ``missing``: backbone keys the file did not provide (they keep their initial values);
    ``unexpected``: file keys the backbone has no use for; ``ignored``: expected leftovers
    (``fc.*``, BN ``num_batches_tracked`` counters missing from older checkpoints).
    """

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every backbone weight came from the file and nothing was left over."""
        return not self.missing and not self.unexpected

    def summary(self, limit: int = 8) -> str:
        """One human-readable paragraph."""
        def show(keys: list[str]) -> str:
            more = f", ... (+{len(keys) - limit})" if len(keys) > limit else ""
            return ", ".join(keys[:limit]) + more

        lines = [f"pretrained backbone {self.path}: loaded {len(self.loaded)} tensors"]
        if self.missing:
            lines.append(f"  missing in file ({len(self.missing)}, left at init): {show(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected in file ({len(self.unexpected)}, not used): {show(self.unexpected)}")
        if self.ignored:
            lines.append(f"  ignored as expected ({len(self.ignored)}): {show(self.ignored)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for MLflow params/artifacts)."""
        return {"path": self.path, "loaded": len(self.loaded), "missing": list(self.missing),
                "unexpected": list(self.unexpected), "ignored": list(self.ignored)}


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a torch pickle (loaded with ``weights_only``)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"pretrained backbone file not found: {p} (weights are never downloaded; "
                                "put a torchvision-format ResNet or MobileNetV2 state dict there)")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(p), device="cpu")
    else:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors come in many types
            raise ValueError(f"cannot read {p} as a PyTorch state dict: {exc}") from exc
        # Training checkpoints often nest the weights.
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{p} does not hold a state dict (a mapping of names to tensors)")
    return _strip_prefix(dict(state))


def _strip_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    for prefix in _PREFIXES_TO_STRIP:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _target(module: nn.Module) -> nn.Module:
    from .base import SegmentationModel, _unwrap, get_parts

    module = _unwrap(module)
    return get_parts(module).backbone if isinstance(module, SegmentationModel) else module


def check_same_file(path: str | Path, expected_sha256: str | None) -> None:
    """Raise ValueError when ``path`` here is not the file the driver recorded (``expected_sha256``; None: no record).

    On a cluster every node reads the weights at the same path; a node with another or a stale copy would
    train from weights other than the ones its run records.
    """
    if not expected_sha256:
        return
    from workers.digest import file_sha256

    here = file_sha256(path)
    if here != expected_sha256:
        import socket

        raise ValueError(f"{path} on {socket.gethostname()} is not the file the run recorded (sha256 {here[:16]}… "
                         f"here, {expected_sha256[:16]}… where the run was started): every node must read the same "
                         "weights at that path")


def load_backbone_weights(model: nn.Module, path: str | Path, strict: bool = False) -> PretrainedReport:
    """Copy a torchvision-format ResNet or MobileNetV2 state dict into ``model``'s backbone.

    ``model`` is a :class:`SegmentationModel` (weights go into ``get_parts(model).backbone``)
    or the backbone module itself. Raises ValueError when no key matches, when a matching
    key has a different shape (e.g. a ResNet-18 file for a ResNet-50 backbone, or a narrow
    ``small`` variant), and, with ``strict``, when anything is missing or unexpected.
    Nothing is copied unless the whole check passes.
    """
    backbone = _target(model)
    state = read_state_dict(path)
    own = backbone.state_dict()
    report = PretrainedReport(path=str(path))
    unused = _EXPECTED_UNUSED_PREFIXES + tuple(getattr(backbone, "unused_pretrained_prefixes", ()))
    for key in state:
        if key in own:
            report.loaded.append(key)
        elif key.startswith(unused):
            report.ignored.append(key)
        else:
            report.unexpected.append(key)
    for key in own:
        if key not in state:
            (report.ignored if key.endswith("num_batches_tracked") else report.missing).append(key)

    if not report.loaded:
        raise ValueError(f"no key of {path} matches the backbone ({type(backbone).__name__}, e.g. "
                         f"{list(own)[:3]}); file keys look like {list(state)[:3]} — is it a torchvision ResNet or "
                         "MobileNetV2 state dict?")
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs backbone {tuple(own[k].shape)}"
                  for k in report.loaded if state[k].shape != own[k].shape]
    if mismatched:
        more = f" (+{len(mismatched) - 5} more)" if len(mismatched) > 5 else ""
        raise ValueError(f"{len(mismatched)} tensor(s) of {path} do not fit the backbone (wrong depth/width?): "
                         + "; ".join(mismatched[:5]) + more)
    if strict and (report.missing or report.unexpected):
        raise ValueError(report.summary())
    with torch.no_grad():
        for key in report.loaded:
            own[key].copy_(state[key].to(own[key].dtype))
    return report
