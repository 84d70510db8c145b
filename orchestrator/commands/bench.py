"""`dance bench CHECKPOINT|RUN_ID [--boards FILE] [--labels L ...] [--fresh]`: hardware-in-the-loop measurement."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.errors import UserError

DESCRIPTION = """\
Export the model once per resolution bucket (the export manifest), measure every bucket on a
matching board through the board pool (a Ray actor; one job per board at a time), and log to
MLflow: per board kind, device.<kind>.energy_j_per_image (Σ fraction_k · J_k over the dataset's
bucket distribution + the Eq. 1 scoring cost when CAD is on), .latency_ms_p50/.latency_ms_p90,
.train_energy_j_per_step (with --train-steps); absent where nothing was measured. A RUN_ID logs
into that training run; a bare checkpoint gets a new run in experiment 'dance-bench'.
Measurements are cached by (model sha256, input shape, runtime, board model, L4T, TensorRT,
power mode): a repeat touches no board unless --fresh.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure a checkpoint's latency and energy on the boards, into MLflow",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="checkpoint file/folder, or the MLflow run id of a training run")
    p.add_argument("--boards", type=Path, help="inventory (default configs/boards.yaml, else the local board)")
    p.add_argument("--labels", nargs="+", default=None, metavar="LABEL", help="only boards carrying all these labels")
    p.add_argument("--fresh", action="store_true", help="probe and measure again, ignoring the measurement cache")
    p.add_argument("--buckets", default=None, metavar="HxW[:FRAC],...",
                   help="export sizes when the checkpoint has no training config (see dance export)")
    p.add_argument("--train-steps", type=int, default=0, metavar="N",
                   help="also export TorchScript and measure training energy per step (at least N steps per window)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--experiment", default="dance-bench", help="experiment for a new run (bare checkpoint)")
    p.add_argument("--journal", type=Path, default=Path(".dance/board-journal.sqlite"), help="the pool's job journal")
    p.add_argument("--cache", type=Path, default=Path(".dance/measurements.sqlite"), help="the measurement cache")
    p.add_argument("--no-ray", action="store_true", help="run the board pool in this process instead of a Ray actor")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from orchestrator.boards.bench import run_bench, table
    from orchestrator.boards.inventory import load_inventory

    if args.train_steps < 0:
        raise UserError("--train-steps must be >= 0")
    inv = load_inventory(args.boards)
    res = run_bench(args.target, inv, labels=args.labels, fresh=args.fresh, buckets=args.buckets,
                    train_steps=args.train_steps, tracking_uri=args.tracking_uri, experiment=args.experiment,
                    journal=args.journal, cache_path=args.cache, use_ray=not args.no_ray)
    print(table(res))
    for n in res.notes:
        print(f"note: {n}", file=sys.stderr)
    print(f"mlflow: run {res.run_id} at {res.tracking_uri}")
    print(f"{res.jobs_run} job(s) run on boards, {sum(m.cached for m in res.measurements)} answered from the cache"
          f"{'' if res.boards_contacted else ', no board contacted'}; {res.seconds:.1f} s")
    failed = [m for m in res.measurements if m.error]
    return 1 if failed else 0
