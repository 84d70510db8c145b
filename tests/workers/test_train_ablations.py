"""Each ablation switch changes only what it names (same loop as Ray Train, world size 1, no Ray).

CAD off ⇒ every image at full size; CASD off ⇒ nothing dropped; CAL off ⇒ every weight 1;
RD ⇒ drop probability 0.5 regardless of p; ANS off ⇒ header untouched; the separate
optimisation modes run ANS and data slimming in different halves; adaptation starts from
a (pruned) checkpoint on another dataset; a resumed local run equals an uninterrupted one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.config import load_config
from workers.checkpoint import load_checkpoint, model_structure
from workers.prepare import worker_config
from workers.runtime import LocalRuntime
from workers.train_loop import CHECKPOINT_FILE, METRIC_NAMES, Trainer, reset_classifier, run_local

FULL = (64, 128)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from workers.data.synth import generate_dataset

    tmp = tmp_path_factory.mktemp("ablations")
    generate_dataset(tmp / "a", n_train=24, n_val=4, size=FULL, seed=5)
    generate_dataset(tmp / "b", n_train=16, n_val=4, size=FULL, seed=9)
    return tmp


def base(root: Path, tmp: Path) -> list[str]:
    return [f"data.root={root}", f"data.cache_dir={tmp / 'cache'}", "model.variant=small",
            "ans.stages=2", "ans.l1_lambda=1e-3", "ans.min_gamma_spread=1e-6", "optim.lr=0.02",
            "train.epochs=2", "train.batch_size=2", "train.eval_batch_size=4", "scaling.num_workers=1"]


def train(data: Path, *overrides: str, root: str = "a", ckpt: Path | None = None) -> tuple[Trainer, LocalRuntime]:
    cfg = load_config(None, base(data / root, data) + list(overrides))
    rt = LocalRuntime(checkpoint_root=ckpt)
    tr = Trainer(worker_config(cfg), rt)
    tr.run()
    return tr, rt


def header_structure(model) -> dict:
    return {k: v for k, v in model_structure(model).items() if k.startswith(("header", "classifier"))}


@pytest.fixture(scope="module")
def all_on(data, tmp_path_factory):
    return train(data, ckpt=tmp_path_factory.mktemp("all_on_ckpt"))


def phase(tr: Trainer):
    return tr.phases[True]


def test_all_on_uses_every_component(all_on):
    tr, rt = all_on
    ph, p = phase(tr), tr.train_p
    assert any(s != FULL for s in ph.sizes)                       # CAD
    np.testing.assert_allclose(ph.drop_prob, 1 - p)               # CASD (default range)
    np.testing.assert_allclose(ph.weights, p)                     # CAL (default range)
    assert max(r["dropped_fraction"] for r in rt.reports) > 0
    assert rt.reports[-1]["header_channels_kept"] == pytest.approx(0.5, abs=0.02)   # ANS
    assert all(k in r for r in rt.reports for k in METRIC_NAMES)
    assert all("energy_j" not in r for r in rt.reports)
    # the scoring of the training set is part of the training cost, once
    assert rt.reports[0]["train_flops"] == pytest.approx(rt.reports[0]["epoch_train_flops"] + tr.raw["scoring_flops"])
    assert tr.raw["scoring_flops"] > 0


def test_cad_off_means_full_size_only(data, all_on):
    ref, ref_rt = all_on
    tr, rt = train(data, "slimming.cad=false")
    assert set(phase(tr).sizes) == {FULL}
    assert set(tr._eval_sizes()) == {FULL}
    np.testing.assert_allclose(phase(tr).drop_prob, phase(ref).drop_prob)
    np.testing.assert_allclose(phase(tr).weights, phase(ref).weights)
    assert [r["dropped_fraction"] for r in rt.reports] == [r["dropped_fraction"] for r in ref_rt.reports]
    assert rt.reports[-1]["header_channels_kept"] == pytest.approx(ref_rt.reports[-1]["header_channels_kept"])


def test_casd_off_drops_nothing(data, all_on):
    ref, _ = all_on
    tr, rt = train(data, "slimming.casd=false")
    assert all(r["dropped_fraction"] == 0 for r in rt.reports)
    assert not phase(tr).drop_prob.any()
    assert phase(tr).sizes == phase(ref).sizes
    np.testing.assert_allclose(phase(tr).weights, phase(ref).weights)


def test_cal_off_weighs_every_image_one(data, all_on):
    ref, _ = all_on
    tr, _ = train(data, "slimming.cal=false")
    assert (phase(tr).weights == 1).all()
    assert phase(tr).sizes == phase(ref).sizes
    np.testing.assert_allclose(phase(tr).drop_prob, phase(ref).drop_prob)


def test_rd_drops_at_a_fixed_rate(data, all_on):
    ref, _ = all_on
    tr, rt = train(data, "slimming.casd=false", "slimming.rd=true", "slimming.rd_prob=0.5")
    assert (phase(tr).drop_prob == 0.5).all()
    assert phase(tr).sizes == phase(ref).sizes
    assert any(r["dropped_fraction"] > 0 for r in rt.reports)


def test_ans_off_leaves_the_header_untouched(data, all_on):
    from workers.models import build_model

    ref, _ = all_on
    tr, rt = train(data, "ans.enabled=false")
    fresh = build_model("deeplabv3plus", tr.train_ds.num_classes, "small")
    assert header_structure(tr.inner) == header_structure(fresh)
    assert all(r["header_channels_kept"] == 1.0 and r["ans_stage"] == 0 for r in rt.reports)
    assert phase(tr).sizes == phase(ref).sizes
    np.testing.assert_allclose(phase(tr).drop_prob, phase(ref).drop_prob)


def test_baseline_is_plain_training(data):
    tr, rt = train(data, "ans.enabled=false", "slimming.cad=false", "slimming.casd=false", "slimming.cal=false")
    assert tr.raw["train_p"] is None and tr.raw["scoring_flops"] == 0   # nothing scored, nothing charged
    assert set(phase(tr).sizes) == {FULL} and (phase(tr).weights == 1).all() and not phase(tr).drop_prob.any()
    assert all(r["dropped_fraction"] == 0 and r["header_channels_kept"] == 1.0 for r in rt.reports)
    assert rt.reports[0]["train_flops"] == rt.reports[0]["epoch_train_flops"]


def test_network_then_data(data):
    tr, rt = train(data, "train.mode=network_then_data")
    first, second = rt.reports
    assert first["data_slimming"] == 0 and first["dropped_fraction"] == 0 and first["ans_stage"] == 2
    assert second["data_slimming"] == 1 and second["ans_stage"] == 2   # structure frozen in the 2nd half
    assert set(tr.phases[False].sizes) == {FULL}
    assert any(s != FULL for s in tr.phases[True].sizes)


def test_data_then_network(data):
    tr, rt = train(data, "train.mode=data_then_network")
    first, second = rt.reports
    assert first["data_slimming"] == 1 and first["ans_stage"] == 0 and first["header_channels_kept"] == 1.0
    assert second["data_slimming"] == 0 and second["dropped_fraction"] == 0 and second["ans_stage"] == 2
    assert second["header_channels_kept"] == pytest.approx(0.5, abs=0.02)


def test_adaptation_starts_from_a_pruned_checkpoint(data, all_on):
    ref, ref_rt = all_on
    ckpt = ref_rt.checkpoints[-1] / CHECKPOINT_FILE
    source = load_checkpoint(ckpt)
    tr, rt = train(data, "ans.enabled=false", f"train.init_checkpoint={ckpt}", root="b")
    assert tr.adapted_from == str(ckpt)
    assert header_structure(tr.inner) == header_structure(source.model)       # pruned structure kept
    kept = ref_rt.reports[-1]["header_channels_kept"]
    assert all(r["header_channels_kept"] == pytest.approx(kept) for r in rt.reports)  # vs the original model
    assert tr.cdf is not None and tr.cdf != source.cdf                        # CDF refitted on the new data
    # ANS on during adaptation prunes further, from the structure it starts with
    tr2, rt2 = train(data, f"train.init_checkpoint={ckpt}", root="b")
    assert rt2.reports[-1]["header_channels_kept"] == pytest.approx(kept * 0.5, abs=0.03)


def test_reset_classifier_for_another_label_set():
    from workers.models import build_model

    model = build_model("deeplabv3plus", 19, "small")
    assert reset_classifier(model, 11)
    assert model.classifier.out_channels == 11 and model.spec["num_classes"] == 11
    assert model(torch.randn(2, 3, 64, 64)).shape[1] == 11
    assert not reset_classifier(model, 11)


def test_local_resume_equals_uninterrupted(data, all_on, tmp_path):
    from workers.train_loop import param_checksum

    ref, ref_rt = all_on
    cfg = load_config(None, base(data / "a", data))
    rt = run_local(worker_config(cfg), resume_from=ref_rt.checkpoints[0], checkpoint_root=tmp_path)
    assert [r["epoch"] for r in rt.reports] == [1]
    assert rt.reports[0]["train_flops"] == pytest.approx(ref_rt.reports[-1]["train_flops"])
    assert rt.reports[0]["miou"] == pytest.approx(ref_rt.reports[-1]["miou"])
    final_ref = load_checkpoint(ref_rt.checkpoints[-1] / CHECKPOINT_FILE).model
    final = load_checkpoint(rt.checkpoints[-1] / CHECKPOINT_FILE).model
    assert param_checksum(final) == param_checksum(final_ref)


def test_size_quantum_coarsens_the_buckets(data, all_on):
    ref, _ = all_on
    tr, _ = train(data, "train.size_quantum=32")
    assert all(h % 32 == 0 and w % 32 == 0 for h, w in phase(tr).sizes)
    assert len(set(phase(tr).sizes)) <= len(set(phase(ref).sizes))
    assert all(h % 32 == 0 and w % 32 == 0 for h, w in tr._eval_sizes())
    with pytest.raises(ValueError, match="multiple of the model's size quantum"):
        train(data, "train.size_quantum=24")


def test_energy_is_absent_without_nvml(monkeypatch):
    import workers.energy as energy

    meter = energy.EnergyMeter(torch.device("cpu"))
    meter.start()
    assert not meter.available and meter.stop() is None          # CPU: absent, not 0
    monkeypatch.setattr(energy, "total_energy_mj", lambda index: {0: 1000}.get(index))
    gpu = energy.EnergyMeter(torch.device("cuda", 0))
    gpu.start()
    monkeypatch.setattr(energy, "total_energy_mj", lambda index: 3500)
    assert gpu.available and gpu.stop() == pytest.approx(2.5)       # mJ counter delta in joules


def test_counted_train_flops_equal_forward_and_backward_of_the_batches_trained(data, monkeypatch):
    """epoch_train_flops = FlopCounterMode over a real forward + backward of every batch the loop trained,
    with the structure current at that step (a prune happens mid-run)."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    records: list[tuple[int, tuple, tuple]] = []
    copies: dict[tuple, torch.nn.Module] = {}
    original = Trainer._build_model

    def build(self, resume):
        original(self, resume)

        def hook(mod, args):
            x = args[0]
            if mod.training and x.device.type != "meta":  # training steps only (not eval, tracing, counting)
                sig = tuple((n, tuple(p.shape)) for n, p in mod.named_parameters())
                if sig not in copies:
                    c = copy.deepcopy(mod)
                    c._forward_pre_hooks.clear()
                    copies[sig] = c
                records.append((self.epoch, sig, tuple(x.shape)))

        self.inner.register_forward_pre_hook(hook)

    monkeypatch.setattr(Trainer, "_build_model", build)
    tr, rt = train(data, "train.epochs=2", "ans.stages=2")
    assert len({sig for _, sig, _ in records}) >= 2          # the structure changed while training
    cache: dict[tuple, int] = {}
    per_epoch = [0, 0]
    for epoch, sig, shape in records:
        if (sig, shape) not in cache:
            net = copies[sig].train()
            with FlopCounterMode(display=False) as fc:
                net(torch.randn(shape)).float().sum().backward()
            cache[(sig, shape)] = fc.get_total_flops()
        per_epoch[epoch] += cache[(sig, shape)]
    assert [r["epoch_train_flops"] for r in rt.reports] == per_epoch
    assert sum(r["train_images"] for r in rt.reports) == sum(s[0] for _, _, s in records)


def test_every_stage_prunes_at_its_own_step_and_the_last_stage_trains(data):
    # min_gamma_spread far above any spread: every stage is "not ready", and still prunes at its own point.
    tr, rt = train(data, "train.epochs=3", "ans.stages=3", "ans.min_gamma_spread=100")
    log = tr.stage_log
    assert [e["stage"] for e in log] == [1, 2, 3] and all(e["forced"] for e in log)
    steps = [e["step"] for e in log]
    assert len(set(steps)) == 3                                        # never two stages in one step
    # Algorithm 1 (3 epochs, S = 3, one-epoch stages): due half an epoch, 1.5 and 2.5 epochs in
    cum = np.cumsum([0] + tr.steps_per_epoch)
    expected = [int(np.ceil(cum[int(pt)] + (pt % 1) * tr.steps_per_epoch[int(pt)] - 1e-9)) for pt in (0.5, 1.5, 2.5)]
    assert steps == expected and steps[-1] < tr.total_steps            # the final structure trains
    # the loop pruned where the precomputed schedule says: (epoch, step within that epoch)
    assert tr.planned_prunes() == [(e["epoch"], e["step"] - cum[e["epoch"]] - 1) for e in log]
    spreads = [r.get("ans_prune_gamma_spread") for r in rt.reports]
    assert all(s is not None and s == pytest.approx(e["gamma_spread"]) for s, e in zip(spreads, log))
    assert [r["ans_prunes"] for r in rt.reports] == [1, 1, 1]
    assert all(0 < r["batch_fill"] <= 1 for r in rt.reports)
    # The old schedule, by name: the last prune on the very last step.
    old, _ = train(data, "train.epochs=3", "ans.stages=3", "ans.schedule=end_of_stage")
    assert old.stage_log[-1]["step"] == old.total_steps
    # wait: a stage that is not ready is retried, never applied together with the next one
    waited, rep = train(data, "train.epochs=2", "ans.stages=2", "ans.min_gamma_spread=100", "ans.not_ready=wait")
    assert waited.stage_log == [] and rep.reports[-1]["ans_stage"] == 0


def test_too_few_steps_for_the_stages_is_one_clear_error(data):
    with pytest.raises(ValueError, match="separate training steps"):
        train(data, "train.epochs=1", "ans.stages=40")


def test_p_mode_replaces_the_indicator_everywhere(data, all_on):
    """Paper Table 6: inverse uses 1 - p, random a seeded uniform p per image; sizes, drops, weights and
    the val sizes all follow the replaced indicator."""
    ref, _ = all_on
    inv, _ = train(data, "slimming.p_mode=inverse", "ans.enabled=false", "train.epochs=1")
    np.testing.assert_allclose(inv.train_p, 1 - ref.train_p)
    np.testing.assert_allclose(inv.val_p, 1 - ref.val_p)
    np.testing.assert_allclose(phase(inv).weights, 1 - ref.train_p)
    np.testing.assert_allclose(phase(inv).drop_prob, ref.train_p)
    rnd, _ = train(data, "slimming.p_mode=random", "ans.enabled=false", "train.epochs=1")
    assert not np.allclose(rnd.train_p, ref.train_p) and not np.allclose(rnd.train_p, 1 - ref.train_p)
    np.testing.assert_allclose(phase(rnd).weights, rnd.train_p)
