"""GPU figures: the training loop's GPU path, and issue 20's headline cells at a GPU budget.

    python benchmarks/bench_gpu.py --out DIR          # on a CUDA machine; needs neither Ray nor MLflow
    python benchmarks/bench_gpu.py --analyse DIR      # anywhere: the tables again from DIR's files

Everything trains through the loop a sweep's trial runs (:class:`workers.train_loop.Trainer`, on
``cuda`` through the world-size-1 runtime, as :func:`workers.train_loop.run_local`), so a bare GPU
node with torch and pydantic runs it. Three parts:

1. **Alone on the GPU** (NVML energy is measured only then): the baseline in fp32 and in AMP, and
   full DANCE in AMP, two epochs each; the second epoch's step time, images/s and joules. From
   them the AMP speed-up and how much of DANCE's counted FLOP saving the GPU's wall clock
   delivers ("realised" = (1 − time ratio) / (1 − FLOPs ratio), as bench_training.py on CPU).
2. **The headline cells** of configs/reproduce/experiment.yaml (ImageNet MobileNetV2, the
   synthetic "dusk" set at 256x512, quantum 16, augmentation) at a larger budget than the 2-core
   `make reproduce`: more images and epochs, on paired seeds: baseline, ANS, DANCE at equal steps
   and at equal epochs with the paper-width heads of sweep-full.yaml (256/48/256), and baseline,
   ANS, DANCE at equal steps with the CPU protocol's narrow heads (64/16/64), which separates the
   budget's effect from the heads' width. The trials share the GPU as parallel processes (so
   they report no energy); each appends its reports to DIR/trials/<cell>.jsonl as they come, so a
   deadline leaves partial curves, never invented ones.
3. **The table**: mIoU mean ± sd per cell, the paired difference to its baseline with the 95 %
   interval and the report's verdict rule (orchestrator/report/stats.py, where importable), and
   the training FLOPs ratio. Written to DIR/summary.md as well.

Nothing is hard-coded: every figure is measured in the run that prints it.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EXPERIMENT = REPO / "configs" / "reproduce" / "experiment.yaml"
WIDE = ["model.options.aspp_channels=256", "model.options.low_level_channels=48",
        "model.options.decoder_channels=256"]          # sweep-full.yaml's paper-width heads
NARROW: list[str] = []                                  # experiment.yaml's own 64/16/64
BASELINE = ["ans.enabled=false", "slimming.cad=false", "slimming.casd=false", "slimming.cal=false"]
ANS_ONLY = ["slimming.cad=false", "slimming.casd=false", "slimming.cal=false"]
# cell -> (heads, arm overrides, the cell it is compared with)
CELLS: dict[str, tuple[list[str], list[str], str | None]] = {
    "wide baseline": (WIDE, BASELINE, None),
    "wide ANS": (WIDE, ANS_ONLY, "wide baseline"),
    "wide DANCE equal steps": (WIDE, [], "wide baseline"),
    "wide DANCE equal epochs": (WIDE, ["slimming.drop_budget=epochs"], "wide baseline"),
    "narrow baseline": (NARROW, BASELINE, None),
    "narrow ANS": (NARROW, ANS_ONLY, "narrow baseline"),
    "narrow DANCE equal steps": (NARROW, [], "narrow baseline"),
}


def slug(cell: str, seed: int) -> str:
    return cell.replace(" ", "-") + f"-s{seed}"


def experiment(data: Path, weights: Path, cache: Path, extra: list[str]):
    from orchestrator.config import load_config

    return load_config(EXPERIMENT, [f"data.root={data}", f"data.cache_dir={cache}",
                                    f"model.pretrained_backbone={weights}", "scaling.use_gpu=true",
                                    "scaling.num_workers=1", "tracking.enabled=false", *extra])


def _run_trial(wcfg: dict, stream: str, threads: int, device: str) -> None:
    """One trial in this (spawned) process; every report is appended to ``stream`` as it comes."""
    import torch

    torch.set_num_threads(threads)
    from workers.runtime import LocalRuntime
    from workers.train_loop import Trainer

    class Streaming(LocalRuntime):
        def report(self, metrics, checkpoint_dir, name=None):  # noqa: ANN001
            super().report(metrics, checkpoint_dir, name)
            with open(stream, "a") as f:
                f.write(json.dumps(metrics) + "\n")

    t0 = time.perf_counter()
    Trainer(wcfg, Streaming(device=device)).run()
    with open(stream, "a") as f:
        f.write(json.dumps({"done": True, "wall_s": time.perf_counter() - t0}) + "\n")


def read_stream(path: Path) -> tuple[list[dict], dict | None]:
    reports, done = [], None
    if path.is_file():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("done"):
                done = rec
            else:
                reports.append(rec)
    return reports, done


def run_jobs(jobs: list[tuple[str, dict]], trials: Path, parallel: int, deadline: float, threads: int,
             device: str) -> None:
    """Run (name, worker config) jobs, ``parallel`` at a time, until done or ``deadline`` (perf_counter)."""
    ctx = mp.get_context("spawn")
    pending, running = list(jobs), {}
    while pending or running:
        while pending and len(running) < parallel:
            name, wcfg = pending.pop(0)
            (trials / f"{name}.jsonl").unlink(missing_ok=True)  # a rerun's stream never mixes with an earlier one
            p = ctx.Process(target=_run_trial, args=(wcfg, str(trials / f"{name}.jsonl"), threads, device))
            p.start()
            running[name] = p
        for name, p in list(running.items()):
            if not p.is_alive():
                p.join()
                if p.exitcode != 0:
                    print(f"  {name}: exit {p.exitcode}", flush=True)
                del running[name]
        if time.perf_counter() > deadline:
            for name, p in running.items():
                print(f"  {name}: stopped at the deadline (its reports so far are kept)", flush=True)
                p.terminate()
            for p in running.values():
                p.join(5)
            for name, _ in pending:
                print(f"  {name}: not started (deadline)", flush=True)
            return
        time.sleep(0.5)


# --------------------------------------------------------------------------- part 1: alone on the GPU
ALONE = {"baseline fp32": (BASELINE, False), "baseline amp": (BASELINE, True), "DANCE amp": ([], True)}


def alone_name(name: str, loaders: int) -> str:
    return "alone-" + name.replace(" ", "-") + f"-lw{loaders}"


def part_alone(args, data: Path, cache: Path, deadline: float) -> None:
    from workers.prepare import worker_config

    jobs = []
    for name, (arm, amp) in ALONE.items():
        cfg = experiment(data, args.weights, cache, [*WIDE, *arm, "train.epochs=2", "train.eval_every=2",
                                                     f"train.loader_workers={args.loader_workers}",
                                                     "scaling.gpus_per_worker=1", f"scaling.amp={str(amp).lower()}"])
        jobs.append((alone_name(name, args.loader_workers), worker_config(cfg, score=True)))
    run_jobs(jobs, args.out / "trials", 1, deadline, args.threads, args.device)


def alone_table(out: Path) -> list[str]:
    got: dict[tuple[str, int], dict] = {}
    for name in ALONE:
        for path in sorted((out / "trials").glob(alone_name(name, 0)[:-1] + "*.jsonl")):
            reports, _ = read_stream(path)
            second = [r for r in reports if r.get("epoch") == 1]
            if second:
                got[name, int(path.stem.rsplit("-lw", 1)[1])] = second[-1]
    if not got:
        return ["(part 1 did not run)"]
    rows = ["| run (alone on the GPU, epoch 2 of 2) | loader workers | epoch s | images/s | energy J | train GFLOPs |",
            "|---|---|---|---|---|---|"]
    for (name, lw), r in sorted(got.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        e = r.get("energy_j")
        rows.append(f"| {name} | {lw} | {r['epoch_time_s']:.2f} | {r['images_per_s']:.1f} | "
                    f"{'absent' if e is None else f'{e:.0f}'} | {r['epoch_train_flops'] / 1e9:.0f} |")
    rows.append("")
    for lw in sorted({k[1] for k in got}):
        b32, b16, d16 = got.get(("baseline fp32", lw)), got.get(("baseline amp", lw)), got.get(("DANCE amp", lw))
        if b32 and b16:
            rows.append(f"- {lw} loader workers: AMP speed-up (baseline, epoch time) "
                        f"{b32['epoch_time_s'] / b16['epoch_time_s']:.2f}x")
        if b16 and d16:
            tr = d16["epoch_time_s"] / b16["epoch_time_s"]
            fr = d16["epoch_train_flops"] / b16["epoch_train_flops"]
            realised = f", realised {(1 - tr) / (1 - fr):.2f} of the FLOP saving" if fr < 1 else ""
            rows.append(f"- {lw} loader workers: DANCE / baseline in AMP: time {tr:.2f}x, "
                        f"counted FLOPs {fr:.2f}x{realised}")
    return rows


# --------------------------------------------------------------------------- part 2: the headline cells
def part_cells(args, data: Path, cache: Path, deadline: float) -> None:
    from workers.prepare import worker_config

    jobs = []
    for seed in args.seeds:
        for cell, (heads, arm, _) in CELLS.items():
            cfg = experiment(data, args.weights, cache, [*heads, *arm, f"seed={seed}", f"train.epochs={args.epochs}",
                                                         f"train.eval_every={args.eval_every}",
                                                         f"train.loader_workers={args.loader_workers}",
                                                         "scaling.gpus_per_worker=0.05"])
            jobs.append((slug(cell, seed), worker_config(cfg, score=True)))
    print(f"part 2: {len(jobs)} trials, {args.parallel} at a time", flush=True)
    run_jobs(jobs, args.out / "trials", args.parallel, deadline, args.threads, args.device)


def cells_table(out: Path, seeds: list[int]) -> list[str]:
    try:
        from orchestrator.report.stats import mean_sd, paired, verdict
    except Exception:  # noqa: BLE001 - a bare GPU node has no MLflow; --analyse prints these here
        mean_sd = paired = verdict = None
    final: dict[str, dict[int, dict]] = {}
    curves: dict[str, dict[int, list]] = {}
    for cell in CELLS:
        for s in seeds:
            reports, done = read_stream(out / "trials" / f"{slug(cell, s)}.jsonl")
            evals = [(r["epoch"] + 1, r["miou"]) for r in reports if r.get("miou") is not None]
            curves.setdefault(cell, {})[s] = evals
            if done and reports:
                final.setdefault(cell, {})[s] = reports[-1]
    rows = ["| cell | seeds done | mIoU % mean ± sd | − its baseline (points, paired) | verdict "
            "| train FLOPs vs baseline |",
            "|---|---|---|---|---|---|"]
    for cell, (_, _, base) in CELLS.items():
        got = final.get(cell, {})
        m = {s: 100 * r["miou"] for s, r in got.items()}
        if not m:
            rows.append(f"| {cell} | 0 | | | | |")
            continue
        if mean_sd is not None:
            mu, sd = mean_sd(list(m.values()))
        else:
            mu, sd = sum(m.values()) / len(m), None
        cellmsd = f"{mu:.2f}" + (f" ± {sd:.2f}" if sd is not None else "")
        diff = verd = fl = ""
        if base and final.get(base):
            bm = {s: 100 * r["miou"] for s, r in final[base].items()}
            if paired is not None:
                p = paired(m, bm)
                diff, verd = (p.text() if p else ""), verdict(p)
            common = sorted(set(got) & set(final[base]))
            if common:
                ratio = [got[s]["train_flops"] / final[base][s]["train_flops"] for s in common]
                fl = f"{sum(ratio) / len(ratio):.2f}x"
        rows.append(f"| {cell} | {len(m)} | {cellmsd} | {diff} | {verd} | {fl} |")
    rows.append("\nval mIoU % by epoch (mean over the seeds that reached it):")
    for cell, per_seed in curves.items():
        by_epoch: dict[int, list[float]] = {}
        for evals in per_seed.values():
            for e, v in evals:
                by_epoch.setdefault(e, []).append(100 * v)
        pts = ", ".join(f"{e}: {sum(v) / len(v):.1f}" for e, v in sorted(by_epoch.items()))
        rows.append(f"- {cell}: {pts or '(none)'}")
    return rows


def summary(out: Path, meta: dict) -> str:
    lines = ["# bench_gpu", "", "```", json.dumps(meta, indent=1), "```", "", "## Alone on the GPU", "",
             *alone_table(out), "", "## The headline cells", "", *cells_table(out, meta["seeds"])]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="folder for the data, the trials' streams and summary.md")
    ap.add_argument("--analyse", type=Path, help="print the tables from an earlier run's folder")
    ap.add_argument("--weights", type=Path, default=REPO / ".dance/weights/mobilenet_v2-b0353104.pth")
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--val", type=int, default=100)
    ap.add_argument("--size", default="256x512")
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--eval-every", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--parallel", type=int, default=21, help="trials sharing the GPU at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per trial process")
    ap.add_argument("--parts", default="alone,cells", help="alone, cells or both (comma-separated)")
    ap.add_argument("--loader-workers", type=int, default=0, help="train.loader_workers of every run")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of this script (no GPU figures)")
    ap.add_argument("--budget-s", type=float, default=520, help="wall-clock budget of the whole run")
    args = ap.parse_args()
    if args.analyse:
        meta = json.loads((args.analyse / "meta.json").read_text())
        print(summary(args.analyse, meta))
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        # `make bench` runs every script on the CPU machine too: say why nothing ran, and do not fail it.
        print("bench_gpu: skipped, no CUDA device here (it measures the GPU path; --device cpu is a smoke test)")
        return 0
    if args.out is None:
        import tempfile

        args.out = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    if not args.weights.is_file():
        print(f"bench_gpu: {args.weights}: no such file (make weights)")
        return 2
    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "trials").mkdir(exist_ok=True)
    h, w = (int(v) for v in args.size.split("x"))
    data, cache = args.out / "data", args.out / "cache"
    call = {"parts": args.parts, "loader_workers": args.loader_workers,
            "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else "none (cpu)",
            "torch": torch.__version__, "train": args.train, "val": args.val, "size": args.size,
            "epochs": args.epochs, "eval_every": args.eval_every, "seeds": args.seeds, "parallel": args.parallel}
    # One folder may hold several calls (say, the alone runs at two loader counts): each call's settings are kept.
    meta_path = args.out / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"calls": []}
    meta["seeds"] = args.seeds
    meta["calls"].append(call)
    if not (data / "synth.json").is_file():
        from workers.data.synth import generate_dataset

        t0 = time.perf_counter()
        generate_dataset(data, args.train, args.val, (h, w), seed=1, style="dusk")
        call["synth_s"] = round(time.perf_counter() - t0, 1)
        print(f"data: {args.train}+{args.val} images at {args.size} in {call['synth_s']} s", flush=True)
    parts = set(args.parts.split(","))
    if "alone" in parts:
        t0 = time.perf_counter()
        part_alone(args, data, cache, t_start + (0.25 if "cells" in parts else 1.0) * args.budget_s)
        call["part1_s"] = round(time.perf_counter() - t0, 1)
        print(f"part 1: {call['part1_s']} s", flush=True)
    if "cells" in parts:
        t0 = time.perf_counter()
        part_cells(args, data, cache, deadline)
        call["part2_s"] = round(time.perf_counter() - t0, 1)
    call["total_s"] = round(time.perf_counter() - t_start, 1)
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(summary(args.out, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
