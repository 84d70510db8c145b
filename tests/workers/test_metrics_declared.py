"""workers.metrics declares what a trial reports: a real (tiny) run may report nothing else, and all it promises.

A metric added to the loop or to evaluate without being declared, or declared without being
emitted, fails here instead of drifting out of the sweep's objective check.
"""
from __future__ import annotations

import pytest

from orchestrator.config import load_config
from workers import metrics as M
from workers.prepare import worker_config
from workers.train_loop import METRIC_NAMES, run_local

EPOCHS = 3  # with eval_every 2: epoch 0 trains only, epochs 1 and 2 (the last) evaluate


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from workers.data.synth import generate_dataset

    tmp = tmp_path_factory.mktemp("declared")
    generate_dataset(tmp / "a", n_train=16, n_val=2, size=(64, 128), seed=5)
    return tmp


def reports(data, *overrides: str) -> list[dict]:
    cfg = load_config(None, [f"data.root={data / 'a'}", f"data.cache_dir={data / 'cache'}", "model.variant=small",
                             "ans.stages=2", "ans.l1_lambda=1e-3", "ans.min_gamma_spread=1e-6", "optim.lr=0.02",
                             f"train.epochs={EPOCHS}", "train.eval_every=2", "train.batch_size=2",
                             "train.eval_batch_size=2", "scaling.num_workers=1", *overrides])
    out = run_local(worker_config(cfg)).reports
    assert [r[M.EPOCH] for r in out] == list(range(EPOCHS))
    return out


def check_declared(reps: list[dict]) -> None:
    for r in reps:
        undeclared = sorted(k for k in r if not M.is_trial_metric(k))
        assert not undeclared, f"epoch {r[M.EPOCH]} reports undeclared metrics {undeclared}"
        missing = sorted(set(M.ALWAYS_METRICS) - set(r))
        assert not missing, f"epoch {r[M.EPOCH]} lacks always-emitted metrics {missing}"
        assert M.ENERGY_J not in r  # no NVML on a CPU run: absent, never 0
    evaluated = [r for r in reps if r[M.EPOCH] in (1, 2)]
    for r in evaluated:
        assert set(M.EVAL_METRICS) <= set(r)
        assert any(M.is_per_class_metric(k) for k in r)
    assert not any(k in reps[0] for k in M.EVAL_METRICS) and not any(map(M.is_per_class_metric, reps[0]))
    # where the start went: the first epoch only; the trial's own stamps only under a sweep (not here)
    assert {M.START_SETUP_S, M.START_FIRST_STEP_S} <= set(reps[0]) and reps[0][M.START_SETUP_S] > 0
    assert not any(k in r for r in reps[1:] for k in M.START_METRICS)
    assert M.START_TRIAL_S not in reps[0] and M.START_WORKERS_S not in reps[0]


def test_ans_on_reports_only_declared_metrics(data):
    reps = reports(data)
    check_declared(reps)
    every_epoch = set(M.ANS_METRICS) - {M.ANS_PRUNE_GAMMA_SPREAD}
    assert all(every_epoch <= set(r) for r in reps)
    assert any(M.ANS_PRUNE_GAMMA_SPREAD in r for r in reps)
    # the default slimming scores complexity: CAL's weights per p quartile are there, rising with p
    # (a quartile none of whose images was drawn in an epoch has no mean, and is absent: CASD drops most of
    # the lowest quartile's images, so the lowest present is often q2, whose mean p is ~0.55 against q4's ~0.85)
    for r in reps:
        q = [r[n] for n in M.CAL_METRICS if n in r]
        assert len(q) >= 3 and q == sorted(q) and q[-1] > 1.3 * q[0], q


def test_ans_off_reports_only_declared_metrics(data):
    reps = reports(data, "ans.enabled=false", "slimming.cad=false", "slimming.casd=false", "slimming.cal=false")
    check_declared(reps)
    assert not any(k in r for r in reps for k in M.CAL_METRICS)  # no complexity scores: nothing to weigh
    assert not any(k in r for r in reps for k in M.ANS_METRICS)


def test_declaration_is_consistent():
    groups = (M.ALWAYS_METRICS, M.ANS_METRICS, M.CAL_METRICS, M.START_METRICS, M.MEASURED_METRICS, M.EVAL_METRICS)
    names = [n for g in groups for n in g]
    assert len(names) == len(set(names)) and set(names) == set(M.TRIAL_METRICS)
    assert not any(n.startswith(M.PER_CLASS_PREFIX) for n in names)
    assert set(METRIC_NAMES) <= set(M.TRIAL_METRICS)
    assert M.per_class_metric("traffic light") == "iou_traffic_light"
    assert M.is_trial_metric("iou_traffic_light") and M.is_trial_metric(M.ENERGY_J)
    assert not M.is_trial_metric(M.PER_CLASS_PREFIX) and not M.is_trial_metric("accuracy")
