"""What a board-cost model sees of a model at one input size: counted FLOPs, parameter bytes, pixels.

These are the quantities a sweep knows for every trial without a board (the paper's
FLOPs, §2.2), so a regression from them to measured joules (``orchestrator.hil.costmodel``)
can rank trials that were never measured. ``dance bench`` records them beside every
measurement.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

TRAIN_STEP_BATCH = 2  # the batch boards measure training steps with (``dance bench --train-steps``)


def model_features(model, height: int, width: int, purpose: str = "infer") -> dict[str, Any]:
    """Features of ``model`` at one (height, width): inference per image, training per step."""
    from workers.cost import count_flops

    params = sum(p.numel() * p.element_size() for p in model.parameters())
    if purpose == "train":
        flops = count_flops(model, height, width, batch=TRAIN_STEP_BATCH, backward=True).train
        pixels = TRAIN_STEP_BATCH * height * width
    else:
        flops = count_flops(model, height, width).forward
        pixels = height * width
    family = (getattr(model, "spec", None) or {}).get("name") or type(model).__name__
    return {"flops": float(flops), "param_bytes": float(params), "pixels": float(pixels), "family": str(family)}


def checkpoint_features(ckpt: str | Path, sizes: Iterable[tuple[str, int, int]]) -> dict[tuple[str, int, int], dict]:
    """``{(purpose, h, w): features}`` for the model in ``ckpt`` (loaded once)."""
    from workers.checkpoint import load_checkpoint

    model = load_checkpoint(ckpt).model.eval()
    return {(p, h, w): model_features(model, h, w, p) for p, h, w in sizes}


def trial_plan(ckpt: str | Path, buckets_arg: str | None = None):
    """``(model, [(h, w, share), ...], config)``: the model, the resolution buckets its export will have
    (the same rule as ``dance export``: ``buckets_arg``, else the checkpoint's own bucket plan) and the
    training config it carries."""
    from workers.checkpoint import load_checkpoint
    from workers.export import buckets_from_config, parse_buckets
    from workers.models.base import size_rule

    ck = load_checkpoint(ckpt)
    model = ck.model.eval()
    config = ck.extra.get("config") or {}
    if buckets_arg:
        buckets = parse_buckets(buckets_arg)
    else:
        quantum, min_size = size_rule(model, (config.get("train") or {}).get("size_quantum"))
        buckets = buckets_from_config(config, ck.cdf, quantum, min_size)
    return model, [(b.height, b.width, b.fraction) for b in buckets], config
