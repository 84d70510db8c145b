"""DANCE's premise on the synthetic sets, the two complexity modes side by side (issue 20 §2).

    python benchmarks/bench_premise.py [--train 200] [--val 50] [--size 128x256] [--epochs 8]
                                       [--modes texture,objects] [--keep DIR] [--json]

For each generator mode (``dance data synth --complexity``): the same set of scenes (seed 0,
"day"), a plain baseline trained from scratch with the reproduction's former pretraining recipe
(``configs/reproduce/scratch-baseline.yaml``, ``--epochs`` epochs, evaluated at the end), then
``dance data premise`` on its val split. Prints per mode: val mIoU, Spearman of SC vs per-image
loss with its 95 % bootstrap interval, the mIoU lost at 0.5x input per SC tercile and the trend
(tercile 3 minus tercile 1) with its interval, the verdict, and the wall time of each step.

Everything goes through the real CLI (``python -m orchestrator.cli``), as a user runs it. On 2
cores, 200/50 images of 128x256 take about 1.5 minutes per mode at 8 epochs, about 6 at 30.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _dance(*args: str, cwd: Path) -> float:
    """Run one dance command (output kept in cwd/log.txt); its wall time in seconds."""
    t0 = time.perf_counter()
    with open(cwd / "log.txt", "a") as log:
        log.write(f"$ dance {' '.join(args)}\n")
        log.flush()
        rc = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT).returncode
    if rc != 0:
        sys.exit(f"dance {' '.join(args)} failed (rc {rc}); its output is in {cwd / 'log.txt'}")
    return time.perf_counter() - t0


def sc_spread(root: Path) -> dict:
    """Eq. 1 scores of the train split: coefficient of variation and a Maxwell fit's KS p-value."""
    import numpy as np
    from scipy import stats

    from workers.dance.cdf import MaxwellCDF
    from workers.data.datasets import open_dataset
    from workers.data.scoring import score_dataset

    sc = score_dataset(open_dataset("cityscapes", root, "train"), use_cache=False)
    cdf = MaxwellCDF.fit(sc)
    return {"sc_cv": float(np.std(sc) / np.mean(sc)), "maxwell_ks_p": float(stats.kstest(sc, cdf.p).pvalue)}


def measure(mode: str, work: Path, args: argparse.Namespace) -> dict:
    """Generate, train and check the premise for one complexity mode."""
    work.mkdir(parents=True, exist_ok=True)
    data, res = work / "data", work / "results"
    synth_s = _dance("data", "synth", str(data), "--train", str(args.train), "--val", str(args.val),
                     "--size", args.size, "--seed", "0", "--complexity", mode, cwd=work)
    train_s = _dance("train", "configs/reproduce/scratch-baseline.yaml", "--set", f"data.root={data}",
                     "--set", f"data.cache_dir={work / 'cache'}", "--set", f"train.epochs={args.epochs}",
                     "--set", f"train.eval_every={args.epochs}", "--set", f"train.storage_path={res}",
                     "--set", "tracking.experiment=bench-premise",
                     "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}", "--json", str(work / "train.json"), cwd=work)
    trained = json.loads((work / "train.json").read_text())
    premise_s = _dance("data", "premise", str(data), "--checkpoint", trained["checkpoint"],
                       "--json", str(work / "premise.json"), cwd=work)
    p = json.loads((work / "premise.json").read_text())
    return {
        "mode": mode, "val_miou": trained["metrics"].get("miou"), **sc_spread(data),
        "spearman": p["premise_spearman"], "spearman_lo": p["premise_spearman_lo"],
        "spearman_hi": p["premise_spearman_hi"],
        "tercile_miou_lost": [t["miou_drop"] for t in p["terciles"]],
        "tercile_sc": [[t["sc_min"], t["sc_max"]] for t in p["terciles"]],
        "trend": p["premise_drop_trend"], "trend_lo": p["premise_drop_trend_lo"],
        "trend_hi": p["premise_drop_trend_hi"],
        "verdict": p["verdict"], "seconds": {"synth": round(synth_s, 1), "train": round(train_s, 1),
                                             "premise": round(premise_s, 1)},
    }


def _pts(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--val", type=int, default=50)
    ap.add_argument("--size", default="128x256")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--modes", default="texture,objects", help="comma-separated generator modes")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    with tempfile.TemporaryDirectory(prefix="bench-premise-") as tmp:
        base = args.keep or Path(tmp)
        rows = [measure(m, base / m, args) for m in modes]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"premise of the synthetic 'day' set ({args.train}/{args.val} images of {args.size}, seed 0), "
          f"baseline trained {args.epochs} epochs")
    print(f"{'mode':<9} {'val mIoU':>8}  {'Spearman [95 % CI]':<26} {'mIoU lost at 0.5x by SC tercile (pts)':<38} "
          f"{'trend t3-t1 [95 % CI] (pts)':<30} verdict")
    for r in rows:
        ci = f"{r['spearman']:+.3f} [{r['spearman_lo']:+.3f}, {r['spearman_hi']:+.3f}]"
        lost = " / ".join(_pts(v) for v in r["tercile_miou_lost"])
        trend = (f"{_pts(r['trend'])} [{_pts(r['trend_lo'])}, {_pts(r['trend_hi'])}]"
                 if r["trend"] is not None else "–")
        print(f"{r['mode']:<9} {_pts(r['val_miou']):>8}  {ci:<26} {lost:<38} {trend:<30} {r['verdict']}")
    for r in rows:
        s = r["seconds"]
        print(f"  {r['mode']}: train-split SC spread: CV {r['sc_cv']:.3f}, Maxwell fit KS p {r['maxwell_ks_p']:.3f}; "
              f"synth {s['synth']} s, train {s['train']} s, premise {s['premise']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
