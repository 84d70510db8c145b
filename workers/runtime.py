"""Where the training loop runs: inside Ray Train, or in this process without Ray.

:func:`workers.train_loop.train_loop` talks to its surroundings only through a
:class:`Runtime`: rank and world size, the device, wrapping the model for data
parallelism, reporting metrics with a checkpoint, and the checkpoint to resume from.
:class:`RayRuntime` maps these to ``ray.train`` (``get_context``, ``prepare_model``,
``report``, ``get_checkpoint``); :class:`LocalRuntime` is the world-size-1 shim used by
the Ray-overhead benchmark and the fast ablation tests, so both run the same loop.
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn


class Runtime:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    is_ray: bool = False

    def prepare_model(self, model: nn.Module) -> nn.Module:  # pragma: no cover - interface
        raise NotImplementedError

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None,
               name: str | None = None) -> None:  # pragma: no cover
        raise NotImplementedError

    @contextmanager
    def resume_dir(self) -> Iterator[Path | None]:  # pragma: no cover
        yield None


class RayRuntime(Runtime):
    """Inside a ``TorchTrainer`` worker."""

    is_ray = True

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.local_rank = ctx.get_local_rank()
        self.device = ray.train.torch.get_device()

    def prepare_model(self, model: nn.Module) -> nn.Module:
        import ray.train.torch

        # DDP's default buffer sync makes rank 0's BatchNorm statistics authoritative at every forward.
        return ray.train.torch.prepare_model(model)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, name: str | None = None) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir is not None else None
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name if ckpt is not None else None)

    @contextmanager
    def resume_dir(self) -> Iterator[Path | None]:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as d:
            yield Path(d)


class LocalRuntime(Runtime):
    """World size 1 in this process; checkpoints are copied under ``checkpoint_root``.

    ``reports`` collects every reported metrics dict, ``checkpoints`` their directories.
    ``resume_from`` (a checkpoint directory) plays the part of ``ray.train.get_checkpoint()``.
    """

    def __init__(self, device: str | torch.device = "cpu", checkpoint_root: str | Path | None = None,
                 resume_from: str | Path | None = None) -> None:
        self.device = torch.device(device)
        self.checkpoint_root = Path(checkpoint_root) if checkpoint_root is not None else None
        self.resume_from = Path(resume_from) if resume_from is not None else None
        self.reports: list[dict[str, Any]] = []
        self.checkpoints: list[Path] = []

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model.to(self.device)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, name: str | None = None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir is not None and self.checkpoint_root is not None:
            dest = self.checkpoint_root / (name or f"checkpoint_{len(self.checkpoints):06d}")
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(checkpoint_dir, dest)
            self.checkpoints.append(dest)

    @contextmanager
    def resume_dir(self) -> Iterator[Path | None]:
        yield self.resume_from
