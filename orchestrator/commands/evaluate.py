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
from pathlib import Path

from orchestrator.checkpoints import LoadedRun, load_run, resolve_inputs
from orchestrator.progress import progress_bar


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", help="split to run on (default: the training config's val split)")
    p.add_argument("--dataset", metavar="KIND", help="dataset kind (default: the one the checkpoint was trained on)")
    p.add_argument("--root", type=Path, help="dataset root (default: the one the checkpoint was trained on)")
    p.add_argument("--full-res", action="store_true", help="run every image at its stored size (no CAD at inference)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per forward (default: train.eval_batch_size)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-cache", action="store_true", help="recompute complexity scores instead of reusing the cache")


def default_device(arg: str | None) -> str:
    import torch

    return arg or ("cuda" if torch.cuda.is_available() else "cpu")


def inputs_of(run: LoadedRun, args: argparse.Namespace, progress=None):
    """:func:`orchestrator.checkpoints.resolve_inputs` with the data flags of :func:`add_data_args`."""
    return resolve_inputs(run, split=args.split, dataset=args.dataset, root=args.root, full_res=args.full_res,
                          use_cache=not args.no_cache, progress=progress)


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from workers.evaluate import evaluate, stored_sizes

    device = default_device(args.device)
    run = load_run(args.checkpoint, device)
    with progress_bar("scoring images (Eq. 1)") as bar:
        ds, sizes, p = inputs_of(run, args, bar)
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
        # said as everywhere a person reads it: "epoch k/N" counts from 1; MLflow's step is k - 1
        total = f"/{run.cfg.train.epochs}" if run.cfg is not None else ""
        print(f"epoch                 {out['epochs_done']}{total} (MLflow step {out['epoch']}), "
              f"ANS stage {out['ans_stage']}")
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
