"""A trial's metric names in MLflow (grouped for the UI, read back in either form) and the one epoch
convention: MLflow's step is the worker's 0-based ``epoch``, people read "epoch k/N" counting from 1."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from orchestrator.runs.schema import (
    IS_PARETO,
    PARETO_RANK,
    mlflow_metric_name,
    mlflow_metrics,
    plain_metric_name,
    plain_metrics,
)
from workers.metrics import CAL_METRICS, GROUP_SEP, TRIAL_METRICS, per_class_metric


class FakeClient:
    """Records what ``log_batch`` is given: (key, value, step)."""

    def __init__(self) -> None:
        self.logged: list[tuple[str, float, int]] = []

    def log_batch(self, run_id, metrics=(), **kw) -> None:
        self.logged += [(m.key, m.value, m.step) for m in metrics]


def test_every_trial_metric_is_grouped_and_read_back():
    names = [*TRIAL_METRICS, per_class_metric("traffic light"), "a_name_added_later"]
    grouped = [mlflow_metric_name(n) for n in names]
    assert all(GROUP_SEP in g for g in grouped)
    assert [plain_metric_name(g) for g in grouped] == names
    assert mlflow_metric_name("miou") == "accuracy/miou" and mlflow_metric_name("train_flops") == "cost/train_flops"
    assert mlflow_metric_name("epoch") == "train/epoch_index"  # it counts from 0: the name says so
    assert mlflow_metric_name("iou_traffic_light") == "iou/traffic_light"
    assert {mlflow_metric_name(n).split(GROUP_SEP)[0] for n in ("batch_fill", "ans_gamma_spread", *CAL_METRICS)} \
        == {"diag"}
    # MLflow's charts: one section per group, sorted by name, so what a trial reached and cost come first
    sections = sorted({g.split(GROUP_SEP)[0] for g in grouped})
    assert sections[:2] == ["accuracy", "cost"]
    # names that are not a trial's per-epoch figures, and old plain names, stay as they are
    for name in ("device.energy_j_per_image", "predicted.device.latency_ms_p50", "best.miou", "miou", "epoch"):
        assert plain_metric_name(name) == name
    assert mlflow_metric_name("device.energy_j_per_image") == "device.energy_j_per_image"


def test_an_epoch_is_logged_in_reading_order_with_unit_copies():
    m = {"epoch": 0, "batch_fill": 0.9, "iou_road": 0.5, "train_flops": 3e12, "miou": 0.25,
         "infer_flops_per_image": 2e9, "lr": 0.01}
    out = mlflow_metrics(m)
    # MLflow keeps a run's metrics in the order first logged; its compare view plots the first one
    assert list(out)[:3] == ["accuracy/miou", "cost/train_tflops", "cost/infer_gflops_per_image"]
    assert list(out)[-2:] == ["diag/batch_fill", "iou/road"]
    assert out["cost/train_tflops"] == pytest.approx(3.0) and out["cost/infer_gflops_per_image"] == pytest.approx(2.0)
    assert plain_metrics(out) == {**m, "train_tflops": pytest.approx(3.0), "infer_gflops_per_image": pytest.approx(2.0)}


def test_plain_metrics_reads_either_form():
    old = {"miou": 0.3, "epoch": 11.0, "iou_road": 0.4, PARETO_RANK: 1.0, IS_PARETO: 1.0}
    assert plain_metrics(old) == old  # a store written before the groups
    new = {"accuracy/miou": 0.3, "train/epoch_index": 11.0, "iou/road": 0.4, PARETO_RANK: 1.0}
    assert plain_metrics(new) == {"miou": 0.3, "epoch": 11.0, "iou_road": 0.4, PARETO_RANK: 1.0}
    assert plain_metrics({"miou": 0.1, "accuracy/miou": 0.3})["miou"] == 0.3  # the grouped one wins


def test_one_epoch_convention_in_mlflow_and_in_what_people_read(capsys):
    """The worker reports epoch index k; MLflow's step is k (dance train and a sweep alike); the log line,
    the live table and a stopped trial's reason say epoch k+1 of N."""
    from orchestrator.sweep.live import LiveTable
    from orchestrator.sweep.tracking import SweepTracker
    from orchestrator.training import _EpochRelay

    lines: list[str] = []
    client = FakeClient()
    relay = _EpochRelay(3, client, "run", None, lines.append)
    relay({"metrics": {"epoch": 0, "miou": 0.2, "train_flops": 1e12}})
    assert ("train/epoch_index", 0.0, 0) in client.logged and ("accuracy/miou", 0.2, 0) in client.logged
    assert lines[0].startswith("epoch 1/3")

    client = FakeClient()
    tracker = SweepTracker(tracking_uri="sqlite:///none", experiment_id="0", parent_run_id="p", sweep_id="s",
                           spec=None, storage=None, prepared_cdf=None)
    tracker._client = client
    tracker._started.add("t_00000")  # its run exists: the (inline) writer knows it
    tracker.writer._run_ids["t_00000"] = "run"
    trial = SimpleNamespace(trial_id="t_00000", config={})
    tracker.on_trial_result(0, [], trial, {"epoch": 2, "miou": 0.3, "training_iteration": 3})
    assert {step for _, _, step in client.logged} == {2} and ("train/epoch_index", 2.0, 2) in client.logged
    assert not any(k.endswith("training_iteration") for k, _, _ in client.logged)  # Tune's count is not logged

    table = LiveTable(lambda c: 3, lambda c: "x", live=False)
    table.on_trial_result(0, [], trial, {"epoch": 2, "miou": 0.3})
    assert "epoch 3/3" in capsys.readouterr().err
