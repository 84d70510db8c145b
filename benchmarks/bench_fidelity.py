"""Issue 12's side-by-side run on the synthetic set: baseline vs DANCE after the fidelity fixes.

    .venv/bin/python benchmarks/bench_fidelity.py [--epochs 30] [--runs baseline,dance] [--json OUT]

Synthetic set of 160 train / 40 val scenes at 128x256 (seed 0), small DeepLabv3+ from
scratch, world size 1 (the Ray Train loop through ``run_local``, one torch thread), batch 8,
lr 0.02, λ 1e-3, S = 6, target ratio 0.5, size quantum 64, evaluation every 5 epochs and
after the last. Runs, each with the same schedule:

* ``baseline``: no ANS, no data slimming;
* ``dance``: every component, ANS on Algorithm 1's schedule (the defaults after the fixes:
  ``ans.schedule: algorithm1``, ``slimming.cad_levels: 6``);
* ``dance_end_of_stage``: the same with the old end-of-stage prune schedule;
* ``ans_only``, ``dance_fill``: ANS alone; DANCE with ``train.fill_batches``.

Prints, per run: final mIoU, mIoU at the last evaluation before the last prune, counted
train FLOPs (ratio to the baseline), inference FLOPs per image, mean batch fill and the
wall time. Every figure is measured here; heavy (minutes per run): run it under the lock.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.config import load_config  # noqa: E402
from workers.prepare import worker_config  # noqa: E402
from workers.train_loop import run_local  # noqa: E402

OFF = ["slimming.cad=false", "slimming.casd=false", "slimming.cal=false"]
RUNS = {
    "baseline": ["ans.enabled=false", *OFF],
    "dance": [],
    "dance_end_of_stage": ["ans.schedule=end_of_stage"],
    "ans_only": OFF,
    "dance_fill": ["train.fill_batches=true"],
}


def overrides(root: Path, cache: Path, epochs: int, seed: int = 0) -> list[str]:
    return [f"seed={seed}", f"data.root={root}", f"data.cache_dir={cache}", "model.variant=small", "optim.lr=0.02",
            "ans.stages=6", "ans.target_ratio=0.5", "ans.l1_lambda=1e-3", f"train.epochs={epochs}",
            "train.batch_size=8", "train.eval_batch_size=8", "train.size_quantum=64", "train.eval_every=5",
            "scaling.num_workers=1", "scaling.torch_threads=1", "tracking.enabled=false"]


def run(name: str, root: Path, tmp: Path, epochs: int, seed: int = 0) -> dict:
    cfg = load_config(None, overrides(root, tmp / "cache", epochs, seed) + RUNS[name])
    t0 = time.perf_counter()
    tr_reports = run_local(worker_config(cfg)).reports
    wall = time.perf_counter() - t0
    evals = [r for r in tr_reports if "miou" in r]
    last = tr_reports[-1]
    prunes = [r["epoch"] for r in tr_reports if r.get("ans_prunes")]
    before = [r for r in evals if prunes and r["epoch"] < prunes[-1]]
    return {
        "run": name, "epochs": epochs, "seed": seed, "miou": last["miou"],
        "miou_before_last_prune": before[-1]["miou"] if before else None,
        "epoch_before_last_prune": before[-1]["epoch"] if before else None,
        "last_prune_epoch": prunes[-1] if prunes else None,
        "train_flops": last["train_flops"], "infer_flops_per_image": last["infer_flops_per_image"],
        "header_channels_kept": last["header_channels_kept"],
        "batch_fill": sum(r["batch_fill"] for r in tr_reports) / len(tr_reports),
        "prune_gamma_spreads": [r["ans_prune_gamma_spread"] for r in tr_reports if "ans_prune_gamma_spread" in r],
        "miou_curve": {r["epoch"]: r["miou"] for r in evals}, "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--runs", default="baseline,dance", help=f"comma-separated, of {','.join(RUNS)}")
    ap.add_argument("--seed", type=int, default=0, help="training seed (init, drops); the data set is seed 0")
    ap.add_argument("--data", type=Path, default=None, help="reuse a synthetic set (default: generate one)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here (after every run)")
    args = ap.parse_args(argv)
    names = [n for n in args.runs.split(",") if n]
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        ap.error(f"unknown run(s) {unknown}; choose from {sorted(RUNS)}")
    from workers.data.synth import generate_dataset

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="dance-fidelity-") as d:
        tmp = Path(d)
        root = args.data or tmp / "synth"
        if args.data is None:
            generate_dataset(root, n_train=160, n_val=40, size=(128, 256), seed=0)
        for name in names:
            row = run(name, root, tmp, args.epochs, args.seed)
            rows.append(row)
            base = next((r for r in rows if r["run"] == "baseline"), None)
            ratio = f" ({row['train_flops'] / base['train_flops']:.2f}x)" if base else ""
            before = row["miou_before_last_prune"]
            before_txt = "-" if before is None else f"{100 * before:5.1f}% (epoch {row['epoch_before_last_prune']})"
            print(f"{name:<20} mIoU {100 * row['miou']:5.1f}%  before last prune {before_txt}"
                  f"  train FLOPs {row['train_flops']:.3g}{ratio}  infer FLOPs/img {row['infer_flops_per_image']:.3g}"
                  f"  fill {100 * row['batch_fill']:.1f}%  {row['wall_s']:.0f} s", flush=True)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
