"""`dance data synth|stats|score|premise` — make, inspect and score datasets, and check DANCE's premise on them."""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from orchestrator.checkpoints import load_run
from orchestrator.commands import premise
from orchestrator.config import load_config
from orchestrator.errors import UserError
from orchestrator.progress import progress_bar
from workers.config import DataConfig
from workers.data.synth import COMPLEXITY_MODES, STYLES


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HxW (e.g. 256x512), got {text!r}") from None
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"size {text} is too small (at least 16x16)")
    return h, w


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="experiment YAML whose `data` section names the dataset")
    p.add_argument("--dataset", metavar="KIND",
                   help="dataset kind instead of a config: cityscapes, camvid, bdd100k, voc")
    p.add_argument("--root", type=Path, help="dataset root folder (with --dataset)")
    p.add_argument("--split", default=None, help="split to read (default: the config's train split, or 'train')")


def resolve_data(args: argparse.Namespace) -> tuple[DataConfig, str]:
    """The dataset named either by a config file or by --dataset/--root."""
    if args.config and (args.dataset or args.root):
        raise UserError("give either a CONFIG file or --dataset/--root, not both")
    if args.config:
        data = load_config(args.config).data
    elif args.dataset and args.root:
        data = DataConfig(kind=args.dataset, root=args.root)
    else:
        raise UserError("name a dataset: a CONFIG file, or --dataset KIND --root DIR")
    return data, args.split or data.train_split


def open_split(data: DataConfig, split: str):
    from workers.data.datasets import DATASET_KINDS, open_dataset

    if data.kind not in DATASET_KINDS:
        raise UserError(f"unknown dataset kind {data.kind!r}; known: {', '.join(DATASET_KINDS)}")
    return open_dataset(data.kind, data.root, split=split)


def cmd_synth(args: argparse.Namespace) -> int:
    from workers.data.synth import generate_dataset

    if args.train < 2 or args.val < 1:
        raise UserError("--train must be at least 2 and --val at least 1")
    with progress_bar("generating synthetic scenes") as bar:
        summary = generate_dataset(args.out, n_train=args.train, n_val=args.val, size=args.size, seed=args.seed,
                                   progress=bar, overwrite=args.overwrite, style=args.style,
                                   complexity=args.complexity)
    print(f"wrote {args.train} train + {args.val} val images ({args.size[0]}x{args.size[1]}) to {args.out} "
          "in the Cityscapes layout")
    if args.json:
        json.dump(summary, sys.stdout, indent=2, default=str)
        print()
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    data, split = resolve_data(args)
    ds = open_split(data, split)
    sizes: dict[str, int] = {}
    counts = np.zeros(256, dtype=np.int64)
    with progress_bar(f"reading {len(ds)} labels") as bar:
        for i in range(len(ds)):
            label = ds.load_label(i)
            h, w = label.shape
            sizes[f"{h}x{w}"] = sizes.get(f"{h}x{w}", 0) + 1
            counts += np.bincount(label.reshape(-1), minlength=256)
            bar(i + 1, len(ds))
    class_pixels = {name: int(counts[k]) for k, name in enumerate(ds.class_names)}
    result = {
        "dataset": data.kind, "root": str(data.root), "split": split, "images": len(ds),
        "num_classes": ds.num_classes, "sizes": sizes, "class_pixels": class_pixels,
        "ignored_pixels": int(counts[255]),
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    print(f"{data.kind} {split}: {len(ds)} images, {ds.num_classes} classes, root {data.root}")
    for size, n in sorted(sizes.items(), key=lambda kv: -kv[1]):
        print(f"  size {size}: {n} images")
    total = max(1, int(counts.sum()))
    for name, n in class_pixels.items():
        print(f"  {name:<16} {n:>12d} px  {100.0 * n / total:6.2f}%")
    print(f"  {'(ignore)':<16} {int(counts[255]):>12d} px  {100.0 * counts[255] / total:6.2f}%")
    return 0


def score_cdf(data: DataConfig, split: str, args: argparse.Namespace):
    """The CDF that maps this split's scores to p: a checkpoint's, or the one fitted on the TRAIN split.

    p of a validation or test image must come from the training set's CDF (the one the model
    uses, DESIGN §3); fitting a fresh CDF on the split itself would give other p values.
    """
    from workers.dance.cdf import MaxwellCDF
    from workers.data.scoring import score_dataset

    if args.checkpoint is not None:
        run = load_run(args.checkpoint)
        if run.checkpoint.cdf is None:
            raise UserError(f"{run.file}: the checkpoint carries no CDF (trained without complexity scores)")
        return run.checkpoint.cdf, f"from {run.file}"
    train = open_split(data, data.train_split)
    with progress_bar(f"scoring {len(train)} {data.train_split} images for the CDF") as bar:
        sc_train = score_dataset(train, cache_dir=data.cache_dir, use_cache=not args.no_cache, device=args.device,
                                 batch_size=data.score_batch, progress=bar)
    try:
        return MaxwellCDF.fit(sc_train), f"fitted on {data.train_split}"
    except ValueError as exc:
        raise UserError(f"{data.root} ({data.train_split}): {exc}") from None


def cmd_score(args: argparse.Namespace) -> int:
    from workers.data.scoring import score_dataset

    data, split = resolve_data(args)
    ds = open_split(data, split)
    with progress_bar(f"scoring {len(ds)} images (Eq. 1)") as bar:
        sc = score_dataset(ds, cache_dir=data.cache_dir, use_cache=not args.no_cache, device=args.device,
                           batch_size=data.score_batch, progress=bar)
    cdf, origin = score_cdf(data, split, args)
    p = cdf.p(sc)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "sc_mean", "p"])
            for path, s, pi in zip(ds.image_paths(), sc, p):
                writer.writerow([str(path), f"{s:.6f}", f"{pi:.6f}"])
    q = np.quantile(sc, [0.0, 0.5, 1.0])
    print(f"{data.kind} {split}: {len(ds)} images scored")
    print(f"SC_mean min {q[0]:.3f}  median {q[1]:.3f}  max {q[2]:.3f}")
    print(f"Maxwell CDF ({origin}): loc={cdf.loc:.6f} scale={cdf.scale:.6f}")
    print(f"p: mean {p.mean():.3f}, quartiles {np.quantile(p, 0.25):.3f} / {np.quantile(p, 0.5):.3f} / "
          f"{np.quantile(p, 0.75):.3f}")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="make, inspect and score datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True

    p = dsub.add_parser("synth", help="write a synthetic urban-scene dataset in the Cityscapes layout")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--train", type=int, default=64, help="number of training images (default 64)")
    p.add_argument("--val", type=int, default=16, help="number of validation images (default 16)")
    p.add_argument("--size", type=_parse_size, default=(256, 512), help="HxW (default 256x512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier synthetic set in OUT (never other files)")
    p.add_argument("--style", choices=STYLES, default="day", help="look of the scenes (default day)")
    p.add_argument("--complexity", choices=COMPLEXITY_MODES, default="objects",
                   help="what a scene's clutter drives: objects (more, smaller objects and thin structures; "
                        "default) or texture (the version-1 sets, byte for byte)")
    p.add_argument("--json", action="store_true", help="also print the generator's summary as JSON")
    p.set_defaults(func=cmd_synth)

    p = dsub.add_parser("stats", help="images, sizes and class pixel counts of a split")
    _add_dataset_args(p)
    p.add_argument("--json", action="store_true", help="print JSON (class pixel counts under `class_pixels`)")
    p.set_defaults(func=cmd_stats)

    p = dsub.add_parser("score", help="spatial complexity (Eq. 1) per image, the Maxwell fit and p",
                        description="Score a split (Eq. 1) and map the scores to p through the Maxwell CDF fitted on "
                                    "the TRAIN split (the one a model trained on this data uses), or through the CDF "
                                    "stored in --checkpoint.")
    _add_dataset_args(p)
    p.add_argument("--checkpoint", type=Path,
                   help="use this checkpoint's CDF (model.pt or its folder) instead of fitting one")
    p.add_argument("--out", type=Path, help="write a CSV with columns image,sc_mean,p")
    p.add_argument("--no-cache", action="store_true", help="recompute every score (default: reuse the on-disk cache)")
    p.add_argument("--device", default="cpu", help="torch device for scoring (cpu, cuda)")
    p.set_defaults(func=cmd_score)

    premise.add_parser(dsub)
