"""`dance quickstart` — the embedded-default main job: a 4-trial DANCE sweep, all local.

Local Ray, local MLflow (sqlite in the working directory), the synthetic dataset:
generate it (once), score it with Eq. 1 and fit the CDF, then sweep
``configs/sweeps/quickstart.yaml`` — baseline, ANS only, data slimming only and full
DANCE on a small DeepLabv3+ — print the trials with the Pareto front marked, and the
``mlflow ui`` command that opens them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.cli import build_parser
from orchestrator.errors import UserError

PACKAGED_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "sweeps" / "quickstart.yaml"


def _config_path(given: Path | None) -> Path:
    for candidate in ([given] if given else [Path("configs/sweeps/quickstart.yaml"), PACKAGED_CONFIG]):
        if candidate.is_file():
            return candidate
    raise UserError(f"quickstart sweep config not found ({given or 'configs/sweeps/quickstart.yaml'}); run from the "
                    "repository root or pass --config")


def run(args: argparse.Namespace) -> int:
    from orchestrator.progress import progress_bar
    from workers.data.synth import generate_dataset

    config = _config_path(args.config)
    root: Path = args.data
    if not (root / "leftImg8bit").is_dir():
        with progress_bar("generating the synthetic dataset") as bar:
            generate_dataset(root, n_train=args.train, n_val=args.val, size=(256, 512), seed=0, progress=bar)
        print(f"synthetic dataset written to {root}")
    else:
        print(f"using the synthetic dataset in {root}")
    # Through the real parsers, so every option the sub-commands grow gets its default here too.
    parser = build_parser()
    score = parser.parse_args(["data", "score", "--dataset", "cityscapes", "--root", str(root), "--split", "train",
                               "--out", str(root / "complexity.csv")])
    score.func(score)
    if args.score_only:
        return 0
    overrides = [f"data.root={root}"] + (args.set or [])
    print(f"\nsweeping: dance sweep {config} " + " ".join(f"--set {o}" for o in overrides), flush=True)
    argv = ["sweep", str(config)] + [a for o in overrides for a in ("--set", o)]
    argv += (["--address", args.address] if args.address else []) + (["--plain"] if args.plain else [])
    argv += ["--tracking-uri", args.tracking_uri] if args.tracking_uri else []
    sweep = parser.parse_args(argv)
    return sweep.func(sweep)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="synthetic data, Eq. 1 scoring, and a 4-trial DANCE sweep, all local",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("--data", type=Path, default=Path("data/synth"),
                   help="where the synthetic dataset lives (default data/synth)")
    p.add_argument("--train", type=int, default=64, help="training images to generate (default 64)")
    p.add_argument("--val", type=int, default=16, help="validation images to generate (default 16)")
    p.add_argument("--config", type=Path, help="sweep config (default configs/sweeps/quickstart.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    p.add_argument("--score-only", action="store_true", help="stop after scoring the dataset")
    p.add_argument("--plain", action="store_true", help="plain progress lines instead of the live table")
    p.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///mlflow.db here)")
    p.set_defaults(func=run)
