"""Issue 8 figures: the quickstart sweep's wall time and where it goes, sweep efficiency,
and the fixed cost per trial.

Runs the quickstart sweep (configs/sweeps/quickstart.yaml: 4 trials, 2 at a time, on a
fresh synthetic set of 64 + 16 images at 256×512) in a temporary folder with local Ray
and a sqlite MLflow store, then reads the runs back:

* split of the wall time: data generation, Eq. 1 scoring, Ray start, the Tune phase,
  the final ranking/registry; and per trial: start (worker group, model, first report),
  training, evaluation, FLOP counting, per-epoch reporting/checkpointing, the tail after
  the last report, MLflow logging;
* sweep efficiency = Tune phase ÷ (Σ trial time ÷ concurrency) (goal ≤ 1.2);
* fixed cost per trial = (start + tail + MLflow logging) ÷ trial time (goal ≤ 10 %).

    python benchmarks/bench_sweep.py [--epochs N]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, help="override train.epochs (default: the quickstart's)")
    args = ap.parse_args()

    import mlflow

    from orchestrator.runs.schema import metric_history
    from orchestrator.sweep.runner import run_sweep
    from orchestrator.sweep.space import load_sweep
    from workers.data.synth import generate_dataset

    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    os.chdir(work)
    t0 = time.perf_counter()
    generate_dataset(work / "data/synth", n_train=64, n_val=16, size=(256, 512), seed=0)
    t_gen = time.perf_counter() - t0
    sets = [f"data.root={work / 'data/synth'}", f"data.cache_dir={work / 'cache'}"]
    if args.epochs:
        sets.append(f"train.epochs={args.epochs}")
    spec = load_sweep(ROOT / "configs" / "sweeps" / "quickstart.yaml", sets)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    t0 = time.perf_counter()
    out = run_sweep(spec, tracking_uri=uri, live=False, print_fn=None)
    t_sweep = time.perf_counter() - t0

    client = mlflow.MlflowClient(uri)
    tm = out.timings
    conc = int(tm["concurrency"])
    trials = []
    for r in out.rows:
        run = client.get_run(r["run_id"])
        hist = sorted(metric_history(client, r["run_id"], "epoch"), key=lambda m: m.timestamp)
        def total(key):
            return sum(m.value for m in metric_history(client, r["run_id"], key))

        def first(key):
            h = sorted(metric_history(client, r["run_id"], key), key=lambda m: m.step)
            return h[0].value if h else 0.0
        dur = (run.info.end_time - run.info.start_time) / 1000
        first_report = (hist[0].timestamp - run.info.start_time) / 1000
        start = first_report - first("epoch_time_s") - first("eval_time_s") - first("flop_counting_s")
        tail = (run.info.end_time - hist[-1].timestamp) / 1000
        train, ev, fl = total("epoch_time_s"), total("eval_time_s"), total("flop_counting_s")
        trials.append(dict(trial=r["trial"], what=r["label"], dur=dur, start=start, tail=tail, train=train,
                           eval=ev, flops=fl, per_epoch=dur - start - tail - train - ev - fl, epochs=len(hist)))
    mlflow_per_trial = tm["mlflow_s"] / max(len(trials), 1)
    print(f"quickstart sweep: {len(trials)} trials, {conc} at a time, {trials[0]['epochs']} epochs each\n")
    print(f"wall time (data generation + sweep)      {t_gen + t_sweep:7.1f} s")
    print(f"  synthetic data generation              {t_gen:7.1f} s")
    print(f"  Eq. 1 scoring + CDF fit (once)         {tm['scoring_s']:7.1f} s")
    print(f"  Ray start                              {tm['ray_start_s']:7.1f} s")
    print(f"  Tune phase (all trials)                {tm['tune_s']:7.1f} s")
    print(f"  Pareto, plots, registry                {tm['finalize_s']:7.1f} s")
    print(f"  other (imports, MLflow setup)          "
          f"{t_sweep - tm['scoring_s'] - tm['ray_start_s'] - tm['tune_s'] - tm['finalize_s']:7.1f} s")
    print("\nper trial (s)      time   start  train   eval  flop-count  report/ckpt  tail  mlflow")
    for t in trials:
        print(f"  {t['what']:<16} {t['dur']:6.1f} {t['start']:6.1f} {t['train']:6.1f} {t['eval']:6.1f} "
              f"{t['flops']:10.1f} {t['per_epoch']:12.1f} {t['tail']:5.1f} {mlflow_per_trial:7.2f}")
    sum_dur = sum(t["dur"] for t in trials)
    eff = tm["tune_s"] / (sum_dur / conc)
    fixed = [(t["start"] + t["tail"] + mlflow_per_trial) / t["dur"] for t in trials]
    print(f"\nsweep efficiency: Tune phase / (sum of trial times / concurrency) = {tm['tune_s']:.1f} / "
          f"({sum_dur:.1f} / {conc}) = {eff:.3f}  (goal <= 1.2)")
    print(f"fixed cost per trial (start + tail + MLflow) / trial time: mean {100 * sum(fixed) / len(fixed):.1f} %, "
          f"max {100 * max(fixed):.1f} %  (goal <= 10 %)")
    print(f"\nrun folder: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
