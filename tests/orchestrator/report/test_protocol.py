"""The synthetic reproduction's parts: the sweep file and the report agree on which trial
belongs to which table; the "dusk" style; Table 12's timed hooks on a real model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]


def reproduce_trials():
    """Every grid point of configs/reproduce/sweep.yaml as a report Trial (params as the sweep logs them)."""
    from orchestrator.report.collect import Trial
    from orchestrator.runs.tracking import flatten
    from orchestrator.sweep.space import encode_value, load_sweep

    spec = load_sweep(ROOT / "configs" / "reproduce" / "sweep.yaml", [], check_data=False)
    out = {}
    for i, value in enumerate(spec.sweep.space[".trial"].grid):
        cfg = spec.resolve({".trial": encode_value(value)})
        params = flatten(cfg.model_dump(mode="json"))
        params["resolved.lr"], params["resolved.batch_size"] = str(cfg.lr), str(cfg.batch_size)
        # metrics: a distinct mIoU per trial so each table row can be traced back to its trial
        out[value["label"]] = Trial(f"run{i}", "reproduce", f"t{i:02d}", "FINISHED", params,
                                    {"miou": i / 100, "train_flops": 1e12 + i, "infer_flops_per_image": 1e8 + i})
    return spec, out


def test_the_reproduction_sweep_fills_every_table():
    from orchestrator.report import tables as T
    from orchestrator.report.paper import load_paper_numbers

    spec, by_label = reproduce_trials()
    assert len(by_label) == 36 and spec.sweep.scheduler.kind == "none"
    trials = list(by_label.values())
    paper = load_paper_numbers()
    s = T.main_setting(trials)
    assert (s.epochs, s.ratio, s.drop_budget, s.adaptation) == (10, 0.5, "steps", False)
    rows = T.table8_trials(trials, s)
    expect8 = {1: "T8.1 baseline", 2: "T8.2 ANS", 3: "T8.3 ANS+CAD", 4: "T8.4 ANS+CAD+CAL", 5: "T8.5 ANS+RD",
               6: "T8.6 ANS+CASD", 7: "T8.7 DANCE (equal steps)"}
    # every Table 8 row: the same three paired seeds
    assert ({n: sorted(t.run_id for t in ts) for n, ts in rows.items()}
            == {n: sorted(by_label[f"{label} s{k}"].run_id for k in range(3)) for n, label in expect8.items()})
    assert {n: sorted(t.seed for t in ts) for n, ts in rows.items()} == {n: [0, 1, 2] for n in expect8}
    dance0 = by_label["T8.7 DANCE (equal steps) s0"]
    t4 = {r["mode"]: r["trials"] for r in T.table4(trials, s, paper, rows[1]).rows}
    assert t4["network_then_data"] == by_label["T4 network then data s0"].trial_id
    assert t4["data_then_network"] == by_label["T4 data then network s0"].trial_id
    assert dance0.trial_id in t4["co"]
    t6 = {r["p_mode"]: r["trials"] for r in T.table6(trials, s, paper).rows}
    assert (t6["random"], t6["inverse"]) == (by_label["T6 random p s0"].trial_id, by_label["T6 inverse p s0"].trial_id)
    cal, casd = T.table9(trials, s, paper)
    assert [r["range"] for r in cal.rows] == ["2–1", "4–1", "1–0 (default)"]
    assert [r["range"] for r in casd.rows] == ["60%–40%", "75%–25%", "100%–0% (default)"]
    from tests.orchestrator.report.conftest import summary

    reports = {t.run_id: summary(0.5, 0.5) for t in trials}
    assert [r["ratio"] for r in T.fig4(trials, s, paper, reports).rows] == [0.35, 0.5, 0.65]
    cmp_rows = T.comparisons(trials, s, paper).rows
    # DANCE at equal steps and at equal epochs, each against the baseline, on the three paired seeds
    assert {(r["budget"], r["base_epochs"], r["dance_epochs"], r["seeds"]) for r in cmp_rows
            if r["kind"] != "equal training FLOPs"} == {("steps", 10, 10, 3), ("epochs", 10, 10, 3)}
    assert all(t.param("model.pretrained_backbone", "").endswith("mobilenet_v2-b0353104.pth") for t in trials)
    assert {t.param("data.root").split("/")[-1] for t in trials} == {"dusk"}
    assert {t.param("train.size_quantum") for t in trials} == {"16"}


def test_the_premise_model_is_the_sweeps_baseline_on_both_cores():
    from orchestrator.config import load_config

    cfg = load_config(ROOT / "configs" / "reproduce" / "premise.yaml")
    base = load_config(ROOT / "configs" / "reproduce" / "experiment.yaml")
    assert not cfg.ans.enabled and not cfg.slimming.uses_p and cfg.data == base.data and cfg.model == base.model
    assert cfg.scaling.num_workers * cfg.train.batch_size == base.scaling.num_workers * base.train.batch_size


def test_the_full_scale_sweep_runs_every_cell_at_three_seeds():
    from orchestrator.sweep.space import count_trials, load_sweep

    spec = load_sweep(ROOT / "configs" / "reproduce" / "sweep-full.yaml", [], check_data=False)
    assert spec.sweep.space["seed"].grid == [0, 1, 2] and count_trials(spec.sweep) == 72
    full = {v["label"]: {k: x for k, x in v.items() if k != "label"} for v in spec.sweep.space[".trial"].grid}
    cpu = load_sweep(ROOT / "configs" / "reproduce" / "sweep.yaml", [], check_data=False).sweep.space[".trial"].grid
    for v in cpu:  # each CPU cell is the full scale's cell of the same name, with its seed: the same settings
        name = v["label"].rsplit(" s", 1)[0]
        assert name in full, name
        assert {k: x for k, x in v.items() if k not in ("label", "seed")} == full[name], name


def test_dusk_style_differs_from_day_and_unknown_styles_are_refused(tmp_path):
    from workers.data.synth import SceneGenerator, SynthArgumentError, generate_dataset

    day = SceneGenerator((64, 128), seed=3).render("train", 0)
    dusk = SceneGenerator((64, 128), seed=3, style="dusk").render("train", 0)
    assert day[0].shape == dusk[0].shape
    # warmer and darker away from the sky: the mean red/blue balance moves towards red
    ground = day[1] != 23
    rb = lambda img, m: img[..., 0][m].mean() / max(img[..., 2][m].mean(), 1)
    assert rb(dusk[0], dusk[1] != 23) > 1.1 * rb(day[0], ground)
    assert np.array_equal(day[0], SceneGenerator((64, 128), seed=3).render("train", 0)[0])
    with pytest.raises(SynthArgumentError, match="unknown style 'night'"):
        SceneGenerator((64, 128), style="night")
    summary = generate_dataset(tmp_path / "d", n_train=2, n_val=1, size=(32, 64), seed=1, style="dusk")
    assert summary["style"] == "dusk"


def test_timed_hooks_split_a_real_forward():
    import torch

    from orchestrator.report.runtime import compare_runtime, time_once
    from workers.models import build_model

    model = build_model("deeplabv3plus", 19, "small").eval()
    assert model.multiscale_modules
    parts = time_once(model, [(64, 128), (64, 128)])
    assert all(parts[p] > 0 for p in ("backbone", "multiscale", "other", "all"))
    assert parts["backbone"] + parts["multiscale"] + parts["other"] <= parts["all"]
    res = compare_runtime({"a": (model, [(64, 128)]), "b": (model, [(128, 256)])}, rounds=2)
    assert res["b"]["all"] > res["a"]["all"]  # four times the pixels
    assert torch.get_num_threads() == 1  # restored (the test session runs one thread)


@pytest.mark.parametrize("scale, expect", [
    ("cpu", ["--size 256x512", "configs/reproduce/premise.yaml", "configs/reproduce/sweep.yaml --plain"]),
    ("full", ["--size 512x1024", "configs/reproduce/premise-full.yaml", "configs/reproduce/sweep-full.yaml",
              "--address head:6379"]),
])
def test_make_reproduce_runs_the_premise_check_before_the_sweep_at_either_scale(scale, expect, tmp_path):
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("no make on this machine: the Makefile cannot be read")
    out = subprocess.run(["make", "-n", "reproduce", f"REPRO_SCALE={scale}",
                          f"REPRO={tmp_path}", "REPRO_ADDRESS=head:6379"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    for e in expect:
        assert e in out, e
    order = [out.index(k) for k in ("dance data synth", "dance train", "dance data premise", "dance sweep",
                                    "dance report")]
    assert order == sorted(order)
    assert "model.pretrained_backbone=.dance/weights/mobilenet_v2-b0353104.pth" in out
