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
into that training run; a bare checkpoint logs into its earlier bench run in experiment
'dance-bench' (found by the model's hash), or a new one (--new-run).
Measurements are cached by (model sha256, input shape, runtime, board model, L4T, TensorRT,
power mode, every protocol setting, the agent's version): a repeat touches no board unless --fresh.
Every measurement has a quality (ok | warn | fail, with reasons); one whose repeats disagree is
measured again with 2 more repeats, and a figure that still fails is logged with its flag.

Exit status: 0 every board kind measured; 3 partial (a kind had no board online, or a bucket
failed; the rest is measured and logged); 4 nothing measured; 5 with --strict, a figure failed
its quality gate; 2 a bad command line, inventory or checkpoint.
"""
EXIT_COMPLETE, EXIT_PARTIAL, EXIT_NOTHING, EXIT_QUALITY = 0, 3, 4, 5


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
    p.add_argument("--strict", action="store_true", help="exit 5 when a figure fails its quality gate")
    p.add_argument("--new-run", action="store_true",
                   help="a bare checkpoint gets a new MLflow run even if it was benched before")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from orchestrator.boards.bench import run_bench, table
    from orchestrator.boards.inventory import load_inventory

    if args.train_steps < 0:
        raise UserError("--train-steps must be >= 0")
    inv = load_inventory(args.boards)
    res = run_bench(args.target, inv, labels=args.labels, fresh=args.fresh, buckets=args.buckets,
                    train_steps=args.train_steps, tracking_uri=args.tracking_uri, experiment=args.experiment,
                    journal=args.journal, cache_path=args.cache, use_ray=not args.no_ray, new_run=args.new_run)
    print(table(res))
    for n in res.notes:
        print(f"note: {n}", file=sys.stderr)
    print(f"mlflow: run {res.run_id} at {res.tracking_uri}")
    print(f"{res.jobs_run} job(s) run on boards, {sum(m.cached for m in res.measurements)} answered from the cache"
          f"{'' if res.boards_contacted else ', no board contacted'}; {res.seconds:.1f} s")
    if res.status == "none":
        return EXIT_NOTHING
    if args.strict and "fail" in res.quality.values():
        print("dance bench: --strict: a figure failed its quality gate (see the quality column)", file=sys.stderr)
        return EXIT_QUALITY
    return EXIT_PARTIAL if res.status == "partial" else EXIT_COMPLETE
