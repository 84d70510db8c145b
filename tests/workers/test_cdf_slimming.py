"""The Maxwell fit, p, and every slimming rule and range (paper §3.2, Table 9)."""
import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from workers.dance.cdf import MaxwellCDF
from workers.dance.slimming import (
    Range,
    SlimmingConfig,
    cad_ratio,
    dance_sizes,
    drop_probability,
    loss_weight,
    quantize_size,
)


def test_maxwell_fit_recovers_parameters():
    samples = stats.maxwell.rvs(loc=12.0, scale=7.5, size=20000, random_state=np.random.default_rng(0))
    cdf = MaxwellCDF.fit(samples)
    assert cdf.loc == pytest.approx(12.0, abs=0.3)
    assert cdf.scale == pytest.approx(7.5, rel=0.03)


def test_p_is_monotone_and_clipped():
    cdf = MaxwellCDF(loc=5.0, scale=3.0)
    sc = np.linspace(-10, 60, 500)
    p = cdf.p(sc)
    assert (np.diff(p) >= 0).all() and p.min() == 0.0 and p.max() <= 1.0 and p[-1] > 0.999


def test_cdf_round_trips_through_dict():
    cdf = MaxwellCDF(loc=1.25, scale=4.5)
    assert MaxwellCDF.from_dict(cdf.to_dict()) == cdf


def test_fit_refuses_degenerate_input():
    with pytest.raises(ValueError, match="same spatial complexity"):
        MaxwellCDF.fit(np.full(10, 3.0))


P = np.linspace(0, 1, 11)


def test_default_rules_are_the_papers():
    cfg = SlimmingConfig(cad_levels=None)  # the paper's continuous ratio (default: snapped to 6 levels)
    np.testing.assert_allclose(cad_ratio(P, cfg), 0.5 * P + 0.5)
    np.testing.assert_allclose(drop_probability(P, cfg), 1 - P)
    np.testing.assert_allclose(loss_weight(P, cfg), P)


@pytest.mark.parametrize("lo,hi", [(0.6, 0.9), (0.25, 1.0)])
def test_cad_range_honoured(lo, hi):
    r = cad_ratio(P, SlimmingConfig(cad_range=Range(lo=lo, hi=hi), cad_levels=None))
    assert r[0] == pytest.approx(lo) and r[-1] == pytest.approx(hi) and (np.diff(r) > 0).all()


@pytest.mark.parametrize("lo,hi", [(0.4, 0.6), (0.0, 0.5)])
def test_casd_range_honoured(lo, hi):
    d = drop_probability(P, SlimmingConfig(casd_range=Range(lo=lo, hi=hi)))
    assert d[0] == pytest.approx(hi) and d[-1] == pytest.approx(lo) and (np.diff(d) < 0).all()


@pytest.mark.parametrize("lo,hi", [(1.0, 2.0), (0.2, 0.8)])
def test_cal_range_honoured(lo, hi):
    w = loss_weight(P, SlimmingConfig(cal_range=Range(lo=lo, hi=hi)))
    assert w[0] == pytest.approx(lo) and w[-1] == pytest.approx(hi)


def test_switches_off_are_identity():
    cfg = SlimmingConfig(cad=False, casd=False, cal=False)
    assert (cad_ratio(P, cfg) == 1).all() and (drop_probability(P, cfg) == 0).all() and (loss_weight(P, cfg) == 1).all()
    assert not cfg.uses_p


def test_rd_is_fixed_half():
    cfg = SlimmingConfig(casd=False, rd=True)
    assert (drop_probability(P, cfg) == 0.5).all()


@pytest.mark.parametrize("bad", [
    {"casd": True, "rd": True},
    {"cad_range": {"lo": 0.0, "hi": 1.0}},
    {"cad_range": {"lo": 0.5, "hi": 1.5}},
    {"casd_range": {"lo": 0.8, "hi": 0.2}},
    {"cal_range": {"lo": 0.0, "hi": 0.0}},
    {"unknown": 1},
])
def test_bad_slimming_config_rejected(bad):
    with pytest.raises(ValidationError):
        SlimmingConfig.model_validate(bad)


@pytest.mark.parametrize("quantum", [8, 16, 32])
def test_quantised_sizes_divisible_and_bounded(quantum):
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = int(rng.integers(quantum, 1200)), int(rng.integers(quantum, 2100))
        r = float(rng.uniform(0.3, 1.0))
        qh, qw = quantize_size(h, w, r, quantum, min_size=2 * quantum)
        assert qh % quantum == 0 and qw % quantum == 0
        assert qh >= 2 * quantum and qw >= 2 * quantum
        assert qh <= max(2 * quantum, h // quantum * quantum) and qw <= max(2 * quantum, w // quantum * quantum)


@pytest.mark.parametrize("quantum", [16, 64])
def test_cad_keeps_the_aspect_ratio_within_one_quantum_step(quantum):
    rng = np.random.default_rng(1)
    for _ in range(300):
        h, w = int(rng.integers(4 * quantum, 1200)), int(rng.integers(4 * quantum, 2100))
        qh, qw = quantize_size(h, w, float(rng.uniform(0.5, 1.0)), quantum)
        short, long_, q_short, q_long = (h, w, qh, qw) if h <= w else (w, h, qw, qh)
        top = long_ // quantum * quantum
        if q_long < top:  # not clamped to the stored size: the long side follows the short side's scale
            assert abs(q_long - long_ * q_short / short) <= quantum / 2
    # the case a per-side snap got wrong: 128x256 at 0.75 became 128x192 (another shape)
    assert quantize_size(128, 256, 0.75, 64) in {(128, 256), (64, 128)}
    assert quantize_size(128, 256, 0.75, 16) == (96, 192)


def test_dance_sizes_follow_p():
    sizes = dance_sizes([(512, 1024)] * 3, np.array([0.0, 0.5, 1.0]), SlimmingConfig(), quantum=16)
    assert sizes == [(256, 512), (416, 832), (512, 1024)]   # 0.5 snaps to the level 0.8 (6 levels, halves up)
    sizes = dance_sizes([(512, 1024)] * 3, np.array([0.0, 0.5, 1.0]), SlimmingConfig(cad_levels=None), quantum=16)
    assert sizes == [(256, 512), (384, 768), (512, 1024)]
    assert dance_sizes([(512, 1024)], np.array([0.0]), SlimmingConfig(cad=False), quantum=16) == [(512, 1024)]


def test_cad_levels_snap_the_ratio_to_evenly_spaced_levels():
    from workers.dance.slimming import SlimmingConfig, cad_ratio

    p = np.linspace(0, 1, 101)
    r6 = cad_ratio(p, SlimmingConfig())  # default: 6 levels over [0.5, 1]
    np.testing.assert_allclose(np.unique(r6), [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert np.abs(r6 - (0.5 + 0.5 * p)).max() <= 0.05 + 1e-12   # nearest level
    np.testing.assert_allclose(cad_ratio(p, SlimmingConfig(cad_levels=None)), 0.5 + 0.5 * p)
    np.testing.assert_allclose(np.unique(cad_ratio(p, SlimmingConfig(cad_levels=2, cad_range={"lo": 0.6, "hi": 1.0}))),
                               [0.6, 1.0])
    assert (cad_ratio(p, SlimmingConfig(cad=False)) == 1).all()
    with pytest.raises(ValueError):
        SlimmingConfig(cad_levels=1)


def test_p_mode_proposed_random_inverse():
    from workers.dance.slimming import SlimmingConfig, indicator_p

    p = np.random.default_rng(0).random(500)
    assert indicator_p(p, SlimmingConfig(), 0, "train") is not p
    np.testing.assert_allclose(indicator_p(p, SlimmingConfig(), 0, "train"), p)
    np.testing.assert_allclose(indicator_p(p, SlimmingConfig(p_mode="inverse"), 0, "train"), 1 - p)
    rnd = SlimmingConfig(p_mode="random")
    a = indicator_p(p, rnd, 0, "train")
    # independent of complexity: the same draws whatever p is, repeatable per (seed, split)
    np.testing.assert_array_equal(a, indicator_p(np.zeros(500), rnd, 0, "train"))
    assert not np.array_equal(a, indicator_p(p, rnd, 1, "train"))
    assert not np.array_equal(a, indicator_p(p, rnd, 0, "val"))
    assert abs(np.corrcoef(a, p)[0, 1]) < 0.15 and 0.4 < a.mean() < 0.6 and a.min() >= 0 and a.max() < 1
    with pytest.raises(ValueError):
        SlimmingConfig(p_mode="reversed")
