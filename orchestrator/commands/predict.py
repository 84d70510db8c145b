"""`dance predict CHECKPOINT --out DIR` — label PNGs in the dataset's own ids.

For Cityscapes the files are ``DIR/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` holding
``labelIds`` (uint8, image resolution), the layout the official ``cityscapesscripts``
evaluation (``evalPixelLevelSemanticLabeling`` with ``CITYSCAPES_RESULTS=DIR``) finds by
the ``<city>_<seq>_<frame>`` prefix. Other datasets keep each image's path below its split
folder, with a ``.png`` suffix.

``--color`` writes colourised maps to a SEPARATE folder (``--color-dir``, default
``<OUT>_color`` beside OUT): the official evaluation walks the whole results folder and
stops at a second PNG matching an image's prefix, so colour files must never sit under OUT.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from orchestrator.checkpoints import load_run
from orchestrator.commands.evaluate import add_data_args, default_device, inputs_of
from orchestrator.errors import UserError
from orchestrator.progress import progress_bar


def output_name(image: Path, split: str) -> Path:
    """The prediction's path relative to the output folder."""
    parts = image.parts
    if split in parts:
        k = len(parts) - 1 - parts[::-1].index(split)
        rel = Path(*parts[k + 1:])
    else:
        rel = Path(image.name)
    return rel.with_suffix(".png")


def cmd_predict(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from workers.evaluate import predict_batches

    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    color_dir: Path | None = None
    if args.color or args.color_dir is not None:
        color_dir = args.color_dir if args.color_dir is not None else out.parent / f"{out.name}_color"
        a, b = out.expanduser().resolve(), color_dir.expanduser().resolve()
        if a == b or a in b.parents or b in a.parents:
            raise UserError(f"--color-dir {color_dir} must lie outside --out {out} (and not contain it): the official "
                            "evaluation would find two predictions per image")
        if color_dir.exists() and not color_dir.is_dir():
            raise UserError(f"{color_dir}: exists and is not a folder")
    device = default_device(args.device)
    run = load_run(args.checkpoint, device)
    with progress_bar("scoring images (Eq. 1)") as bar:
        ds, sizes, _ = inputs_of(run, args, bar)
    bs = args.batch_size or (run.cfg.train.eval_batch_size if run.cfg is not None else 4)
    colors = ds.meta.get("colors") if color_dir is not None else None
    if color_dir is not None and not colors:
        raise UserError(f"{ds.kind} has no class colours; drop --color")
    written = 0
    with progress_bar(f"predicting {len(ds)} images") as bar:
        for idx, preds, _labels in predict_batches(run.checkpoint.model, ds, sizes, batch_size=bs,
                                                   device=torch.device(device)):
            for i, pred in zip(idx, preds):
                train_ids = pred.numpy().astype(np.uint8)
                rel = output_name(ds.samples[i].image, ds.split)
                dest = out / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(ds.to_dataset_ids(train_ids).astype(np.uint8)).save(dest)
                if colors:
                    palette = np.zeros((256, 3), dtype=np.uint8)
                    palette[:len(colors)] = np.asarray(colors, dtype=np.uint8)
                    cdest = color_dir / rel
                    cdest.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(palette[train_ids]).save(cdest)
                written += 1
            bar(written, len(ds))
    print(f"wrote {written} label PNGs ({ds.kind} label ids) to {out}")
    if colors:
        print(f"wrote {written} colour PNGs to {color_dir}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="write predicted label PNGs in the dataset's own ids",
                       description="Predict every image of a split and write label PNGs in the dataset's own ids "
                                   "(Cityscapes: labelIds, readable by the official evaluation scripts).")
    p.add_argument("checkpoint", type=Path, help="model.pt, or the checkpoint folder holding it")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    add_data_args(p)
    p.add_argument("--color", action="store_true", help="also write colourised predictions, to --color-dir")
    p.add_argument("--color-dir", type=Path, default=None,
                   help="folder for the colour PNGs, outside OUT (default: OUT_color beside OUT; implies --color)")
    p.set_defaults(func=cmd_predict)
