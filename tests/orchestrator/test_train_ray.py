"""Real multi-worker runs on Ray Train (2 CPU workers): metrics, DDP pruning, eval, resume.

One Ray instance for the module. Two short runs of the same config with every DANCE
component on: an uninterrupted one (with per-rank checksum probes), and one where rank 1
kills its own process at the start of epoch 1; Ray Train restarts the worker group from
the epoch-0 checkpoint and the run must end with the same architecture (and, on this
deterministic CPU path, the same weights). The resume test is marked slow (run it with
``-m slow``); tests/workers/test_train_ablations.py covers resume without Ray in the fast suite.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from orchestrator.cli import main  # noqa: E402
from orchestrator.config import load_config  # noqa: E402
from orchestrator.runs.schema import metric_history  # noqa: E402
from workers.train_loop import METRIC_NAMES  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.ray]  # starts Ray (and servers): `make test`, not `make test-fast`

EPOCHS = 3


def _overrides(root: Path, tmp: Path) -> list[str]:
    return [
        f"data.root={root}", f"data.cache_dir={tmp / 'cache'}",
        "model.variant=small",
        "slimming.cad=true", "slimming.casd=true", "slimming.cal=true",
        "slimming.casd_range={lo: 0.0, hi: 0.6}",         # keep enough images per epoch on a 24-image set
        "ans.enabled=true", "ans.stages=2", "ans.target_ratio=0.5", "ans.l1_lambda=1e-3",
        "ans.min_gamma_spread=1e-6",
        "optim.lr=0.02", f"train.epochs={EPOCHS}", "train.batch_size=2", "train.eval_batch_size=4",
        "train.max_failures=2", f"train.storage_path={tmp / 'ray_results'}",
        "scaling.num_workers=2", "scaling.cpus_per_worker=0.5",
        "tracking.experiment=test-train",
    ]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from workers.data.synth import generate_dataset

    tmp = tmp_path_factory.mktemp("train_ray")
    root = tmp / "synth"
    generate_dataset(root, n_train=32, n_val=6, size=(64, 128), seed=1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield tmp, root
    finally:
        ray.shutdown()


def _run(env, name: str, extra: list[str] = (), probe: bool = False):
    from orchestrator.training import run_training

    tmp, root = env
    cfg = load_config(None, _overrides(root, tmp) + list(extra))
    probe_dir = tmp / f"probe-{name}"
    out = run_training(cfg, tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", run_name=name, progress=False,
                       print_fn=None, worker_extra={"probe_dir": str(probe_dir)} if probe else None)
    return out, probe_dir


@pytest.fixture(scope="module")
def full_run(env):
    return _run(env, "full", probe=True)


@pytest.fixture(scope="module")
def faulty_run(env, full_run):
    tmp, _ = env
    marker = tmp / "fault.marker"
    out, probe = _run(env, "faulty", [f"train.fault_injection={{epoch: 1, rank: 1, step: 0, marker: '{marker}'}}"],
                      probe=True)
    return out, probe, marker


def _probe(probe_dir: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (probe_dir / f"rank{rank}.jsonl").read_text().splitlines()]


def test_two_workers_report_every_metric(full_run, env):
    out, _ = full_run
    assert [m["epoch"] for m in out.history] == list(range(EPOCHS))
    for m in out.history:
        for k in METRIC_NAMES:
            assert k in m, k
        assert "energy_j" not in m  # no NVML on a CPU run: absent, never 0
        assert 0 <= m["miou"] <= 1 and m["images_per_s"] > 0 and m["epoch_time_s"] > 0
    flops = [m["train_flops"] for m in out.history]
    assert all(b > a for a, b in zip(flops, flops[1:]))
    assert out.history[-1]["header_channels_kept"] == pytest.approx(0.5, abs=0.02)
    # Algorithm 1: pruned after epoch 0
    assert out.history[0]["header_channels_kept"] == pytest.approx(0.5 ** 0.5, abs=0.02)
    assert out.history[-1]["infer_flops_per_image"] < out.history[0]["infer_flops_per_image"]
    assert out.checkpoint_file is not None and out.checkpoint_file.is_file()

    import mlflow

    tmp, _ = env
    client = mlflow.MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    run = client.get_run(out.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["slimming.cad"] == "True" and run.data.params["ans.stages"] == "2"
    assert len(metric_history(client, run.info.run_id, "miou")) == EPOCHS
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoint", "config.yaml", "history.json", "pruning_report.png"} <= arts
    assert "checkpoint/model.pt" in {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}


def test_ranks_hold_identical_parameters_after_every_prune(full_run):
    _, probe = full_run
    r0, r1 = _probe(probe, 0), _probe(probe, 1)
    assert [(e["event"], e["stage"]) for e in r0] == [(e["event"], e["stage"]) for e in r1]
    prunes = [(a, b) for a, b in zip(r0, r1) if a["event"] == "prune"]
    assert [a["stage"] for a, _ in prunes] == [1, 2]
    for a, b in prunes:
        assert a["params"] == b["params"], f"ranks differ after stage {a['stage']}"
    channels = [a["header_channels"] for a, _ in prunes]
    assert channels[0] > channels[1]  # the header really shrank, stage after stage
    for a, b in zip(r0, r1):
        if a["event"] == "epoch_end":
            assert a["all"] == b["all"] and a["structure"] == b["structure"]


def test_checkpoint_loads_in_dance_eval(full_run, capsys):
    out, _ = full_run
    assert main(["eval", str(out.checkpoint_dir), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["adaptive_resolution"] is True
    assert res["miou"] == pytest.approx(out.history[-1]["miou"], abs=1e-9)
    assert res["infer_flops_per_image"] == pytest.approx(out.history[-1]["infer_flops_per_image"])


@pytest.mark.slow  # a second Ray run plus a worker-group restart: ~50 s more on 2 cores
def test_killed_worker_resumes_with_same_architecture(full_run, faulty_run):
    out_full, probe_full = full_run
    out, probe, marker = faulty_run
    assert marker.is_file(), "the fault was never injected"
    assert [m["epoch"] for m in out.history] == list(range(EPOCHS))
    ranks = _probe(probe, 1)
    assert sum(1 for e in ranks if e["event"] == "epoch_end" and e["epoch"] == 0) == 1
    # the restarted group resumed after epoch 0 instead of starting over
    assert ranks[-1]["epoch"] == EPOCHS - 1 and not any(e["epoch"] == 0 for e in ranks[ranks.index(
        next(e for e in ranks if e["event"] == "epoch_end" and e["epoch"] == 0)) + 1:])
    end_full = [e for e in _probe(probe_full, 0) if e["event"] == "epoch_end"][-1]
    end = [e for e in _probe(probe, 0) if e["event"] == "epoch_end"][-1]
    assert end["structure"] == end_full["structure"]
    assert end["stage"] == end_full["stage"] == 2
    assert end["all"] == end_full["all"]  # CPU + gloo is deterministic: bit-identical weights
    assert out.history[-1]["train_flops"] == pytest.approx(out_full.history[-1]["train_flops"])


def test_corrupt_image_mid_training_is_one_clear_error(env, tmp_path, capsys):
    """A file that breaks only when a worker decodes it: the run fails with the file's name, no traceback."""
    import shutil

    tmp, root = env
    broken = tmp_path / "synth"
    shutil.copytree(root, broken)
    victim = sorted((broken / "leftImg8bit" / "train").rglob("*.png"))[3]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated PNG: header fine, pixels gone
    args = ["train", str(Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml")]
    for o in _overrides(broken, tmp_path) + ["slimming.cad=false", "slimming.casd=false", "slimming.cal=false",
                                              "ans.enabled=false", "train.epochs=1", "train.max_failures=0",
                                              "scaling.num_workers=1", "tracking.enabled=false"]:
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("dance: error: training failed") and victim.name in last
    assert "Traceback" not in err
