"""ANS (paper §3.3, Algorithm 1): progressive Network Slimming of the header."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from workers.dance.ans import (
    ANSConfig,
    NetworkSlimmer,
    PrunePlan,
    PruningNotReadyError,
    due_stage,
    stage_points,
    unwrap_model,
)
from workers.models import build_model, get_parts
from workers.pruning_report import plot_pruning_report

BUILTIN = ["deeplabv3plus", "deeplabv3", "pspnet", "icnet", "bisenet"]
ROOT = Path(__file__).resolve().parents[2]


def sparse_trained(model: nn.Module, seed: int = 0) -> nn.Module:
    """Stand-in for sparse training: distinct random BN scales, so the |γ| ranking is defined."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.01)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return model


def small(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return sparse_trained(build_model(name, num_classes=5, variant="small"), seed)


def frozen_shapes(model: nn.Module) -> dict[str, tuple]:
    """Shapes of everything that must never change: backbone tensors and classifier outputs."""
    parts = get_parts(model)
    out = {f"b.{n}": tuple(t.shape) for n, t in parts.backbone.state_dict().items()}
    cls = [m for m in parts.classifier.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][-1]
    out["classifier.out"] = cls.weight.shape[0]
    return out


def valid_sizes(model: nn.Module) -> list[tuple[int, int]]:
    q, lo = model.size_quantum, model.min_size
    return [(lo, lo), (lo, lo + q), (lo + 3 * q, lo + q), (2 * lo, 3 * lo)]


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("stages", [1, 6])
@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.8])
def test_keeps_expected_fraction_and_never_touches_backbone_or_classifier(name, stages, ratio):
    model = small(name)
    frozen = frozen_shapes(model)
    slimmer = NetworkSlimmer(model, ANSConfig(target_ratio=ratio, stages=stages))
    n0 = sum(slimmer.original_channels.values())
    for s in range(1, stages + 1):
        plan = slimmer.step()
        expected = round(n0 * (1 - ratio) ** (s / stages))
        assert slimmer.header_channels() == plan.channels_after == expected
        assert slimmer.header_channels_kept() == pytest.approx(slimmer.kept_fraction_target(s), abs=1.0 / n0)
    assert slimmer.header_channels_kept() == pytest.approx(1 - ratio, abs=1.0 / n0)
    assert frozen_shapes(model) == frozen
    model.eval()
    with torch.no_grad():
        for h, w in valid_sizes(model):
            assert model(torch.randn(1, 3, h, w)).shape == (1, 5, h, w)


@pytest.mark.parametrize("name", BUILTIN)
def test_training_continues_after_pruning(name):
    model = small(name)
    model.train()
    slimmer = NetworkSlimmer(model, ANSConfig(target_ratio=0.5, stages=2))
    assert model.training and all(m.training for m in model.modules())  # tracing must not leave eval mode on
    slimmer.step()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)  # new optimizer: pruning replaced the tensors
    h, w = model.min_size, model.min_size + model.size_quantum
    out = model(torch.randn(2, 3, h, w))
    loss = out.mean() + slimmer.l1_penalty()
    loss.backward()
    opt.step()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters() if p.requires_grad)


def test_refuses_to_prune_tied_gammas():
    torch.manual_seed(0)
    model = build_model("deeplabv3plus", num_classes=5, variant="small")  # fresh: every γ = 1
    before = {k: v.shape for k, v in model.state_dict().items()}
    slimmer = NetworkSlimmer(model, ANSConfig())
    assert slimmer.gamma_spread() == 0.0
    with pytest.raises(PruningNotReadyError, match="min_gamma_spread"):
        slimmer.plan_stage(1)
    assert {k: v.shape for k, v in model.state_dict().items()} == before and slimmer.stage == 0
    # A barely-trained header (spread 1e-5) is refused too; a lower threshold lets it through.
    with torch.no_grad():
        for bn in slimmer.penalised_batchnorms:
            bn.weight.add_(torch.randn(bn.weight.shape) * 1e-5)
    with pytest.raises(PruningNotReadyError):
        slimmer.plan_stage(1)
    slimmer.cfg = ANSConfig(min_gamma_spread=1e-6)
    assert slimmer.plan_stage(1).num_pruned > 0


def test_l1_penalty_and_regularize_match_network_slimming():
    model = small("pspnet")
    cfg = ANSConfig(l1_lambda=1e-3)
    slimmer = NetworkSlimmer(model, cfg)
    header_bns = {m for m in get_parts(model).header.modules() if isinstance(m, nn.BatchNorm2d)}
    assert set(slimmer.penalised_batchnorms) <= header_bns and slimmer.penalised_batchnorms
    expected = 1e-3 * sum(bn.weight.abs().sum() for bn in slimmer.penalised_batchnorms)
    assert torch.allclose(slimmer.l1_penalty(), expected)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    slimmer.regularize()
    bn = slimmer.penalised_batchnorms[0]
    assert torch.allclose(bn.weight.grad, 1e-3 * torch.sign(bn.weight))
    assert all(float(p.grad.abs().sum()) == 0 for p in get_parts(model).backbone.parameters())
    assert float(NetworkSlimmer(model, ANSConfig(enabled=False)).l1_penalty()) == 0.0


def test_plan_is_deterministic_serialisable_and_replayable():
    a, b = small("bisenet"), small("bisenet")
    sa, sb = NetworkSlimmer(a, ANSConfig(stages=3)), NetworkSlimmer(b, ANSConfig(stages=3))
    plan = sa.plan_stage(1)
    assert plan.digest() == sb.plan_stage(1).digest()
    replay = PrunePlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    sa.apply(plan)
    sb.apply(replay)
    x = torch.randn(1, 3, 64, 96)
    a.eval(), b.eval()
    assert torch.equal(a(x), b(x))
    with pytest.raises(ValueError, match="already"):
        sb.apply(replay)


def test_resume_from_slimmer_state_continues_the_schedule():
    from workers.checkpoint import load_checkpoint, save_checkpoint

    model = small("deeplabv3plus")
    slimmer = NetworkSlimmer(model, ANSConfig(target_ratio=0.5, stages=4))
    slimmer.step(), slimmer.step()
    state = json.loads(json.dumps(slimmer.state_dict()))
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(Path(d) / "c.pt", model, extra={"ans": state})
        ck = load_checkpoint(Path(d) / "c.pt")
    resumed = NetworkSlimmer(ck.model, ANSConfig(target_ratio=0.5, stages=4))
    resumed.load_state_dict(ck.extra["ans"])
    assert resumed.stage == 2 and resumed.header_channels_kept() == pytest.approx(0.5 ** 0.5, abs=0.02)
    resumed.step(), resumed.step()
    assert resumed.header_channels() == round(sum(resumed.original_channels.values()) * 0.5)
    assert resumed.report()["summary"]["header"]["channels_after"] > 0


def test_due_stage_follows_algorithm_1():
    # Algorithm 1, 12 epochs, S = 6: t mod 2 == 0 after epochs t = 0, 2, ..., 10 (1, 3, ..., 11 done);
    # the last stage (epoch 11) trains the final structure.
    assert stage_points(12, 6) == [1, 3, 5, 7, 9, 11]
    assert [due_stage(e, 12, 6) for e in range(13)] == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    # 30 epochs, S = 6 (the setting): after epochs 0, 5, ..., 25; epochs 26-29 train the final net.
    assert stage_points(30, 6) == [1, 6, 11, 16, 21, 26]
    # The old schedule stays available by name: the last prune on the last iteration.
    assert [due_stage(e, 12, 6, "end_of_stage") for e in range(13)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    assert due_stage(10, 10, 3, "end_of_stage") == 3 and due_stage(3.34, 10, 3, "end_of_stage") == 1
    # Stages of one epoch or less: the first prune half a stage in; longer ones: after epoch 0 as printed.
    assert stage_points(6, 6) == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5] and stage_points(3, 2) == [1, 2.5]
    for total, stages in [(6, 6), (4, 6), (1, 6), (8, 6), (10, 3), (3, 2), (7, 6)]:
        pts = stage_points(total, stages)
        assert len(set(pts)) == stages and all(0 < a < b for a, b in zip(pts, pts[1:])) and pts[-1] < total
    with pytest.raises(ValueError, match="unknown ANS schedule"):
        stage_points(10, 2, "sometimes")


def gammas_by_channel(slimmer: NetworkSlimmer) -> dict[tuple[str, int], float]:
    """Importance (mean |γ| over the group's BNs) of every prunable channel, by (root layer, index)."""
    return {(name, i): float(v) for name, g in slimmer._groups().items() for i, v in enumerate(slimmer._importance(g))}


@pytest.mark.parametrize("name", BUILTIN)
def test_the_channels_that_go_are_the_smallest_gammas_globally(name):
    model = small(name, seed=3)
    slimmer = NetworkSlimmer(model, ANSConfig(target_ratio=0.5, stages=2))
    imp = gammas_by_channel(slimmer)
    plan = slimmer.plan_stage(1)
    gone = {(layer, i) for layer, idxs in plan.prune.items() for i in idxs}
    kept = set(imp) - gone
    assert len(gone) == plan.num_pruned == plan.channels_before - plan.target_channels > 0
    # Global ranking: every removed channel's |γ| is below every kept channel's (min_channels_per_layer=1
    # never binds with random γ at 50 %): pruning the LARGEST |γ| would fail here.
    assert max(imp[c] for c in gone) <= min(imp[c] for c in kept)
    ranked = sorted(imp, key=lambda c: (imp[c], c))
    assert gone == set(ranked[: len(gone)])
    assert plan.gamma_spread == pytest.approx(slimmer.gamma_spread())


@pytest.mark.parametrize("name", BUILTIN)
def test_pruned_output_equals_the_unpruned_model_with_those_bn_channels_zeroed(name):
    """Structural removal computes exactly what zeroing the removed channels' BN γ and β computes."""
    model = small(name, seed=5)
    with torch.no_grad():  # non-zero shifts everywhere, so zeroing β matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.uniform_(-0.5, 0.5)
    model.eval()
    slimmer = NetworkSlimmer(model, ANSConfig(target_ratio=0.5, stages=1))
    plan = slimmer.plan_stage(1)
    masked = copy.deepcopy(model)
    mods = dict(masked.named_modules())
    groups = slimmer._groups()
    for layer, idxs in plan.prune.items():
        for bn, bn_idxs, root_idxs in groups[layer]["bns"]:
            target = mods[slimmer._names[bn]]
            rows = [b for b, r in zip(bn_idxs, root_idxs) if r in set(idxs)]
            with torch.no_grad():
                target.weight[rows] = 0.0
                target.bias[rows] = 0.0
    slimmer.apply(plan)
    x = torch.randn(2, 3, *valid_sizes(model)[2], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = masked(x), model(x)
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4), float((got - ref).abs().max())
    # ... while zeroing the channels a REVERSED ranking would pick (largest |γ|) gives another output.
    twin = copy.deepcopy(masked)
    ts = NetworkSlimmer(twin, ANSConfig(target_ratio=0.5, stages=1))
    imp = gammas_by_channel(ts)
    largest = sorted(imp, key=lambda c: -imp[c])[: plan.num_pruned]
    tmods, tgroups = dict(twin.named_modules()), ts._groups()
    with torch.no_grad():
        for layer, i in largest:
            for bn, bn_idxs, root_idxs in tgroups[layer]["bns"]:
                rows = [b for b, r in zip(bn_idxs, root_idxs) if r == i]
                tmods[ts._names[bn]].weight[rows] = 0.0
                tmods[ts._names[bn]].bias[rows] = 0.0
        assert not torch.allclose(twin(x), got, atol=1e-3, rtol=1e-3)


def test_forced_plan_records_spread_and_wait_refuses():
    torch.manual_seed(0)
    model = build_model("deeplabv3plus", num_classes=5, variant="small")
    slimmer = NetworkSlimmer(model, ANSConfig(min_gamma_spread=1e-3))
    with torch.no_grad():
        for bn in slimmer.penalised_batchnorms:
            bn.weight.add_(torch.randn(bn.weight.shape) * 1e-5)
    with pytest.raises(PruningNotReadyError):
        slimmer.plan_stage(1)
    plan = slimmer.plan_stage(1, force=True)
    assert plan.forced and 0 < plan.gamma_spread < 1e-3 and plan.num_pruned > 0
    back = PrunePlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert back.gamma_spread == plan.gamma_spread and back.forced


def test_pruning_report_splits_multiscale_and_other_layers(tmp_path):
    model = small("deeplabv3plus")
    slimmer = NetworkSlimmer(model, ANSConfig(target_ratio=0.5, stages=1))
    slimmer.step()
    rep = slimmer.report()
    json.dumps(rep)
    kinds = {r["name"]: r["kind"] for r in rep["layers"]}
    assert kinds["header.aspp.project.0"] == "multiscale" and kinds["header.decoder.0.0"] == "other"
    assert kinds["classifier"] == "classifier"
    s = rep["summary"]
    assert s["classifier"]["channels_after"] == s["classifier"]["channels_before"] == 5
    assert s["multiscale"]["channels_before"] + s["other"]["channels_before"] == s["header"]["channels_before"]
    assert s["header"]["channels_after"] < s["header"]["channels_before"]
    assert s["header"]["pruned_params"] > 0
    png = plot_pruning_report(rep, tmp_path / "pruning.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class UserNet(nn.Module):
    """A bring-your-own model: encoder / decoder (with a concat and a residual add) / head."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                     nn.Conv2d(16, 24, 3, stride=2, padding=1), nn.BatchNorm2d(24), nn.ReLU())
        self.decoder = nn.ModuleDict({
            "a": nn.Sequential(nn.Conv2d(24, 12, 1), nn.BatchNorm2d(12), nn.ReLU()),
            "b": nn.Sequential(nn.Conv2d(24, 12, 3, padding=2, dilation=2), nn.BatchNorm2d(12), nn.ReLU()),
            "fuse": nn.Sequential(nn.Conv2d(24, 20, 3, padding=1), nn.BatchNorm2d(20)),
            "skip": nn.Sequential(nn.Conv2d(24, 20, 1), nn.BatchNorm2d(20)),
        })
        self.head = nn.Conv2d(20, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encoder(x)
        d = self.decoder
        y = torch.relu(d["fuse"](torch.cat([d["a"](f), d["b"](f)], 1)) + d["skip"](f))
        return nn.functional.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear", align_corners=False)


def test_custom_model_with_named_parts_is_pruned_correctly():
    torch.manual_seed(0)
    net = sparse_trained(UserNet())
    parts = {"backbone": "encoder", "header": "decoder", "classifier": "head"}
    enc = {k: v.shape for k, v in net.encoder.state_dict().items()}
    slimmer = NetworkSlimmer(net, ANSConfig(target_ratio=0.5, stages=2), example_input_size=(32, 32), parts=parts)
    # a, b and the add-coupled fuse+skip pair: three groups, 12 + 12 + 20 channels.
    assert sorted(slimmer.original_channels.items())[:2] == [("decoder.a.0", 12), ("decoder.b.0", 12)]
    assert len(slimmer.original_channels) == 3 and sum(slimmer.original_channels.values()) == 44
    slimmer.step(), slimmer.step()
    assert slimmer.header_channels() == 22
    d = net.decoder
    assert d["fuse"][0].out_channels == d["skip"][0].out_channels == net.head.in_channels
    assert d["fuse"][0].in_channels == d["a"][0].out_channels + d["b"][0].out_channels
    assert net.head.out_channels == 4 and {k: v.shape for k, v in net.encoder.state_dict().items()} == enc
    net.eval()
    assert net(torch.randn(1, 3, 48, 80)).shape == (1, 4, 48, 80)


DDP_WORKER = textwrap.dedent("""
    import json, os, sys
    import torch, torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    sys.path.insert(0, {root!r})
    torch.set_num_threads(1)
    from workers.models import build_model
    from workers.dance.ans import ANSConfig, NetworkSlimmer, broadcast_plan, unwrap_model
    rank = int(sys.argv[1])
    dist.init_process_group("gloo", init_method="file://" + {store!r}, rank=rank, world_size=2)
    torch.manual_seed(0)
    model = DDP(build_model("pspnet", num_classes=5, variant="small"))
    slimmer = NetworkSlimmer(model, ANSConfig(target_ratio=0.5, stages=2, l1_lambda=5e-2, min_gamma_spread=1e-4))
    digests = []
    for stage in (1, 2):
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        torch.manual_seed(100 + rank)  # different data on each rank
        for _ in range(3):
            opt.zero_grad()
            x = torch.randn(2, 3, 32, 48)
            loss = model(x).pow(2).mean() + slimmer.l1_penalty()
            loss.backward()
            opt.step()
        inner = unwrap_model(model)
        local = slimmer.plan_stage(stage)  # decided from the synchronised weights on each rank
        plan = broadcast_plan(local)
        assert plan.digest() == local.digest(), "ranks disagree on the plan"
        slimmer.apply(plan)
        model = DDP(inner)
        digests.append(plan.digest())
    model.eval()  # dropout draws differ per rank in training mode
    out = model(torch.ones(2, 3, 32, 48)).sum().item()
    print(json.dumps({{"digests": digests, "kept": slimmer.header_channels_kept(), "out": out}}))
    dist.destroy_process_group()
""")


def test_ddp_two_ranks_prune_identically(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER.format(root=str(ROOT), store=str(tmp_path / "store")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(r)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for r in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0] == results[1]
    assert results[0]["kept"] == pytest.approx(0.5, abs=0.02)


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError):
        ANSConfig(target_ration=0.5)
    with pytest.raises(ValueError):
        ANSConfig(target_ratio=1.0)
    with pytest.raises(ValueError):
        ANSConfig(stages=0)
    assert ANSConfig().keep_ratio == 0.5


def test_unwrap_model_and_bad_stage():
    model = small("icnet")
    assert unwrap_model(nn.DataParallel(model)) is model
    slimmer = NetworkSlimmer(nn.DataParallel(model), ANSConfig(stages=2))
    assert slimmer.model is model
    with pytest.raises(ValueError):
        slimmer.plan_stage(3)
    with pytest.raises(ValueError):
        slimmer.kept_fraction_target(-1)
    assert copy.deepcopy(slimmer.state_dict())["stage"] == 0


def test_channel_multiple_rounds_every_layer_and_stays_near_the_target():
    model = small("bisenet")
    model.eval()
    slimmer = NetworkSlimmer(model, ANSConfig(target_ratio=0.5, stages=2, channel_multiple=8))
    n0 = sum(slimmer.original_channels.values())
    for _ in range(2):
        slimmer.step()
    groups = slimmer._groups()
    for name, g in groups.items():
        assert g["channels"] % 8 == 0 or g["channels"] == slimmer.original_channels[name], name
    assert abs(slimmer.header_channels() - n0 / 2) <= 4 * len(groups)
    assert model(torch.randn(1, 3, 64, 96)).shape == (1, 5, 64, 96)


def test_custom_model_built_by_the_registry_prunes_reports_and_round_trips(tmp_path):
    from workers.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = build_model("custom", num_classes=4, factory=f"{__name__}:UserNet", size_quantum=4, min_size=16,
                        parts={"backbone": "encoder", "header": "decoder", "classifier": "head"},
                        multiscale_modules=["decoder.a", "decoder.b"])
    sparse_trained(model)
    slimmer = NetworkSlimmer(model, ANSConfig(target_ratio=0.5, stages=1))
    assert set(slimmer.original_channels) <= {"net.decoder.a.0", "net.decoder.b.0", "net.decoder.fuse.0",
                                              "net.decoder.skip.0"}
    slimmer.step()
    assert slimmer.header_channels() == 22
    summary = slimmer.report()["summary"]
    assert summary["multiscale"]["channels_before"] == 24 and summary["classifier"]["channels_after"] == 4
    model.eval()
    x = torch.randn(1, 3, 20, 28)
    ck = load_checkpoint(save_checkpoint(tmp_path / "custom.pt", model))
    assert torch.equal(ck.model(x), model(x))
