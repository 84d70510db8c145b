"""`dance quickstart` — the embedded-default main job: synthetic data, scored, on local resources."""
from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.commands.data import cmd_score


def run(args: argparse.Namespace) -> int:
    from workers.data.synth import generate_dataset

    from orchestrator.progress import progress_bar

    root: Path = args.data
    if not (root / "leftImg8bit").is_dir():
        with progress_bar("generating the synthetic dataset") as bar:
            generate_dataset(root, n_train=args.train, n_val=args.val, size=(256, 512), seed=0, progress=bar)
        print(f"synthetic dataset written to {root}")
    else:
        print(f"using the synthetic dataset in {root}")
    score_args = argparse.Namespace(config=None, dataset="cityscapes", root=root, split="train",
                                    out=root / "complexity.csv", no_cache=False, device="cpu")
    return cmd_score(score_args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="generate the synthetic dataset and run the default DANCE job on it")
    p.add_argument("--data", type=Path, default=Path("data/synth"), help="where the synthetic dataset lives (default data/synth)")
    p.add_argument("--train", type=int, default=64, help="training images to generate (default 64)")
    p.add_argument("--val", type=int, default=16, help="validation images to generate (default 16)")
    p.set_defaults(func=run)
