"""Counted FLOPs (cached, per structure and size) and the paper's Eqs. 3/4 cost model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from workers.cost import clear_flop_cache, count_flops, flop_cache_info, structure_signature
from workers.dance import cost_model as cm
from workers.dance.ans import ANSConfig, NetworkSlimmer
from workers.dance.slimming import Range, SlimmingConfig, dance_sizes
from workers.models import build_model


def sparse(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.01)
    return model


def test_counted_flops_fall_after_pruning_and_the_cache_hits():
    clear_flop_cache()
    model = sparse(build_model("deeplabv3plus", num_classes=5, variant="small"))
    before = count_flops(model, 64, 128)
    assert flop_cache_info() == {"hits": 0, "misses": 1, "size": 1}
    assert count_flops(model, 64, 128) is before
    assert flop_cache_info()["hits"] == 1
    sig = structure_signature(model)
    NetworkSlimmer(model, ANSConfig(target_ratio=0.5, stages=1)).step()
    assert structure_signature(model) != sig
    after = count_flops(model, 64, 128)
    assert flop_cache_info()["misses"] == 2
    assert after.forward < before.forward
    assert after.parts["header"] < 0.6 * before.parts["header"]  # channels halved: between k and k² of the header
    assert after.parts["backbone"] == before.parts["backbone"]
    assert sum(v for k, v in after.parts.items()) == after.forward


def test_meta_counting_equals_a_real_forward_and_backward_is_about_twice():
    model = build_model("bisenet", num_classes=5, variant="small").eval()
    with FlopCounterMode(display=False) as fc:
        model(torch.randn(2, 3, 64, 96))
    c = count_flops(model, 64, 96, batch=2, backward=True)
    assert c.forward == fc.get_total_flops()
    assert 1.5 * c.forward < c.backward < 2.1 * c.forward  # no grad w.r.t. the input image
    assert c.train == c.forward + c.backward
    assert count_flops(model, 64, 96, batch=1).forward * 2 == c.forward
    assert all(p.grad is None for p in model.parameters())  # counting leaves no gradients behind


def test_paper_equations_against_hand_computed_values():
    p = [0.0, 1.0]
    # Eq. 3: ((1 − 0.25·0.5) + (1 − 1·0.5)) / 2
    assert cm.paper_eq3(p, 0.5) == pytest.approx(0.6875)
    # Eq. 4, S = 2, r = 0.25: r^(1/2) = 0.5, r^(2/2) = 0.25. The p = 0 image contributes 0
    # (as printed); the p = 1 image (1 − 0.5) + (1 − 0.25). Total / (S·I) = 1.25 / 4.
    assert cm.paper_eq4(p, 0.25, 2) == pytest.approx(0.3125)
    # p = 0.5: ratio 0.75, ratio² = 0.5625.
    assert cm.paper_eq3([0.5], 1.0) == pytest.approx(1 - 0.5625)
    assert cm.paper_eq4([0.5], 1.0, 3) == pytest.approx(0.5 * (1 - 0.5625))


def test_generalised_equations_reduce_to_the_paper_at_the_defaults():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=50)
    cfg = SlimmingConfig(cad_levels=None)  # the paper's continuous ratio (0.5p + 0.5)
    assert cm.inference_reduction(p, cfg, 0.5) == pytest.approx(cm.paper_eq3(p, 0.5))
    # Consistent Eq. 4: keep probability p outside "1 − ...": 1 − p·ratio²·r^(s/S).
    s = np.arange(1, 7) / 6
    hand = np.mean(1 - p[None] * (0.5 * p[None] + 0.5) ** 2 * 0.5 ** s[:, None])
    assert cm.training_reduction(p, cfg, 0.5, 6) == pytest.approx(hand)
    # Pruning at the end of each stage: stage s trains with r^((s−1)/S); Algorithm 1 (after epochs
    # 0, t_max/S, ...): r^(s/S), as Eq. 4 writes it.
    assert cm.stage_keep_fractions(0.25, 2, "end_of_stage") == pytest.approx([1.0, 0.5])
    assert cm.stage_keep_fractions(0.25, 2, "algorithm1") == pytest.approx([0.5, 0.25])
    # Other ranges: CAD in [0.25, 0.75], CASD off → keep everything.
    other = SlimmingConfig(cad_range=Range(lo=0.25, hi=0.75), casd=False, cad_levels=None)
    assert cm.inference_reduction([1.0], other, 1.0) == pytest.approx(1 - 0.75 ** 2)
    assert cm.training_reduction([0.0], other, 1.0, 2) == pytest.approx(1 - 0.25 ** 2)


def test_refined_predictor_matches_counted_flops():
    model = sparse(build_model("pspnet", num_classes=5, variant="small"))
    cfg = SlimmingConfig()
    p = np.linspace(0, 1, 21)
    size = (256, 512)
    base = count_flops(model, *size)
    NetworkSlimmer(model, ANSConfig(target_ratio=0.5, stages=1)).step()
    pruned = count_flops(model, *size)
    q = pruned.parts["header"] / base.parts["header"]
    sizes = dance_sizes([size] * len(p), p, cfg, model.size_quantum, model.min_size)
    counted = sum(count_flops(model, *s).forward for s in sizes) / (len(p) * base.forward)
    predicted = cm.predict_inference_fraction(p, cfg, [size] * len(p), base.share("header"), q,
                                              quantum=model.size_quantum, min_size=model.min_size)
    assert predicted == pytest.approx(counted, rel=0.02)
    with pytest.raises(ValueError):
        cm.paper_eq3([1.5], 0.5)
