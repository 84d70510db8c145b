"""Figures for co-optimized training on Ray Train (issue: training loop, checkpoints, evaluation).

    .venv/bin/python benchmarks/bench_training.py [--quick] [--json OUT] [--only ray,dance,scaling]

1. Ray overhead. The same loop (:func:`workers.train_loop.train_loop`) with the same data
   and model, once on 1 Ray Train worker and once in this process through the world-size-1
   shim (:func:`workers.train_loop.run_local`), both with one torch thread. Ratio of the
   mean epoch time (epochs after the first, training steps only), and of the whole run's
   wall time (Ray's start-up of the worker group, reports and checkpoint uploads included).
   Goal: epoch-time ratio <= 1.10.
2. DANCE vs baseline on the synthetic set, small DeepLabv3+, same epochs, no Ray: ratios of
   counted training FLOPs (scoring included), of training wall time (sum of the epochs'
   step time), of inference FLOPs per image, and both runs' mIoU. "Realised" is the share
   of the FLOP saving the wall clock delivers: (1 − time ratio) / (1 − FLOPs ratio).
   Goal: >= 0.85.
3. 2 Ray workers (1 CPU, 1 thread each, DDP over gloo) vs 1 worker (2 CPUs, 2 threads) vs
   1 worker (1 thread) on this 2-core machine: training images/s.

Nothing is hard-coded: every figure is measured here and printed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.config import load_config  # noqa: E402
from workers.prepare import worker_config  # noqa: E402
from workers.train_loop import run_local  # noqa: E402


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def overrides(root: Path, cache: Path, epochs: int, batch: int, extra=()) -> list[str]:
    return [f"data.root={root}", f"data.cache_dir={cache}", "model.variant=small", "optim.lr=0.02",
            "ans.stages=4", "ans.l1_lambda=1e-3", f"train.epochs={epochs}", f"train.batch_size={batch}",
            "train.eval_batch_size=8", "scaling.torch_threads=1", "tracking.enabled=false", *extra]


BASELINE = ["ans.enabled=false", "slimming.cad=false", "slimming.casd=false", "slimming.cal=false"]


def ray_run(cfg, storage: Path, name: str):

    from orchestrator.training import build_trainer

    wcfg = worker_config(cfg)
    trainer = build_trainer(cfg.model_copy(update={"train": cfg.train.model_copy(update={"storage_path": storage})}),
                            wcfg, run_name=name, log_level="ERROR")
    t0 = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - t0
    if result.error:
        raise RuntimeError(result.error)
    hist = result.metrics_dataframe.to_dict("records")
    return hist, wall


def bench_ray_overhead(root: Path, tmp: Path, epochs: int) -> dict:
    cfg = load_config(None, overrides(root, tmp / "cache", epochs, 4, BASELINE + [
        "scaling.num_workers=1", "scaling.cpus_per_worker=1"]))
    t0 = time.perf_counter()
    local = run_local(worker_config(cfg)).reports
    local_wall = time.perf_counter() - t0
    ray_hist, ray_wall = ray_run(cfg, tmp / "ray", "overhead")
    lt = mean(r["epoch_time_s"] for r in local[1:])
    rt = mean(r["epoch_time_s"] for r in ray_hist[1:])
    return {"epochs": epochs, "local_epoch_s": lt, "ray_epoch_s": rt, "epoch_time_ratio": rt / lt,
            "local_wall_s": local_wall, "ray_wall_s": ray_wall, "wall_ratio": ray_wall / local_wall}


def bench_dance(root: Path, tmp: Path, epochs: int) -> dict:
    common = overrides(root, tmp / "cache", epochs, 4, ["scaling.num_workers=1"])
    base = run_local(worker_config(load_config(None, common + BASELINE))).reports
    dance = run_local(worker_config(load_config(None, common))).reports
    flops_ratio = dance[-1]["train_flops"] / base[-1]["train_flops"]
    t_base, t_dance = sum(r["epoch_time_s"] for r in base), sum(r["epoch_time_s"] for r in dance)
    t_base_w, t_dance_w = sum(r["epoch_time_s"] for r in base[1:]), sum(r["epoch_time_s"] for r in dance[1:])
    time_ratio = t_dance / t_base
    return {
        "epochs": epochs,
        "train_flops_ratio": flops_ratio,
        "train_time_ratio": time_ratio,
        "train_time_ratio_after_epoch0": t_dance_w / t_base_w,
        "realised_saving": (1 - time_ratio) / (1 - flops_ratio) if flops_ratio < 1 else float("nan"),
        "realised_saving_after_epoch0": ((1 - t_dance_w / t_base_w) /
                                         (1 - sum(r["epoch_train_flops"] for r in dance[1:]) /
                                          sum(r["epoch_train_flops"] for r in base[1:]))),
        "infer_flops_ratio": dance[-1]["infer_flops_per_image"] / base[-1]["infer_flops_per_image"],
        "miou_baseline": base[-1]["miou"], "miou_dance": dance[-1]["miou"],
        "header_channels_kept": dance[-1]["header_channels_kept"],
        "mean_dropped_fraction": mean(r["dropped_fraction"] for r in dance),
        "baseline_train_s": t_base, "dance_train_s": t_dance,
        "baseline_images": sum(r["train_images"] for r in base), "dance_images": sum(r["train_images"] for r in dance),
    }


def bench_scaling(root: Path, tmp: Path, epochs: int) -> dict:
    out = {}
    for label, extra in [("1 worker x 1 thread", ["scaling.num_workers=1", "scaling.cpus_per_worker=1"]),
                         ("1 worker x 2 threads", ["scaling.num_workers=1", "scaling.cpus_per_worker=2",
                                                   "scaling.torch_threads=2"]),
                         ("2 workers x 1 thread", ["scaling.num_workers=2", "scaling.cpus_per_worker=1"])]:
        cfg = load_config(None, overrides(root, tmp / "cache", epochs, 4, BASELINE + extra))
        hist, wall = ray_run(cfg, tmp / "ray", label.replace(" ", "_"))
        out[label] = {"images_per_s": mean(r["images_per_s"] for r in hist[1:]), "wall_s": wall}
    out["speedup_2w_vs_1w1t"] = (out["2 workers x 1 thread"]["images_per_s"]
                                 / out["1 worker x 1 thread"]["images_per_s"])
    out["speedup_2w_vs_1w2t"] = (out["2 workers x 1 thread"]["images_per_s"]
                                 / out["1 worker x 2 threads"]["images_per_s"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller images and fewer epochs")
    ap.add_argument("--json", type=Path, help="write the figures as JSON")
    ap.add_argument("--only", default="ray,dance,scaling")
    args = ap.parse_args()
    which = set(args.only.split(","))
    from workers.data.synth import generate_dataset

    tmp = Path(tempfile.mkdtemp(prefix="bench-training-"))
    size = (128, 256) if args.quick else (256, 512)
    n_train, n_val = (32, 8) if args.quick else (64, 16)
    root = tmp / "synth"
    generate_dataset(root, n_train=n_train, n_val=n_val, size=size, seed=0)
    print(f"synthetic set: {n_train} train + {n_val} val at {size[0]}x{size[1]}, small DeepLabv3+, "
          f"{os.cpu_count()} CPUs")
    figures: dict = {"size": list(size), "n_train": n_train}
    if "dance" in which:
        ep = 4 if args.quick else 6
        d = figures["dance_vs_baseline"] = bench_dance(root, tmp, ep)
        print(f"\n[2] DANCE vs baseline, {ep} epochs, no Ray")
        print(f"    training FLOPs ratio      {d['train_flops_ratio']:.3f}")
        print(f"    training wall-time ratio  {d['train_time_ratio']:.3f}  "
              f"(after epoch 0: {d['train_time_ratio_after_epoch0']:.3f})")
        print(f"    realised FLOP saving      {100 * d['realised_saving']:.0f}%  "
              f"(after epoch 0: {100 * d['realised_saving_after_epoch0']:.0f}%)  goal >= 85%")
        print(f"    inference FLOPs ratio     {d['infer_flops_ratio']:.3f}  "
              f"(header keeps {100 * d['header_channels_kept']:.0f}%)")
        print(f"    mIoU baseline / DANCE     {100 * d['miou_baseline']:.2f} / {100 * d['miou_dance']:.2f}")
        print(f"    images trained            {d['baseline_images']:.0f} / {d['dance_images']:.0f}  "
              f"(dropped {100 * d['mean_dropped_fraction']:.0f}% per epoch)")
    if which & {"ray", "scaling"}:
        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    if "ray" in which:
        ep = 4 if args.quick else 5
        r = figures["ray_overhead"] = bench_ray_overhead(root, tmp, ep)
        print(f"\n[1] Ray overhead, 1 worker, {ep} epochs (baseline config, 1 thread)")
        print(f"    epoch time  plain {r['local_epoch_s']:.3f} s   Ray Train {r['ray_epoch_s']:.3f} s   "
              f"ratio {r['epoch_time_ratio']:.3f}  goal <= 1.10")
        print(f"    whole run   plain {r['local_wall_s']:.1f} s   Ray Train {r['ray_wall_s']:.1f} s   "
              f"ratio {r['wall_ratio']:.2f}  (start-up, reports, checkpoints)")
    if "scaling" in which:
        ep = 3 if args.quick else 4
        s = figures["scaling"] = bench_scaling(root, tmp, ep)
        print(f"\n[3] workers on this {os.cpu_count()}-core machine, images/s (baseline config, {ep} epochs)")
        for k in ("1 worker x 1 thread", "1 worker x 2 threads", "2 workers x 1 thread"):
            print(f"    {k:<22} {s[k]['images_per_s']:.2f} img/s")
        print(f"    2 workers vs 1 worker x 1 thread: x{s['speedup_2w_vs_1w1t']:.2f};  "
              f"vs 1 worker x 2 threads: x{s['speedup_2w_vs_1w2t']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
