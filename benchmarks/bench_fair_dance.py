"""What the fair-test fixes of issue 20 change, measured side by side on the reproduction's "dusk" set.

    python benchmarks/bench_fair_dance.py [--train 200] [--size 128x256] [--epochs 8] [--json]

Generates the reproduction's target set (``dance data synth --style dusk --seed 1``), scores it
(Eq. 1) and fits the CDF as a run does, then plans the epochs the training loop would run
(pure planning: no training) and prints

1. CAL's effective weight per quartile of p (the factor by which an image's loss enters its
   step's gradient, relative to an unweighted mean; what ``cal_weight_q1..q4`` log), with
   ``cal_normalize: batch`` (Eq. 2 as printed) and ``epoch`` (the default);
2. the training cost of Table 8's dropping rows relative to the baseline, with
   ``drop_budget: epochs`` and ``steps`` (the default), as pixels trained (∝ FLOPs for a
   fixed network; ANS's header pruning comes on top), beside the paper's Table 8;
3. how many images CAD turns into another aspect ratio: a per-side snap (before) and the
   isotropic snap (now), at quantum 64 and 16.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.dance.cdf import MaxwellCDF  # noqa: E402
from workers.dance.loss import expected_weight  # noqa: E402
from workers.dance.sampler import baseline_steps, plan_epoch  # noqa: E402
from workers.dance.slimming import (  # noqa: E402
    SlimmingConfig,
    cad_ratio,
    dance_sizes,
    drop_probability,
    loss_weight,
    quantize_size,
)
from workers.data.datasets import open_dataset  # noqa: E402
from workers.data.scoring import score_dataset  # noqa: E402
from workers.data.synth import generate_dataset  # noqa: E402

BATCH = 8
# Paper Table 8 (DeepLabv3+ / Cityscapes), training FLOPs relative to the baseline.
PAPER_T8 = {"ANS": -0.21, "ANS+RD": -0.14, "ANS+CASD": -0.14}


def quartile_weights(p: np.ndarray, sizes, cfg: SlimmingConfig, epochs: int, normalize: str) -> list[float]:
    """Mean effective CAL weight per quartile of p over ``epochs`` planned epochs."""
    w = loss_weight(p, cfg)
    drop = drop_probability(p, cfg)
    ew = expected_weight(w, 1.0 - drop)
    q = np.clip(np.searchsorted(np.quantile(p, [0.25, 0.5, 0.75]), p, side="right"), 0, 3)
    total, count = np.zeros(4), np.zeros(4)
    target = baseline_steps(len(p), BATCH)
    for e in range(epochs):
        plan = plan_epoch(sizes, drop, BATCH, seed=0, epoch=e, target_steps=target)
        for batch in plan.batches:
            idx = np.asarray(batch[0])
            eff = w[idx] * len(idx) / max(w[idx].sum(), 1e-12) if normalize == "batch" else w[idx] / ew
            np.add.at(total, q[idx], eff)
            np.add.at(count, q[idx], 1)
    return (total / np.maximum(count, 1)).tolist()


def pixels_trained(sizes, drop: np.ndarray, epochs: int, budget: str) -> float:
    """Pixels the network is fed over ``epochs`` planned epochs."""
    target = baseline_steps(len(sizes), BATCH) if budget == "steps" and np.any(drop > 0) else None
    px = 0.0
    for e in range(epochs):
        plan = plan_epoch(sizes, drop, BATCH, seed=0, epoch=e, target_steps=target)
        px += sum(len(b[0]) * s[0] * s[1] for b, s in zip(plan.batches, plan.sizes))
    return px


def per_side_size(h: int, w: int, ratio: float, quantum: int) -> tuple[int, int]:
    """The snap before issue 20: each side rounded on its own."""
    def side(n: int) -> int:
        return int(min(max(quantum, n // quantum * quantum), max(quantum, round(n * ratio / quantum) * quantum)))
    return side(h), side(w)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--size", default="128x256")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "dusk"
        generate_dataset(root, n_train=args.train, n_val=2, size=(h, w), seed=1, style="dusk")
        ds = open_dataset("cityscapes", root, "train")
        sc = score_dataset(ds, cache_dir=Path(tmp) / "cache")
    cdf = MaxwellCDF.fit(sc)
    p = np.clip(cdf.p(sc), 0.0, 1.0)
    stored = [(h, w)] * len(p)
    out: dict = {"images": len(p), "size": [h, w], "epochs": args.epochs}

    dance = SlimmingConfig()
    sizes16 = dance_sizes(stored, p, dance, 16)
    out["cal_quartiles"] = {norm: quartile_weights(p, sizes16, dance, args.epochs, norm) for norm in ("batch", "epoch")}

    base_px = pixels_trained([(h, w)] * len(p), np.zeros(len(p)), args.epochs, "epochs")
    rows = {"ANS+RD": SlimmingConfig(cad=False, casd=False, cal=False, rd=True),
            "ANS+CASD": SlimmingConfig(cad=False, cal=False),
            "ANS+CAD": SlimmingConfig(casd=False, cal=False),
            "DANCE": SlimmingConfig()}
    cost = {}
    for name, cfg in rows.items():
        sz = dance_sizes(stored, p, cfg, 16)
        drop = drop_probability(p, cfg)
        cost[name] = {b: pixels_trained(sz, drop, args.epochs, b) / base_px - 1.0 for b in ("epochs", "steps")}
    out["train_pixels_vs_baseline"] = cost

    reshaped = {}
    for quantum in (64, 16):

        r = cad_ratio(p, dance)
        before = sum(not math.isclose(a / b, w / h, rel_tol=0.02)
                     for a, b in [per_side_size(h, w, float(x), quantum)[::-1] for x in r])
        after = sum(not math.isclose(a / b, w / h, rel_tol=0.02)
                    for a, b in [quantize_size(h, w, float(x), quantum)[::-1] for x in r])
        reshaped[quantum] = {"per_side": before, "isotropic": after}
    out["aspect_changed"] = reshaped

    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"dusk set: {len(p)} images of {h}x{w}, {args.epochs} planned epochs, batch {BATCH}")
    print("\n1. CAL effective weight by quartile of p (1.0 = unweighted mean)")
    for norm, q in out["cal_quartiles"].items():
        print(f"   cal_normalize {norm:5s}: " + " / ".join(f"{v:.3f}" for v in q) + f"   (q4/q1 = {q[3] / q[0]:.2f}x)")
    print("\n2. training pixels vs the baseline (∝ FLOPs before ANS), by drop_budget; paper Table 8 beside")
    for name, c in cost.items():
        paper = PAPER_T8.get(name)
        ref = f"   paper {paper:+.0%} (with ANS)" if paper is not None else ""
        print(f"   {name:9s} epochs {c['epochs']:+7.1%}   steps {c['steps']:+7.1%}{ref}")
    print("\n3. images CAD turns into another aspect ratio")
    for quantum, r in reshaped.items():
        print(f"   quantum {quantum:2d}: per-side snap {r['per_side']:3d} of {len(p)}   isotropic {r['isotropic']:3d}")


if __name__ == "__main__":
    main()
