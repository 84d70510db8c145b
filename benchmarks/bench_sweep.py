"""Issue 8 figures: the quickstart sweep's wall time and where it goes, sweep efficiency,
and the fixed cost per trial.

Runs the quickstart sweep (configs/sweeps/quickstart.yaml: 4 trials, 2 at a time, on a
fresh synthetic set of 64 + 16 images at 256×512) in a temporary folder with local Ray
and a sqlite MLflow store, then reads the runs back:

* split of the wall time: data generation, Eq. 1 scoring, Ray start, the Tune phase,
  the final ranking/registry; and per trial: start (split into Tune's trial actor — placement of
  the trial's bundle and its process —, the trial function, Ray Train's worker group — controller,
  placement group, worker processes, imports —, and the loop's set-up — dataset, model, restore),
  training, evaluation, FLOP counting, per-epoch reporting/checkpointing, the tail after
  the last report, MLflow logging;
* sweep efficiency = Tune phase ÷ (Σ trial time ÷ concurrency) (goal ≤ 1.2);
* fixed cost per trial = (start + tail + MLflow logging) ÷ trial time (goal ≤ 10 %).

With ``--load N`` instead: N tiny trials (1 epoch of 4 images at 32×64, random learning rates) at the
planned concurrency on local Ray, tracked in a real ``mlflow server`` (started here, stopped by its pid):
trials per minute, the fixed cost per trial (its MLflow run's wall time less training, evaluation and FLOP
counting; mean and p90), the MLflow calls per trial and the writer's time in them, the longest tracking
hook in Tune's loop, and how long ``dance runs`` takes on the finished sweep.

With ``--ab KEY=VALUE`` the chosen benchmark runs twice in one process, as configured and with that
override, and ends with the two runs' fixed costs side by side (``--set KEY=VALUE`` overrides both). A
KEY in capitals is an environment variable, set before that run's local Ray starts.

    python benchmarks/bench_sweep.py [--epochs N]
    python benchmarks/bench_sweep.py --load 50
    python benchmarks/bench_sweep.py --load 10 --ab sweep.reuse_trial_actors=true

``--train-floor`` measures what Ray Train itself costs a trial on this machine, nothing else running:
three empty ``TorchTrainer`` runs (one worker, a loop that only stamps the time) on local Ray, and the
last one's start split from the State API's task events: the controller's process and set-up, the worker
group's processes, the worker's train context, the backend, the loop's entry, and the tail to ``fit()``'s
return.

    python benchmarks/bench_sweep.py --train-floor
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, help="override train.epochs (default: the quickstart's)")
    ap.add_argument("--load", type=int, metavar="N", help="N tiny trials against a real MLflow server instead")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    ap.add_argument("--ab", metavar="KEY=VALUE", help="run twice: as configured, then with this override")
    ap.add_argument("--train-floor", action="store_true", help="what Ray Train costs an empty trial, by phase")
    args = ap.parse_args()
    if args.train_floor:
        return train_floor()
    variants = [("as configured", args.set)] + ([(args.ab, [*args.set, args.ab])] if args.ab else [])
    results = []
    for label, given in variants:
        if args.ab:
            print(f"\n===== {label} =====\n", flush=True)
        # an upper-case KEY is an environment variable (set before Ray starts: its workers inherit it)
        env = dict(kv.split("=", 1) for kv in given if kv.split("=", 1)[0].isupper())
        sets = [kv for kv in given if not kv.split("=", 1)[0].isupper()]
        with mock.patch.dict(os.environ, env):
            results.append((label, load(args.load, sets) if args.load else quickstart(args.epochs, sets)))
        if args.ab and len(results) < len(variants):
            _stop_ray()  # the next run starts its own local Ray, as a user's next sweep would
    if args.ab:
        print("\n===== side by side =====")
        for label, r in results:
            print(f"  {label:<40} {r}")
    return 0


def _stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def quickstart(epochs: int | None, extra: list[str]) -> str:
    """The quickstart sweep, with its split; returns its fixed-cost line."""
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
    sets = [f"data.root={work / 'data/synth'}", f"data.cache_dir={work / 'cache'}", *extra]
    if epochs:
        sets.append(f"train.epochs={epochs}")
    spec = load_sweep(ROOT / "configs" / "sweeps" / "quickstart.yaml", sets)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    t0 = time.perf_counter()
    out = run_sweep(spec, tracking_uri=uri, live=False, print_fn=None)
    t_sweep = time.perf_counter() - t0

    per_trial = _print_actors(len(out.rows))
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
        phases = {k: first(f"start_{k}_s") for k in ("trial", "workers", "setup", "first_step")}
        phases["actor"] = start - phases["trial"] - phases["workers"] - phases["setup"]
        trials.append(dict(trial=r["trial"], what=r["label"], dur=dur, start=start, tail=tail, train=train,
                           eval=ev, flops=fl, per_epoch=dur - start - tail - train - ev - fl, epochs=len(hist),
                           phases=phases))
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
    print("\nwhere a trial's start goes (s; workers.metrics.START_METRICS, the first report of each trial)")
    print("  trial             Tune actor  trial fn  Train workers  loop set-up  (first step, in train)")
    for t in trials:
        ph = t["phases"]
        print(f"  {t['what']:<16} {ph['actor']:11.1f} {ph['trial']:9.2f} {ph['workers']:14.1f} {ph['setup']:12.1f} "
              f"{ph['first_step']:10.2f}")
    sum_dur = sum(t["dur"] for t in trials)
    eff = tm["tune_s"] / (sum_dur / conc)
    fixed = [(t["start"] + t["tail"] + mlflow_per_trial) / t["dur"] for t in trials]
    print(f"\nsweep efficiency: Tune phase / (sum of trial times / concurrency) = {tm['tune_s']:.1f} / "
          f"({sum_dur:.1f} / {conc}) = {eff:.3f}  (goal <= 1.2)")
    line = (f"fixed cost per trial (start + tail + MLflow) / trial time: mean {100 * sum(fixed) / len(fixed):.1f} %, "
            f"max {100 * max(fixed):.1f} %; start mean {statistics.mean(t['start'] for t in trials):.1f} s; "
            f"{per_trial:.2f} Ray processes per trial")
    print(f"{line}  (goal <= 10 %)")
    print(f"\nrun folder: {work}")
    return line


NODE_DAEMONS = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")  # a node's own, not a sweep's


def _ray_helpers() -> list[tuple[str, int]]:
    """(title, RSS) of this machine's Ray actor processes (``ray::Name``), the node's own daemons and idle
    pooled workers left out."""
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline", "memory_info"]):
        title = " ".join(p.info["cmdline"] or [])
        if title.startswith("ray::") and not title.startswith(NODE_DAEMONS):
            out.append((title.split()[0], p.info["memory_info"].rss if p.info["memory_info"] else 0))
    return out


def _stamp_entry(config: dict) -> None:
    """The empty loop of ``--train-floor``: the time it was entered, in a file."""
    Path(config["stamp"]).write_text(repr(time.time()))


def train_floor(runs: int = 3) -> int:
    """``--train-floor``: empty Ray Train runs on local Ray, the last one's start by phase."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.state import list_tasks

    from orchestrator.training import TRAIN_POLL_ENV, TRAIN_POLL_S

    os.environ.setdefault(TRAIN_POLL_ENV, TRAIN_POLL_S)  # as a sweep's trials run
    work = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False)
    stamp = work / "entered"
    marks = []
    for i in range(runs):
        t0 = time.time()
        TorchTrainer(_stamp_entry, train_loop_config={"stamp": str(stamp)},
                     scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.99}),
                     run_config=RunConfig(name=f"floor-{i}", storage_path=str(work))).fit()
        marks.append((t0, float(stamp.read_text()), time.time()))
        print(f"run {i + 1}: fit() to the loop {marks[-1][1] - t0:5.2f} s, the loop to fit()'s return "
              f"{marks[-1][2] - marks[-1][1]:5.2f} s")
    t0, entered, end = marks[-1]
    time.sleep(3)  # task events reach the GCS in batches
    first: dict[tuple[str, str], float] = {}
    for task in list_tasks(address=ray.get_runtime_context().gcs_address, detail=True, limit=10000,
                           raise_on_missing_output=False):
        for ev in task.events or []:
            at = ev["created_ms"] / 1000
            if t0 <= at <= end + 0.5:
                key = (task.name, ev["state"])
                first[key] = min(first.get(key, at), at)

    def at(name: str, state: str = "") -> float:
        """When ``name`` reached ``state`` (s from fit()); without a state, its first event of any."""
        hits = [v for (n, st), v in first.items() if n == name and (st == state or not state)]
        return (min(hits) if hits else float("nan")) - t0

    split = [
        ("controller: its process, imports and set-up", at("TrainController.__init__"),
         at("TrainController.__init__", "FINISHED")),
        ("worker group: placement, worker process, helpers", at("TrainController.__init__", "FINISHED"),
         at("RayTrainWorker.__init__", "FINISHED")),
        ("worker: train context", at("RayTrainWorker.init_train_context", "RUNNING"),
         at("RayTrainWorker.init_train_context", "FINISHED")),
        ("backend (process group) and callbacks", at("RayTrainWorker.init_train_context", "FINISHED"),
         at("RayTrainWorker.run_train_fn")),
        ("the loop entered", at("RayTrainWorker.run_train_fn"), entered - t0),
        ("tail: the loop's end to fit()'s return", entered - t0, end - t0),
        ("  of it, stopping the placement-group cleaner", at("PlacementGroupCleaner.stop", "RUNNING"),
         at("PlacementGroupCleaner.stop", "FINISHED")),
    ]
    print(f"\nthe last run, by phase (s from fit(); {os.environ[TRAIN_POLL_ENV]} s poll):")
    for what, a, b in split:
        print(f"  {what:<52} {a:6.2f} -> {b:6.2f}  {b - a:5.2f} s")
    print("\n" + _actors_line(_actors_started(), runs, "run"))
    ray.shutdown()
    return 0


def _actors_line(counts: dict[str, int], n: int, per: str) -> str:
    """``counts`` of actors started, per ``per`` (``n`` of them), largest first."""
    return (f"Ray actors started per {per} (each a process): {sum(counts.values()) / n:.2f}  "
            + ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))


def _actors_started() -> dict[str, int]:
    """Ray actors this cluster has started, by class (the State API keeps dead actors' records): each one was
    a Python process that booted Ray and imported its class's modules."""
    from collections import Counter

    import ray
    from ray.util.state import list_actors

    actors = list_actors(address=ray.get_runtime_context().gcs_address, detail=True, limit=10000, timeout=30,
                         raise_on_missing_output=False)
    return dict(Counter(a.class_name for a in actors))


def _print_actors(trials: int) -> float:
    """The actors this (fresh) local Ray started, per trial; returns processes per trial."""
    counts = _actors_started()
    print(_actors_line(counts, trials, "trial"))
    return sum(counts.values()) / trials


def load(n: int, extra: list[str]) -> str:
    """``--load N``: the fixed cost of a trial when trials are tiny, at the planned concurrency; returns
    its figures in a line."""
    import mlflow

    from orchestrator.cli import main as dance
    from orchestrator.runs.schema import metric_history
    from orchestrator.sweep.runner import run_sweep
    from orchestrator.sweep.space import load_sweep
    from workers.data.synth import generate_dataset

    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    os.chdir(work)
    generate_dataset(work / "data", n_train=4, n_val=2, size=(32, 64), seed=0)
    cfg = work / "load.yaml"
    cfg.write_text(f"""
base: {ROOT / 'configs' / 'quickstart.yaml'}
name: load
data: {{root: {work / 'data'}, cache_dir: {work / 'cache'}}}
model: {{name: deeplabv3plus, variant: small}}
ans: {{enabled: false}}
train: {{epochs: 1, batch_size: 2, eval_batch_size: 2, size_quantum: 32, storage_path: {work / 'results'}}}
scaling: {{num_workers: 1, cpus_per_worker: 0.99}}
sweep:
  name: load-{n}
  space:
    optim.lr: {{loguniform: [1.0e-3, 3.0e-2]}}
  search: random
  num_samples: {n}
  scheduler: {{kind: none}}
  register_models: false
""")
    from tests.servers import mlflow_server  # started here, stopped by its own process group id

    with mlflow_server(work) as uri:
        t0 = time.perf_counter()
        out = run_sweep(load_sweep(cfg, extra), tracking_uri=uri, live=False, print_fn=None)
        wall = time.perf_counter() - t0
        per_trial = _print_actors(len(out.rows))
        client = mlflow.MlflowClient(uri)
        fixed, durs = [], []
        for r in out.rows:
            run = client.get_run(r["run_id"])
            if run.info.end_time is None:
                continue
            dur = (run.info.end_time - run.info.start_time) / 1000
            work_s = sum(sum(m.value for m in metric_history(client, r["run_id"], k))
                         for k in ("epoch_time_s", "eval_time_s", "flop_counting_s"))
            durs.append(dur)
            fixed.append(dur - work_s)
        t1 = time.perf_counter()
        assert dance(["runs", out.sweep_id, "--tracking-uri", uri, "--csv", str(work / "runs.csv")]) == 0
        runs_s = time.perf_counter() - t1
        time.sleep(max(0.0, 60 - (time.perf_counter() - t0 - wall)))  # a minute after the sweep ended
        left = _ray_helpers()
    tm = out.timings
    fixed.sort()
    p90 = fixed[min(len(fixed) - 1, int(round(0.9 * (len(fixed) - 1))))]
    print(f"load: {len(out.rows)} tiny trials (1 epoch, 4 images at 32x64), {int(tm['concurrency'])} at a time, "
          f"local Ray, a real mlflow server\n")
    print(f"sweep wall time                 {wall:8.1f} s  (Tune phase {tm['tune_s']:.1f} s)")
    print(f"trials per minute               {60 * len(out.rows) / tm['tune_s']:8.2f}")
    print(f"trial time (MLflow run)         mean {statistics.mean(durs):6.1f} s")
    print(f"fixed cost per trial            mean {statistics.mean(fixed):6.1f} s, p90 {p90:6.1f} s "
          f"({100 * statistics.mean(fixed) / statistics.mean(durs):.0f} % of a trial)")
    print(f"MLflow calls per trial          {tm['mlflow_calls'] / len(out.rows):8.1f}  "
          f"({1000 * tm['mlflow_s'] / max(tm['mlflow_calls'], 1):.1f} ms each on the writer's thread)")
    print(f"longest tracking hook in Tune's loop  {1000 * tm['tracking_hook_max_s']:.1f} ms")
    print(f"`dance runs` on the sweep       {runs_s:8.1f} s")
    print(f"Ray actor processes left 60 s after the sweep ended (Ray still up; the node's daemons not counted): "
          f"{len(left)} ({sum(rss for _, rss in left) / 2**20:.0f} MiB){': ' if left else ''}"
          f"{', '.join(sorted({name for name, _ in left}))}")
    print(f"\nrun folder: {work}")
    return (f"fixed cost per tiny trial mean {statistics.mean(fixed):.1f} s, p90 {p90:.1f} s; "
            f"{60 * len(out.rows) / tm['tune_s']:.2f} trials/min; {per_trial:.2f} Ray processes per trial")


if __name__ == "__main__":
    sys.exit(main())
