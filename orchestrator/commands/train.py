"""`dance train CONFIG [--set key=value ...]` — one co-optimized training run on Ray Train."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from orchestrator.config import load_config


def cmd_train(args: argparse.Namespace) -> int:
    from orchestrator.sweep.preflight import preflight_train
    from orchestrator.training import run_training

    cfg = load_config(args.config, args.set or [])  # every config error surfaces here, before Ray starts
    preflight_train(cfg, args.tracking_uri)  # the tracking store answers, the storage path takes a file
    if args.dry_run:
        print(json.dumps(cfg.model_dump(mode="json"), indent=2))
        return 0
    print(f"dance train: {cfg.model.name}/{cfg.model.variant} on {cfg.data.kind} ({cfg.data.root}), "
          f"{cfg.scaling.num_workers} worker(s), {cfg.train.epochs} epochs, mode {cfg.train.mode}, "
          f"ANS {'on' if cfg.ans.enabled else 'off'}, CAD/CASD/CAL/RD "
          f"{int(cfg.slimming.cad)}/{int(cfg.slimming.casd)}/{int(cfg.slimming.cal)}/{int(cfg.slimming.rd)}",
          file=sys.stderr)
    out = run_training(cfg, address=args.address, tracking_uri=args.tracking_uri, run_name=args.run_name,
                       print_fn=lambda line: print(line, file=sys.stderr, flush=True), verbose=args.verbose,
                       log_level="INFO" if args.verbose else "WARNING")
    if not out.history:
        print(f"run {out.run_name} had already finished all {cfg.train.epochs} epochs in {cfg.train.storage_path}; "
              "nothing was trained (pick another --run-name for a new run)", file=sys.stderr)
    print(f"run:        {out.run_name}")
    if out.checkpoint_file is not None:
        print(f"checkpoint: {out.checkpoint_file}")
    if out.mlflow_run_id:
        print(f"mlflow:     run {out.mlflow_run_id} at {out.tracking_uri}")
    if out.failures:
        print(f"recovered from {len(out.failures)} worker failure(s)")
    m = out.metrics
    for k in ("miou", "train_flops", "infer_flops_per_image", "header_channels_kept", "dropped_fraction",
              "images_per_s", "epoch_time_s", "energy_j"):
        if k in m:
            print(f"{k:<22} {m[k]:.6g}" if isinstance(m[k], float) else f"{k:<22} {m[k]}")
    if args.json:
        Path(args.json).write_text(json.dumps({"run_name": out.run_name, "metrics": m, "history": out.history,
                                               "checkpoint": str(out.checkpoint_file) if out.checkpoint_file else None,
                                               "mlflow_run_id": out.mlflow_run_id}, indent=1, default=str))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="one co-optimized training run on Ray Train, logged to MLflow",
                       description="Train a segmentation model with DANCE (data slimming + ANS) on N Ray Train "
                                   "workers. Config errors are reported with their YAML path before Ray starts.")
    p.add_argument("config", type=Path, help="experiment YAML (see configs/quickstart.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=4 --set slimming.cad=false (repeatable)")
    p.add_argument("--address", help="join this Ray cluster (default: $RAY_ADDRESS, else a local instance)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--run-name", help="name of the Ray Train run and the MLflow run; an existing run of that name "
                                      "under train.storage_path is resumed from its last checkpoint")
    p.add_argument("--json", metavar="FILE", help="also write the final metrics, history and checkpoint path as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="show the Ray workers' own output on the terminal")
    p.add_argument("--dry-run", action="store_true", help="validate and print the resolved config, then exit")
    p.set_defaults(func=cmd_train)
