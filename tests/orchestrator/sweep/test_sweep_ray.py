"""Small sweeps end to end on a local Ray instance, read back from MLflow with ``MlflowClient``.

One Ray instance for the module (2 CPUs) and one sqlite MLflow store. The first sweep has
two trials one after the other: full data slimming first, then the same without it, with
ASHA on training FLOPs (deterministic, unlike mIoU on a 12-image set): the second trial is
costlier at the first rung and must be stopped there, ending KILLED. The second sweep has
two trials that fault once: one whose worker dies (retried by Tune from its checkpoint, FINISHED) and one
whose code raises (not retried, FAILED with its error).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from orchestrator.cli import main  # noqa: E402
from orchestrator.runs.schema import metric_history, plain_metrics  # noqa: E402
from orchestrator.sweep.runner import run_sweep  # noqa: E402
from orchestrator.sweep.space import load_sweep  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.ray]  # starts Ray (and servers): `make test`, not `make test-fast`

EPOCHS = 3


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from workers.data.synth import generate_dataset

    tmp = tmp_path_factory.mktemp("sweep_ray")
    root = tmp / "synth"
    generate_dataset(root, n_train=12, n_val=4, size=(64, 128), seed=2)
    trace = tmp / "scoring.trace"
    mp = pytest.MonkeyPatch()
    mp.setenv("DANCE_SCORING_TRACE", str(trace))  # before ray.init: the local workers inherit it
    mp.delenv("RAY_ADDRESS", raising=False)
    # With its dashboard, as `dance sweep` starts Ray: Ray Train needs the State API to free stopped trials' CPUs.
    ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False)
    try:
        yield tmp, root, trace, f"sqlite:///{tmp / 'mlflow.db'}"
    finally:
        ray.shutdown()
        mp.undo()


def base_yaml(tmp: Path, root: Path, name: str) -> str:
    return f"""
name: {name}
data: {{root: {root}, cache_dir: {tmp / 'cache'}}}
model: {{name: deeplabv3plus, variant: small}}
slimming: {{casd_range: {{lo: 0.0, hi: 0.6}}}}
ans: {{enabled: true, stages: 2, target_ratio: 0.5, l1_lambda: 1.0e-3, min_gamma_spread: 1.0e-6}}
optim: {{lr: 0.02}}
train: {{epochs: {EPOCHS}, batch_size: 2, eval_batch_size: 4, size_quantum: 32, max_failures: 0,
        storage_path: {tmp / 'results'}}}
scaling: {{num_workers: 1, cpus_per_worker: 0.99}}
"""


@pytest.fixture(scope="module")
def asha_sweep(env):
    tmp, root, trace, uri = env
    cfg = tmp / "asha.yaml"
    cfg.write_text(base_yaml(tmp, root, "sweep-asha") + """
sweep:
  space:
    slimming: {grid: [{cad: true, casd: true, cal: true}, {cad: false, casd: false, cal: false}]}
  objectives: [{metric: miou, mode: max}, {metric: train_flops, mode: min}]
  scheduler: {kind: asha, metric: train_flops, mode: min, grace_period: 1, reduction_factor: 2}
  max_concurrent_trials: 1
  reuse_trial_actors: true
""")
    out = run_sweep(load_sweep(cfg), tracking_uri=uri, live=False, print_fn=None)
    return out, cfg


def children(client, out):
    exp = client.get_experiment_by_name(out.experiment)
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`dance.sweep_id` = '{out.sweep_id}' "
                                                                 "and tags.`dance.kind` = 'trial'")
    return sorted(runs, key=lambda r: r.data.tags["dance.trial_id"])


@pytest.mark.timeout(400)
def test_sweep_logs_parent_children_metrics_artifacts_and_asha_kills(env, asha_sweep):
    import mlflow

    tmp, root, trace, uri = env
    out, _ = asha_sweep
    client = mlflow.MlflowClient(uri)
    parent = client.get_run(out.parent_run_id)
    assert parent.data.tags["dance.kind"] == "sweep" and parent.info.status == "FINISHED"
    # The stopped trial's worker group was given back: nothing waits for CPUs after a sweep.
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) == 2
    # sweep.reuse_trial_actors (on in this sweep): the second trial's driver ran in the first one's Tune actor. Tune
    # stamps every result with the pid of the process that reported it (the trial's driver); read from Tune's
    # own result files, not the State API, whose answers on a busy machine were incomplete in CI.
    import json

    results = list((tmp / "results" / out.sweep_id).glob("*/result.json"))
    pids = {json.loads(line)["pid"] for f in results for line in f.read_text().splitlines() if line.strip()}
    assert len(results) == 2 and len(pids) == 1, pids
    assert client.get_experiment(parent.info.experiment_id).name == "sweep-asha"  # one experiment per config name
    kids = children(client, out)
    assert len(kids) == 2
    dance_run, base_run = kids  # grid order: slimming on, then off
    for r in kids:
        assert r.data.tags["mlflow.parentRunId"] == out.parent_run_id
        assert r.data.params["ans.stages"] == "2" and r.data.params["model.variant"] == "small"
        assert len(r.data.params) > 50  # the whole resolved config, flattened
        assert r.data.tags["dance.model"] == "deeplabv3plus/small"
        assert "pareto_rank" in r.data.metrics and "is_pareto" in r.data.metrics
    assert dance_run.data.tags["dance.components"] == "ANS+CAD+CASD+CAL"
    assert base_run.data.tags["dance.components"] == "ANS"

    # The first trial trains every epoch, step by step under `dance train`'s names, and is the front.
    assert dance_run.info.status == "FINISHED"
    miou = metric_history(client, dance_run.info.run_id, "miou")
    assert sorted(m.step for m in miou) == list(range(EPOCHS))
    flops = [m.value for m in sorted(metric_history(client, dance_run.info.run_id, "train_flops"),
                                     key=lambda m: m.step)]
    assert flops == sorted(flops) and flops[0] > 0
    assert dance_run.data.metrics["is_pareto"] == 1 and dance_run.data.metrics["pareto_rank"] == 1
    paths = {f.path for f in client.list_artifacts(dance_run.info.run_id)}
    assert {"config.yaml", "history.json", "pruning_report.png", "checkpoint"} <= paths
    assert "checkpoint/model.pt" in {f.path for f in client.list_artifacts(dance_run.info.run_id, "checkpoint")}
    assert dance_run.data.params["cdf.loc"] == base_run.data.params.get("cdf.loc", dance_run.data.params["cdf.loc"])

    # ASHA stopped the costlier trial at its first rung: KILLED, with the reason, ranked after the front.
    assert base_run.info.status == "KILLED"
    assert "stopped by the scheduler after epoch 1 of 3" in base_run.data.tags["dance.stop_reason"]
    assert len(metric_history(client, base_run.info.run_id, "epoch")) == 1
    assert base_run.data.metrics["is_pareto"] == 0 and base_run.data.metrics["pareto_rank"] == 2

    # The parent holds the front.
    ppaths = {f.path for f in client.list_artifacts(out.parent_run_id)}
    assert {"pareto.csv", "pareto.png", "pareto.html"} <= ppaths
    assert parent.data.metrics["pareto_size"] == 1 and parent.data.metrics["trials"] == 2
    assert 0 < parent.data.metrics["hypervolume"] <= 1
    assert parent.data.tags["dance.best.miou"].startswith(dance_run.data.tags["dance.trial_id"])
    versions = client.search_model_versions("name='sweep-asha-pareto'")
    assert [v.run_id for v in versions] == [dance_run.info.run_id]
    assert versions[0].tags["objective.miou"] == str(plain_metrics(dance_run.data.metrics)["miou"])

    # Scored once, on the driver (this process): train and val, never in a trial.
    lines = trace.read_text().split("\n")
    pids = {ln.split()[0] for ln in lines if ln}
    assert pids == {str(os.getpid())} and len([ln for ln in lines if ln]) == 2


def test_dance_runs_shows_the_sweep(env, asha_sweep, capsys, tmp_path):
    tmp, root, trace, uri = env
    out, _ = asha_sweep
    csv = tmp_path / "runs.csv"
    assert main(["runs", out.parent_run_id, "--tracking-uri", uri, "--csv", str(csv), "--sort", "miou"]) == 0
    text = capsys.readouterr().out
    assert "★" in text and "KILLED" in text and "slimming.cad" in text
    rows = csv.read_text().splitlines()
    assert rows[0].startswith("pareto,run,status,components") and len(rows) == 3
    assert main(["runs", "no-such-experiment", "--tracking-uri", uri]) == 2


@pytest.mark.timeout(300)
def test_a_lost_trial_is_retried_and_a_buggy_one_fails_with_its_error(env, capsys):
    """Two trials, each faulting once at epoch 1 (a marker file each: the fault never fires twice). One worker
    dies (what a lost node looks like to Train): Tune starts the trial again and it resumes from its epoch-0
    checkpoint, so every epoch is in MLflow once. The other raises (a bug): not retried (a retry would pass, the
    marker being there), FAILED with its error, no Pareto rank."""
    import mlflow

    tmp, root, trace, uri = env
    cfg = tmp / "fail.yaml"
    lost, bug = tmp / "lost.marker", tmp / "bug.marker"
    cfg.write_text(base_yaml(tmp, root, "sweep-fail") + f"""
sweep:
  space:
    train.fault_injection:
      grid:
        - {{epoch: 1, kind: exit, marker: {lost}, delay_s: 3}}
        - {{epoch: 1, kind: raise, marker: {bug}, delay_s: 0}}
  max_failures: 1
""")
    assert main(["sweep", str(cfg), "--tracking-uri", uri, "--plain"]) == 0  # one trial finished
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("sweep-fail")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`dance.kind` = 'trial'")
    assert len(runs) == 2 and lost.exists() and bug.exists()
    by_kind = {r.data.params["train.fault_injection.kind"]: r for r in runs}
    retried, failed = by_kind["exit"], by_kind["raise"]
    assert retried.info.status == "FINISHED", retried.data.tags
    steps = sorted(m.step for m in metric_history(client, retried.info.run_id, "epoch"))
    assert steps == list(range(EPOCHS)), steps  # resumed from its checkpoint: no epoch twice, none missing
    assert failed.info.status == "FAILED"
    assert "own code" in failed.data.tags["dance.error"] and "raised at epoch 1" in failed.data.tags["dance.error"]
    # a trial that failed of its own error is not ranked
    assert "pareto_rank" not in failed.data.metrics and failed.data.metrics["is_pareto"] == 0
    assert "1 trial(s) failed" in capsys.readouterr().err


@pytest.mark.timeout(420)
def test_the_mlflow_ui_answers_which_trial_is_best_and_why(env, asha_sweep, tmp_path):
    """A real `mlflow server` (started as `dance ui` starts it) over the sweep's store, driven by headless
    Chromium: the link `dance ui` prints opens the runs table on the sweep (its row and its trials),
    the parent's page shows the front in its description, pareto.html draws its figure in MLflow's artifact
    view, and the front's registered versions load as MLflow Models that segment an image. Screenshots:
    tmp_path/*.png."""
    import mlflow
    import numpy as np
    from PIL import Image
    from ui_helpers import artifact_frame_draws, browser, have_browser, page_text

    from orchestrator.processes import free_port
    from orchestrator.runs.ui import find_sweep_link, start_ui, stop_ui

    if not have_browser():
        pytest.fail("Debian's chromium and chromium-driver are needed (.ci/run installs them)")
    tmp, root, trace, uri = env
    out, _ = asha_sweep
    client = mlflow.MlflowClient(uri)
    parent = client.get_run(out.parent_run_id)
    kids = children(client, out)
    exp_id = parent.info.experiment_id
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
    # names that say what was swept, the same param keys on every trial, the front as tags
    assert [k.info.run_name for k in kids] == ["00000 ANS+CAD+CASD+CAL", "00001 ANS"]
    assert {k.data.params["_swept.slimming"] for k in kids} == {"cad=True,cal=True,casd=True",
                                                               "cad=False,cal=False,casd=False"}
    assert len({frozenset(k.data.params) for k in kids}) == 1
    assert {k.data.tags["is_pareto"] for k in kids} <= {"true", "false"}
    # metrics grouped for the UI's chart sections, what a trial reached and cost first
    assert all(k.data.metrics["cost/train_tflops"] == pytest.approx(k.data.metrics["cost/train_flops"] / 1e12)
               for k in kids)
    assert {"accuracy/miou", "train/epoch_index", "diag/batch_fill"} <= set(kids[0].data.metrics)
    # MLflow's compare view plots the first metric logged (and the first params that differ, sorted)
    assert [list(k.data.metrics)[0] for k in kids] == ["accuracy/miou"] * 2
    assert min(kids[0].data.params).startswith("_swept.")
    note = parent.data.tags["mlflow.note.content"]
    assert "| rank | trial |" in note and "00000 ANS+CAD+CASD+CAL" in note
    # the front's registered versions are MLflow Models: load one and segment a real image of the set
    version = client.search_model_versions("name='sweep-asha-pareto'")[0]
    served = mlflow.pyfunc.load_model(f"models:/sweep-asha-pareto/{version.version}")
    img = np.asarray(Image.open(next(root.rglob("*leftImg8bit.png"))).convert("RGB"))
    pred = served.predict(img)
    assert pred.shape == img.shape[:2] and pred.dtype == np.int64 and 0 <= pred.min() and pred.max() < 19
    assert served.metadata.signature is not None and "trial" in version.description
    trial_run = client.get_run(version.run_id).info  # registering after the sweep leaves the trial's own end
    assert trial_run.status == "FINISHED" and trial_run.end_time < version.creation_timestamp

    port = free_port()
    t_start = time.monotonic()
    proc = start_ui(uri, port, tmp_path / "ui.log")
    driver = browser()
    try:
        base = f"http://127.0.0.1:{port}"
        link = find_sweep_link(uri, out.sweep_id)
        page_text(driver, link.runs(base), ["Training runs", parent.info.run_name, "3 matching runs"],
                  timeout=120, shot=tmp_path / "runs_table.png")
        print(f"runs table rendered {time.monotonic() - t_start:.1f} s after `dance ui` started")
        page_text(driver, link.parent(base), ["00000 ANS+CAD+CASD+CAL", "rank", "train TFLOPs"],
                  shot=tmp_path / "parent_run.png")
        # pareto.html draws its figure with its own JavaScript, from a file, nothing fetched from elsewhere
        html = client.download_artifacts(out.parent_run_id, "pareto.html", str(tmp_path))
        assert '<script src="http' not in Path(html).read_text()
        # in MLflow's own artifact view, a frame (blob: URL) where the file's inline JavaScript draws the points
        assert artifact_frame_draws(driver, link.parent(base), "pareto.html", ".main-svg .scatterlayer .point"), \
            "pareto.html drew no figure in MLflow's artifact view"
        driver.save_screenshot(str(tmp_path / "pareto_html.png"))
    finally:
        driver.quit()
        stop_ui(proc)
