"""`dance eval CHECKPOINT [--split val]` — mIoU and per-class IoU of a trained (pruned) model.

Inference is complexity-adaptive as in training: each image is scored (Eq. 1, cached),
mapped to p through the CDF stored in the checkpoint, resized by its CAD ratio, and the
logits are upsampled to the label's resolution. ``--full-res`` turns the resizing off.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import UserError


@dataclass
class LoadedRun:
    file: Path
    checkpoint: Any  # workers.checkpoint.Checkpoint
    cfg: Any  # ExperimentConfig | None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def checkpoint_file(path: Path) -> Path:
    """A checkpoint file, or a directory holding ``model.pt`` (a Ray Train checkpoint folder)."""
    from workers.train_loop import CHECKPOINT_FILE

    path = Path(path).expanduser()
    if path.is_dir():
        if (path / CHECKPOINT_FILE).is_file():
            return path / CHECKPOINT_FILE
        raise UserError(f"{path}: folder has no {CHECKPOINT_FILE}")
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint")
    return path


def load_run(path: Path, device: str = "cpu") -> LoadedRun:
    from pydantic import ValidationError

    from workers.checkpoint import CheckpointError, load_checkpoint
    from workers.config import ExperimentConfig

    file = checkpoint_file(path)
    try:
        ck = load_checkpoint(file, map_location=device)
    except CheckpointError as exc:
        raise UserError(str(exc)) from None
    cfg = None
    if ck.extra.get("config"):
        try:
            cfg = ExperimentConfig.model_validate(ck.extra["config"])
        except ValidationError as exc:
            raise UserError(f"{file}: the config stored in the checkpoint no longer validates: {exc}") from None
    return LoadedRun(file, ck, cfg)


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", help="split to run on (default: the training config's val split)")
    p.add_argument("--dataset", metavar="KIND", help="dataset kind (default: the one the checkpoint was trained on)")
    p.add_argument("--root", type=Path, help="dataset root (default: the one the checkpoint was trained on)")
    p.add_argument("--full-res", action="store_true", help="run every image at its stored size (no CAD at inference)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="images per forward (default: train.eval_batch_size)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-cache", action="store_true", help="recompute complexity scores instead of reusing the cache")


def default_device(arg: str | None) -> str:
    import torch

    return arg or ("cuda" if torch.cuda.is_available() else "cpu")


def resolve_inputs(run: LoadedRun, args: argparse.Namespace, progress=None):
    """(dataset, per-image inference sizes, p or None) for the requested split."""
    from workers.config import DataConfig
    from workers.dance.slimming import SlimmingConfig
    from workers.data.datasets import DATASET_KINDS, open_dataset
    from workers.data.scoring import score_dataset
    from workers.evaluate import inference_sizes, stored_sizes

    cfg = run.cfg
    data = cfg.data if cfg is not None else DataConfig()
    kind = args.dataset or (cfg.data.kind if cfg is not None else None)
    root = args.root or (cfg.data.root if cfg is not None else None)
    if kind is None or root is None:
        raise UserError(f"{run.file}: the checkpoint does not record its dataset; pass --dataset and --root")
    if kind not in DATASET_KINDS:
        raise UserError(f"unknown dataset kind {kind!r}; known: {', '.join(DATASET_KINDS)}")
    split = args.split or data.val_split
    ds = open_dataset(kind, root, split)
    ck_classes = run.checkpoint.meta.get("class_names")
    if ck_classes and list(ck_classes) != list(ds.class_names):
        raise UserError(f"{run.file}: trained for classes {len(ck_classes)} ({', '.join(ck_classes[:3])}, ...), "
                        f"but {kind} has {ds.num_classes} ({', '.join(ds.class_names[:3])}, ...)")
    slimming = cfg.slimming if cfg is not None else SlimmingConfig()
    model = run.checkpoint.model
    quantum = int(getattr(model, "size_quantum", 32))
    if cfg is not None and cfg.train.size_quantum:  # the sizes the model was trained and evaluated at
        quantum = int(cfg.train.size_quantum)
    min_size = int(getattr(model, "min_size", 2 * quantum))
    p = None
    if not args.full_res and slimming.cad and run.checkpoint.cdf is not None:
        sc = score_dataset(ds, cache_dir=data.cache_dir, use_cache=not args.no_cache,
                           batch_size=data.score_batch, progress=progress)
        from workers.dance.slimming import indicator_p

        # p_mode (paper Table 6): the same indicator the run trained and evaluated with
        p = indicator_p(run.checkpoint.cdf.p(sc), slimming, cfg.seed if cfg is not None else 0, split)
    sizes = inference_sizes(stored_sizes(ds), p, slimming if not args.full_res else slimming.model_copy(update={"cad": False}),
                            quantum, min_size)
    return ds, sizes, p


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from orchestrator.progress import progress_bar
    from workers.evaluate import evaluate, stored_sizes

    device = default_device(args.device)
    run = load_run(args.checkpoint, device)
    with progress_bar("scoring images (Eq. 1)") as bar:
        ds, sizes, p = resolve_inputs(run, args, bar)
    bs = args.batch_size or (run.cfg.train.eval_batch_size if run.cfg is not None else 4)
    with progress_bar(f"evaluating {len(ds)} images") as bar:
        res = evaluate(run.checkpoint.model, ds, sizes, batch_size=bs, device=torch.device(device),
                       count_scoring=p is not None, stored=stored_sizes(ds), progress=bar)
    extra = run.checkpoint.extra
    out = {
        "checkpoint": str(run.file), "dataset": ds.kind, "root": str(ds.root), "split": ds.split, "images": len(ds),
        "miou": res.miou, "pixel_acc": res.confusion.pixel_accuracy(), "per_class_iou": res.per_class,
        "infer_flops_per_image": res.infer_flops_per_image,
        "infer_network_flops_per_image": res.network_flops / max(len(ds), 1),
        "adaptive_resolution": p is not None,
        "sizes": {f"{h}x{w}": n for (h, w), n in sorted(Counter(map(tuple, sizes)).items())},
        # extra["epoch"] counts epochs done; "epoch" is the 0-based index, as in the metrics and the
        # checkpoint folder name (checkpoint_epoch_0015 holds epoch 15, the 16th)
        "epoch": extra["epoch"] - 1 if isinstance(extra.get("epoch"), int) else None,
        "epochs_done": extra.get("epoch"), "ans_stage": (extra.get("slimmer") or {}).get("stage"),
    }
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    print(f"{run.file}  ({ds.kind} {ds.split}, {len(ds)} images, "
          f"{'complexity-adaptive sizes' if p is not None else 'full resolution'})")
    if out["epoch"] is not None:
        print(f"epoch                 {out['epoch']} ({out['epochs_done']} done), ANS stage {out['ans_stage']}")
    print(f"mIoU                  {100 * out['miou']:.2f}")
    print(f"pixel accuracy        {100 * out['pixel_acc']:.2f}")
    print(f"inference FLOPs/image {out['infer_flops_per_image']:.4g}")
    print("per-class IoU:")
    for name, v in res.per_class.items():
        print(f"  {name:<16} {'   n/a' if v is None else f'{100 * v:6.2f}'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="mIoU and per-class IoU of a checkpoint",
                       description="Evaluate a checkpoint (file or Ray Train checkpoint folder) with "
                                   "complexity-adaptive inference; logits are scored at the label's resolution.")
    p.add_argument("checkpoint", type=Path, help="model.pt, or the checkpoint folder holding it")
    add_data_args(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_eval)
