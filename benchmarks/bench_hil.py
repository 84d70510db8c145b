"""Hardware-in-the-loop figures: 3 emulated TX2 boards over real sshd on loopback.

1. The per-board cost model: models of four families at several widths are exported and
   measured (2 buckets each) on the boards, through the same ``run_bench`` a sweep uses;
   the cache they land in is the training data. Whole models are held out (30 %) and the
   error (MAPE) on them is printed per model family and figure, beside a FLOPs-only model
   (y = c · FLOPs, the paper's §2.2 proxy).
2. Sweep wall time: the same 8-trial sweep without ``hil``, with ``hil: {measure: all,
   wait: false}`` (fresh cache: every job runs), and with ``measure: predicted_front``
   (the cost model of part 1 already trained): wall time ratio (goal <= 1.1x) and the board
   jobs ``predicted_front`` saves against ``all``.

On this machine the "boards" run their agent on the same 2 cores as training, so
part 2's ratio includes contention a real board (its own CPU/GPU) would not add.

Run: ``flock /tmp/dance-heavy.lock .venv/bin/python benchmarks/bench_hil.py [--quick] [--cost-model-only]``
(about 10 minutes; part 1 alone about 2)
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "boards"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from bench_boards import add_boards  # noqa: E402  (the same emulated fleet as the board benchmark)
from sshd_helpers import keygen  # noqa: E402

from device_agents import emulate  # noqa: E402
from orchestrator.boards.inventory import Inventory, Measure  # noqa: E402

FAMILIES = {  # width options that change FLOPs and parameters, per family
    "deeplabv3plus": [{"backbone_width": w, "aspp_channels": a, "decoder_channels": a} for w in (8, 16, 24)
                      for a in (16, 32, 48)],
    "pspnet": [{"backbone_width": w, "ppm_channels": a // 2, "head_channels": a} for w in (8, 16, 24)
               for a in (16, 32, 48)],
    "bisenet": [{"backbone_width": w, "context_channels": a // 2, "head_channels": a} for w in (8, 16, 24)
                for a in (16, 32, 48)],
    "icnet": [{"backbone_width": w, "psp_channels": a, "fusion_channels": a} for w in (8, 16, 24)
              for a in (16, 32, 48)],
}
BUCKETS = "64x128:0.5,64x64:0.5"  # valid for all four families (bisenet, icnet: sides >= 64)
MEASURE = Measure(duration=0.4, repeats=2, idle=0.3, warmup=0.1, warmup_iters=2, min_samples=15, threads=1)


def cost_model(inv: Inventory, tmp: Path, cache: Path, quick: bool) -> None:
    import numpy as np

    from orchestrator.boards.bench import run_bench
    from orchestrator.boards.pool import BoardPool, LocalPoolClient
    from orchestrator.hil.costmodel import FEATURES, CostModel, mape, samples_from_cache, split_by_model
    from workers.checkpoint import save_checkpoint
    from workers.models import build_model

    print("== 1. cost model: held-out models (30 %) on 3 emulated TX2 boards, 2 buckets each")
    ckpts = []
    for fam, opts in FAMILIES.items():
        for i, o in enumerate(opts[:3] if quick else opts):
            p = tmp / "models" / f"{fam}-{i}.pt"
            p.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(p, build_model(fam, num_classes=5, variant="small", **o).eval())
            ckpts.append(p)
    pool = LocalPoolClient(BoardPool(inv, tmp / "cm-journal.sqlite"))
    uri = f"sqlite:///{tmp / 'cm-mlflow.db'}"
    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(len(inv.boards)) as ex:
            results = list(ex.map(lambda c: run_bench(str(c), inv, buckets=BUCKETS, tracking_uri=uri, cache_path=cache,
                                                      pool=pool, log=lambda s: None), ckpts))
    finally:
        pool.close()
    jobs = sum(r.jobs_run for r in results)
    print(f"   {len(ckpts)} models, {jobs} board jobs in {time.perf_counter() - t0:.0f} s")
    samples = samples_from_cache(cache)
    train, test = split_by_model(samples, held_out=0.3, seed=0)
    model = CostModel.fitted(train, min_points=8)
    err = mape(model, test)
    # the paper's proxy: energy (or latency) proportional to FLOPs, one constant fitted on the same data
    flops_err: dict[tuple[str, str], list[float]] = {}
    for t in ("energy_j_per_image", "latency_ms_p50"):
        ratios = [s.y[t] / s.x[FEATURES.index("flops")] for s in train if t in s.y]
        c = float(np.median(ratios))
        for s in test:
            if t in s.y:
                flops_err.setdefault((s.family, t), []).append(abs(c * s.x[0] - s.y[t]) / s.y[t])
    print(f"   {len(train)} training / {len(test)} held-out measurements")
    print(f"   {'family':<14} {'figure':<20} {'MAPE cost model':>16} {'MAPE c·FLOPs':>13} {'n':>4}")
    for (fam, t), (v, n) in sorted(err.items()):
        fe = 100 * float(np.mean(flops_err[(fam, t)]))
        print(f"   {fam:<14} {t:<20} {v:>15.1f}% {fe:>12.1f}% {n:>4}")


def sweep_yaml(tmp: Path, root: Path, boards: Path, name: str, hil: str | None) -> Path:
    f = tmp / f"{name}.yaml"
    f.write_text(f"""
name: bench-hil
data: {{root: {root}, cache_dir: {tmp / 'score-cache'}}}
model: {{name: deeplabv3plus, variant: small}}
ans: {{enabled: true, stages: 2, l1_lambda: 1.0e-3, min_gamma_spread: 1.0e-6}}
optim: {{lr: 0.02}}
train: {{epochs: 3, batch_size: 4, eval_batch_size: 8, size_quantum: 32, max_failures: 0,
        storage_path: {tmp / 'results'}}}
scaling: {{num_workers: 1, cpus_per_worker: 0.99}}
sweep:
  name: {name}
  space:
    ans.target_ratio: {{grid: [0.2, 0.4, 0.6, 0.8]}}
    slimming.cad: {{grid: [true, false]}}
  objectives: [{{metric: miou, mode: max}}, \
{{metric: {'device.energy_j_per_image' if hil else 'train_flops'}, mode: min}}]
  max_concurrent_trials: 2
  register_models: false
""" + (f"  hil: {hil}\n" if hil else ""))
    return f


def sweeps(inv: Inventory, tmp: Path, cache_warm: Path) -> None:
    import yaml

    from orchestrator.sweep.runner import run_sweep
    from orchestrator.sweep.space import load_sweep
    from workers.data.synth import generate_dataset

    print("== 2. sweep wall time, 8 trials x 3 epochs (48 train / 8 val images at 64x128), 2 trials at a time")
    root = tmp / "synth"
    generate_dataset(root, n_train=48, n_val=8, size=(64, 128), seed=5)
    boards = tmp / "boards.yaml"
    boards.write_text(yaml.safe_dump(inv.model_dump(mode="json")))
    uri = f"sqlite:///{tmp / 'sweep-mlflow.db'}"
    fresh, warm = tmp / "fresh-cache.sqlite", tmp / "warm-cache.sqlite"
    shutil.copyfile(cache_warm, warm)
    common = f"boards: {boards}, labels: [tx2], wait: false, buckets: '{BUCKETS}', train_steps: 1"
    runs = [("none", None), ("all", f"{{{common}, measure: all, cache: {fresh}}}"),
            ("predicted_front", f"{{{common}, measure: predicted_front, cache: {warm}}}")]
    # warm-up: Ray start, the Eq. 1 score cache and imports are paid here, not by the first timed run
    run_sweep(load_sweep(sweep_yaml(tmp, root, boards, "bench-warmup", None),
                         ["train.epochs=1", "sweep.space={ans.target_ratio: {grid: [0.5]}}"]),
              tracking_uri=uri, live=False, print_fn=None)
    out = {}
    for label, hil in runs:
        spec = load_sweep(sweep_yaml(tmp, root, boards, f"bench-{label}", hil))
        t0 = time.perf_counter()
        o = run_sweep(spec, tracking_uri=uri, live=False, print_fn=None)
        # the sweep's own phases: training, then waiting for the boards (Ray start and scoring excluded)
        out[label] = (o.timings["tune_s"] + o.timings.get("hil_wait_s", 0.0), o)
        h = o.hil
        print(f"   {label:<16} train+wait {out[label][0]:6.1f} s, wall {time.perf_counter() - t0:6.1f} s "
              f"(training {o.timings['tune_s']:.1f} s, waiting for boards "
              f"after training {o.timings.get('hil_wait_s', 0.0):.1f} s); trials measured {h.get('measured', '-')}, "
              f"skipped {h.get('skipped', '-')}, board jobs {h.get('jobs_run', '-')}")
    base, all_, pf = out["none"][0], out["all"][0], out["predicted_front"][0]
    print(f"   sweep time (training + waiting for boards) with hil (all) / without: {all_ / base:.2f}x (goal <= 1.1x); "
          f"predicted_front / without: {pf / base:.2f}x")
    ja, jp = out["all"][1].hil.get("jobs_run", 0), out["predicted_front"][1].hil.get("jobs_run", 0)
    print(f"   board jobs: all {ja}, predicted_front {jp}: saves {ja - jp} ({100 * (ja - jp) / max(ja, 1):.0f} %)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3 models per family")
    ap.add_argument("--cost-model-only", action="store_true", help="part 1 only (about 2 minutes)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-hil-"))
    shm = Path(tempfile.mkdtemp(prefix="bench-hil-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))
    os.chdir(tmp)  # .dance/ (exports, journals) goes here
    key, kh = keygen(tmp / "id_ed25519"), tmp / "known_hosts"
    sshds, writers = [], []
    try:
        inv = Inventory(known_hosts=kh, measure=MEASURE, boards=add_boards(3, tmp, shm, key, kh, sshds, writers),
                        source="bench fleet")
        print(f"loopback, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
        cache = tmp / "cm-cache.sqlite"
        cost_model(inv, tmp, cache, args.quick)
        if not args.cost_model_only:
            sweeps(inv, tmp, cache)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        for s in sshds:
            s.stop()
        for w in writers:
            emulate.stop_writer(w)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)


if __name__ == "__main__":
    main()
