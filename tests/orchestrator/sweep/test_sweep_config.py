"""Sweep files: every bad one reported together before Ray starts; the shipped ones load; the space."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.sweep.resources import TrialNeeds, plan_concurrency
from orchestrator.sweep.space import count_trials, decode_params, load_sweep, tune_space

ROOT = Path(__file__).resolve().parents[3]
SWEEPS = sorted((ROOT / "configs" / "sweeps").glob("*.yaml")) + sorted((ROOT / "configs" / "paper").glob("*.yaml"))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from workers.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("sweepdata") / "synth"
    generate_dataset(root, n_train=4, n_val=2, size=(32, 64), seed=3)
    return root


def write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "s.yaml"
    f.write_text(text)
    return f


def problems(path: Path, overrides=()) -> str:
    with pytest.raises(UserError) as exc:
        load_sweep(path, overrides)
    return str(exc.value)


def test_every_problem_is_reported_together_with_its_yaml_path(tmp_path, data_root):
    f = write(tmp_path, f"""
data: {{root: {tmp_path / 'no-such-data'}}}
model: {{name: deeplabv3plus, variant: small}}
sweep:
  space:
    ans.target_ratio: {{grid: [0.3, 1.5]}}
    ans.no_such_knob: {{choice: [1, 2]}}
    slimming.casd_range: {{grid: [{{lo: 0.0, hi: 1.0}}, {{lo: 0.8, hi: 0.2}}]}}
    model.name: {{choice: [deeplabv3plus, unetzz]}}
    optim.lr: {{loguniform: [0.0, 0.1]}}
  search: optuna
  objectives: [{{metric: miou, mode: max}}, {{metric: joules_per_dream, mode: min}}]
""")
    text = problems(f)
    expected = [
        "sweep.space.ans.target_ratio.grid[1] = 1.5",           # ratio outside (0, 1)
        "sweep.space.ans.no_such_knob: unknown key 'no_such_knob' in ans",
        "sweep.space.slimming.casd_range.grid[1]",              # lo > hi
        "lo (0.8) must not exceed hi (0.2)",
        "sweep.space.model.name.choice[1]",                     # unknown model
        "unknown model 'unetzz'",
        "sweep.space.optim.lr: loguniform [0.0, 0.1]: bounds must be positive",
        "sweep.objectives[1].metric: unknown metric 'joules_per_dream'",
        "sweep.search: optuna samples its own points and cannot take grid domains",
        "data.root:",                                           # missing dataset
    ]
    for piece in expected:
        assert piece in text, f"missing {piece!r} in:\n{text}"
    assert "8 problem(s)" in text  # one line per problem, all of them


def test_bad_sweep_config_exits_2_before_ray_starts(tmp_path, data_root, capsys):
    import ray

    f = write(tmp_path, f"data: {{root: {data_root}}}\nsweep:\n  space:\n    ans.stages: {{grid: [0, 2]}}\n")
    assert main(["sweep", str(f)]) == 2
    err = capsys.readouterr().err
    assert "sweep.space.ans.stages.grid[0] = 0" in err
    assert not ray.is_initialized()


def test_values_that_clash_only_together_are_found(tmp_path, data_root):
    f = write(tmp_path, f"""
data: {{root: {data_root}}}
slimming: {{casd: false}}
sweep:
  space:
    slimming.casd: {{grid: [false, true]}}
    slimming.rd: {{grid: [false, true]}}
""")
    assert "casd and rd are alternative dropping rules" in problems(f)


def test_scheduler_and_search_mismatches(tmp_path, data_root):
    f = write(tmp_path, f"""
data: {{root: {data_root}}}
train: {{epochs: 3, eval_every: 2}}
sweep:
  space: {{}}
  search: optuna
  objectives: []
  scheduler: {{kind: asha, metric: miou, grace_period: 5}}
""")
    text = problems(f)
    assert "sweep.search: optuna needs a non-empty sweep.space" in text
    assert "sweep.objectives: at least one objective" in text
    assert "train.eval_every is 2" in text
    assert "grace_period (5) must be below train.epochs (3)" in text


def test_dataset_and_tracking_paths_cannot_be_swept(tmp_path, data_root):
    f = write(tmp_path, f"data: {{root: {data_root}}}\nsweep:\n  space:\n    data.root: {{grid: [a, b]}}\n")
    assert "sweep.space.data.root: cannot be swept" in problems(f)


def test_missing_sweep_section_and_bad_yaml(tmp_path, data_root):
    assert "sweep: missing section" in problems(write(tmp_path, f"data: {{root: {data_root}}}\n"))
    assert "not valid YAML at line 3" in problems(write(tmp_path, "sweep:\n  space: [\n"))


def test_space_points_resolve_and_grid_counts(tmp_path, data_root):
    f = write(tmp_path, f"""
data: {{root: {data_root}}}
sweep:
  num_samples: 2
  space:
    ans.target_ratio: {{grid: [0.3, 0.5, 0.7]}}
    ans.stages: {{choice: [2, 4, 6]}}
    slimming.casd_range: {{grid: [{{lo: 0.0, hi: 1.0}}, {{lo: 0.25, hi: 0.75}}]}}
    optim.lr: {{loguniform: [1.0e-3, 3.0e-2]}}
    train.batch_size: {{randint: [2, 5]}}
""")
    spec = load_sweep(f)
    assert count_trials(spec.sweep) == 3 * 2 * 2
    space = tune_space(spec.sweep)
    ranges = space["slimming.casd_range"]["grid_search"]
    assert all(isinstance(v, str) and v.startswith("json:") for v in ranges)  # Optuna-safe scalars
    cfg = spec.resolve({"ans.target_ratio": 0.7, "ans.stages": 4, "slimming.casd_range": ranges[1],
                        "optim.lr": 0.01, "train.batch_size": 3})
    assert (cfg.ans.target_ratio, cfg.ans.stages, cfg.optim.lr, cfg.train.batch_size) == (0.7, 4, 0.01, 3)
    assert (cfg.slimming.casd_range.lo, cfg.slimming.casd_range.hi) == (0.25, 0.75)
    assert cfg.data.root.is_absolute()
    assert decode_params({"a": 'json:{"lo": 1}', "b": 2}) == {"a": {"lo": 1}, "b": 2}


def test_a_partial_section_is_one_swept_value(tmp_path, data_root):
    f = write(tmp_path, f"""
data: {{root: {data_root}}}
slimming: {{cad_range: {{lo: 0.6, hi: 1.0}}}}
sweep:
  space:
    slimming: {{grid: [{{cad: false, casd: false, cal: false}}, {{cad: true}}]}}
""")
    spec = load_sweep(f)
    off = spec.resolve({"slimming": tune_space(spec.sweep)["slimming"]["grid_search"][0]})
    assert not (off.slimming.cad or off.slimming.casd or off.slimming.cal)
    assert off.slimming.cad_range.lo == 0.6  # the rest of the section is kept


def test_base_chain_merges_and_loops_are_refused(tmp_path, data_root):
    (tmp_path / "exp.yaml").write_text(f"data: {{root: {data_root}}}\nans: {{stages: 3, target_ratio: 0.4}}\n")
    f = write(tmp_path, "base: exp.yaml\nans: {stages: 5}\nsweep:\n  space:\n    optim.lr: {uniform: [0.01, 0.02]}\n")
    spec = load_sweep(f)
    assert (spec.base.ans.stages, spec.base.ans.target_ratio) == (5, 0.4)
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    assert "loops back" in problems(tmp_path / "a.yaml")


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_sweep_configs_load(path):
    spec = load_sweep(path, check_data=False)  # real datasets (Cityscapes, ...) are not on this machine
    assert count_trials(spec.sweep) >= 1
    tune_space(spec.sweep)


def test_concurrency_follows_the_nodes_and_refuses_what_never_fits():
    one_cpu = TrialNeeds(workers=1, cpus_per_worker=1, gpus_per_worker=0, driver_cpus=0.01)
    two_workers = TrialNeeds(workers=2, cpus_per_worker=1, gpus_per_worker=0, driver_cpus=0.01)
    # Two whole worker groups fit, but not their drivers' 0.01 CPU beside them: one at a time, never a stall.
    assert plan_concurrency([one_cpu], [{"CPU": 2}], "auto") == 1
    assert plan_concurrency([one_cpu], [{"CPU": 2.5}], "auto") == 2
    almost = TrialNeeds(workers=1, cpus_per_worker=0.99, gpus_per_worker=0, driver_cpus=0.01)
    assert plan_concurrency([almost], [{"CPU": 2}], "auto") == 2
    # On two 1-CPU nodes both drivers may sit on one node: 0.99 + 0.02 > 1, so only 0.98 lets two run.
    assert plan_concurrency([almost], [{"CPU": 1}, {"CPU": 1}], "auto") == 1
    fit = TrialNeeds(workers=1, cpus_per_worker=0.98, gpus_per_worker=0, driver_cpus=0.01)
    assert plan_concurrency([fit], [{"CPU": 1}, {"CPU": 1}], "auto") == 2
    assert plan_concurrency([two_workers], [{"CPU": 2}], "auto") == 1
    assert plan_concurrency([two_workers], [{"CPU": 1}, {"CPU": 1}], "auto") == 1  # spread over nodes
    half = TrialNeeds(workers=2, cpus_per_worker=1.5, gpus_per_worker=0, driver_cpus=0.01)
    with pytest.raises(UserError, match="could never start"):
        plan_concurrency([half], [{"CPU": 2}, {"CPU": 1}], "auto")  # 1.5 + 1.5 CPUs, but no second 1.5-CPU node
    with pytest.raises(UserError, match="holds only 1 trial"):
        plan_concurrency([two_workers], [{"CPU": 2}], 3)
    gpu = TrialNeeds(workers=1, cpus_per_worker=1, gpus_per_worker=1, driver_cpus=0.01)
    with pytest.raises(UserError, match="0 GPU"):
        plan_concurrency([gpu], [{"CPU": 8}], "auto")


def test_optuna_nsga2_suggests_points_of_the_space_and_learns_from_results(tmp_path, data_root):
    optuna = pytest.importorskip("optuna")
    from orchestrator.sweep.runner import _searcher

    f = write(tmp_path, f"""
data: {{root: {data_root}}}
sweep:
  search: optuna
  num_samples: 4
  space:
    ans.target_ratio: {{uniform: [0.2, 0.8]}}
    ans.stages: {{choice: [2, 4, 6]}}
    slimming.casd_range: {{choice: [{{lo: 0.0, hi: 1.0}}, {{lo: 0.4, hi: 0.6}}]}}
  objectives: [{{metric: miou, mode: max}}, {{metric: train_flops, mode: min}}]
""")
    spec = load_sweep(f)
    searcher = _searcher(spec)
    assert searcher.set_search_properties(None, None, tune_space(spec.sweep))
    for i in range(4):
        point = searcher.suggest(f"t{i}")
        cfg = spec.resolve(point)  # every suggestion is a valid experiment
        assert 0.2 <= cfg.ans.target_ratio <= 0.8 and cfg.ans.stages in (2, 4, 6)
        assert (cfg.slimming.casd_range.lo, cfg.slimming.casd_range.hi) in ((0.0, 1.0), (0.4, 0.6))
        searcher.on_trial_complete(f"t{i}", result={"miou": 0.1 * i, "train_flops": 1e9 * (4 - i)})
    study = searcher._ot_study
    assert isinstance(study.sampler, optuna.samplers.NSGAIISampler) and len(study.directions) == 2
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 4


def test_objectives_and_asha_metrics_follow_what_workers_declare(tmp_path, data_root):
    """Every metric the training loop declares can be an objective or an ASHA metric (four could not,
    when the sweep kept its own list), per-class IoU included; an undeclared name cannot."""
    from workers.metrics import ALWAYS_METRICS, EVAL_METRICS

    head = (f"data: {{root: {data_root}}}\nmodel: {{name: deeplabv3plus, variant: small}}\ntrain: {{epochs: 3}}\n"
            "ans: {stages: 1}\n")
    for metric in (*ALWAYS_METRICS, *EVAL_METRICS, "iou_road"):
        f = write(tmp_path, head + f"sweep:\n  space: {{optim.lr: {{choice: [0.01, 0.02]}}}}\n"
                                   f"  objectives: [{{metric: {metric}, mode: max}}]\n"
                                   f"  scheduler: {{kind: asha, metric: {metric}, mode: max, grace_period: 1}}\n")
        load_sweep(f)
    f = write(tmp_path, head + "sweep:\n  space: {optim.lr: {choice: [0.01, 0.02]}}\n"
                               "  objectives: [{metric: flop_countin_s, mode: min}]\n"
                               "  scheduler: {kind: asha, metric: flop_countin_s, mode: min, grace_period: 1}\n")
    text = problems(f)
    assert "unknown metric 'flop_countin_s'" in text and "sweep.scheduler.metric" in text


def test_dry_run_finds_ans_stages_that_cannot_fit_the_epochs(tmp_path, data_root, capsys):
    """`epochs: 1` with `ans.stages: 4` on 4 images of batch 2 fails in every trial at its start: the
    check says so before Ray, for each grid point that cannot fit, and a point that fits passes."""
    head = (f"data: {{root: {data_root}}}\nmodel: {{name: deeplabv3plus, variant: small}}\n"
            "train: {epochs: 1, batch_size: 2}\nans: {enabled: true, stages: 1}\n")
    f = write(tmp_path, head + "sweep:\n  space: {ans.stages: {grid: [1, 4]}}\n")
    text = problems(f)
    assert 'ans.stages=4 needs 4 separate training steps for its prunes, but epochs 0..0 have at most 2 steps' in text
    assert '(at {"ans.stages": 4})' in text and '"ans.stages": 1' not in text
    assert main(["sweep", str(f), "--dry-run"]) == 2
    assert "ans.stages=4" in capsys.readouterr().err
    load_sweep(write(tmp_path, head + "sweep:\n  space: {ans.stages: {grid: [1, 2]}}\n"))  # both fit
