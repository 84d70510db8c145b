"""Batch fill of DANCE's size-bucketed batches, before and after CAD levels (DESIGN §3: >= 95 %).

    python benchmarks/bench_batch_fill.py [--json]

Simulated Cityscapes plan (2,975 images of 1024x2048, batch 8 per rank, CASD drops at the
default range, p from Maxwell-distributed scores through a fitted CDF) at 1 and 2 ranks,
plus the synthetic set of the issue-12 runs (160 images of 128x256). "before" is the
continuous CAD ratio (``slimming.cad_levels: null``), where only sub-``min_batch`` leftovers
move down; "after" the default 6 CAD levels. ``train.fill_batches: true`` also moves partial
batches down to the next smaller bucket. ``moved`` is the share of trained images
that were trained one bucket (or more) smaller than their own CAD size — the price of filling.
Pure planning (no images, no training): a few seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.dance.batch_fill import simulated_fill  # noqa: E402
from workers.dance.slimming import SlimmingConfig  # noqa: E402

CASES = [
    # (label, images, stored size, batch, quantum)
    ("cityscapes 2975 @1024x2048, quantum 16", 2975, (1024, 2048), 8, 16),
    ("cityscapes 2975 @1024x2048, quantum 64", 2975, (1024, 2048), 8, 64),
    ("synthetic 160 @128x256, quantum 16", 160, (128, 256), 8, 16),
    ("synthetic 160 @128x256, quantum 64", 160, (128, 256), 8, 64),
]
SETTINGS = [  # (name, slimming, train.fill_batches)
    ("before: continuous, no fill", SlimmingConfig(cad_levels=None), False),
    ("after: cad_levels 6 (default)", SlimmingConfig(), False),
    ("continuous, fill", SlimmingConfig(cad_levels=None), True),
    ("cad_levels 6 + fill_batches", SlimmingConfig(), True),
]


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--epochs", type=int, default=8, help="epochs averaged per row")
    args = ap.parse_args(argv)
    rows = []
    for label, n, size, batch, quantum in CASES:
        for world in (1, 2):
            for name, cfg, fill in SETTINGS:
                r = simulated_fill(n, size, batch, world, cfg, quantum, epochs=args.epochs, fill=fill)
                rows.append({"case": label, "ranks": world, "setting": name, "fill": r.fill,
                             "mean_batch": r.mean_batch, "buckets": r.buckets, "unbatched": r.unbatched,
                             "moved": r.moved})
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'case':<40} {'ranks':>5}  {'setting':<37} {'fill':>6} {'batch':>6} {'buckets':>7} {'moved':>6}")
        for r in rows:
            print(f"{r['case']:<40} {r['ranks']:>5}  {r['setting']:<37} {100 * r['fill']:5.1f}% "
                  f"{r['mean_batch']:6.2f} {r['buckets']:7.1f} {100 * r['moved']:5.1f}%")
    return rows


if __name__ == "__main__":
    main()
