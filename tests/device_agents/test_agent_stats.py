"""Integration over exactly a window, and the small statistics."""

import math

import pytest

from device_agents import stats

NAN = float("nan")


def test_trapezoid_is_exact_on_piecewise_linear_power():
    # power ramps 0 -> 10 W over 0..1 s then stays at 10 W until 2 s
    ts = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0]
    ps = [0.0, 2.5, 5.0, 7.5, 10.0, 10.0, 10.0]
    r = stats.integrate_power(ts, ps, 0.0, 2.0)
    assert r["energy_j"] == pytest.approx(5.0 + 10.0)
    assert r["samples"] == 7 and not r["held"]


def test_window_is_cut_at_exactly_t0_t1_between_samples():
    ts = [0.0, 1.0, 2.0, 3.0]
    ps = [0.0, 10.0, 20.0, 30.0]  # P(t) = 10 t
    r = stats.integrate_power(ts, ps, 0.4, 2.6)
    # integral of 10 t from 0.4 to 2.6 = 5 (2.6^2 - 0.4^2) = 33.0
    assert r["energy_j"] == pytest.approx(33.0)
    assert r["samples"] == 2


def test_window_beyond_samples_is_held_and_flagged():
    r = stats.integrate_power([1.0, 2.0], [4.0, 4.0], 0.5, 2.5)
    assert r["energy_j"] == pytest.approx(8.0)
    assert r["held"]


def test_nan_samples_are_skipped_not_zero():
    ts = [0.0, 1.0, 2.0]
    r = stats.integrate_power(ts, [5.0, NAN, 5.0], 0.0, 2.0)
    assert r["energy_j"] == pytest.approx(10.0)  # a zero would give 5.0
    assert r["samples"] == 2
    none = stats.integrate_power(ts, [NAN, NAN, NAN], 0.0, 2.0)
    assert none["energy_j"] is None


def test_counter_difference_interpolated_at_edges():
    ts = [0.0, 1.0, 2.0, 3.0]
    e = [100.0, 105.0, 115.0, 120.0]
    r = stats.integrate_counter(ts, e, 0.5, 2.5)
    # E(0.5) = 102.5, E(2.5) = 117.5
    assert r["energy_j"] == pytest.approx(15.0)
    assert r["samples"] == 2
    assert stats.integrate_counter(ts, e, -1.0, 2.0)["energy_j"] is None


def test_percentiles_match_numpy_linear():
    np = pytest.importorskip("numpy")
    xs = [3.1, 0.2, 9.9, 4.4, 4.4, 7.0, 1.5, 8.25, 2.0, 6.6, 5.5]
    for q in (0, 10, 50, 90, 99, 100):
        assert stats.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert stats.percentile([], 50) is None


def test_weighted_percentile_of_a_mixture():
    # 75 % of the mass at 10 ms, 25 % at 100 ms
    groups = [(0.75, [10.0] * 3), (0.25, [100.0] * 7)]
    assert stats.weighted_percentile(groups, 50) == 10.0
    assert stats.weighted_percentile(groups, 74) == 10.0
    assert stats.weighted_percentile(groups, 76) == 100.0
    assert stats.weighted_percentile(groups, 99) == 100.0


def test_cv_and_mean():
    assert stats.cv([1.0, 1.0, 1.0]) == 0.0
    assert stats.cv([9.0, 11.0]) == pytest.approx(math.sqrt(2.0) / 10.0)
    assert stats.cv([1.0]) is None
    assert stats.mean([None, 2.0, 4.0]) == 3.0
    lat = stats.latency_summary([1.0, 2.0, 3.0, 4.0])
    assert lat["p50"] == 2.5 and lat["min"] == 1.0 and lat["max"] == 4.0
