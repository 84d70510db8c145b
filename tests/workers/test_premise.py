"""The premise check's statistics (workers/premise.py): Spearman with its bootstrap interval, tercile drops, verdict."""
import numpy as np
import pytest
from scipy.stats import spearmanr

from workers.metrics import ConfusionMatrix
from workers.premise import (
    DOES_NOT_HOLD,
    HOLDS,
    PREMISE_MIOU_DROP,
    PREMISE_SPEARMAN,
    PREMISE_SPEARMAN_HI,
    PREMISE_SPEARMAN_LO,
    UNCLEAR,
    ImageFigures,
    Interval,
    miou_of,
    premise_figures,
    spearman_interval,
    terciles_of,
    verdict,
)

C = 3  # classes of the made-up confusion matrices


def _confusions(errors: np.ndarray, pixels: int = 300) -> np.ndarray:
    """(N, C, C): every class has pixels/C true pixels, ``errors[i]`` of class 1 predicted as class 0."""
    out = np.zeros((len(errors), C, C), dtype=np.int64)
    per = pixels // C
    for i, e in enumerate(errors.astype(int)):
        out[i] = np.diag([per] * C)
        out[i, 1, 1] -= e
        out[i, 1, 0] += e
    return out


def _figures(sc: np.ndarray, loss: np.ndarray, scaled_errors: np.ndarray) -> ImageFigures:
    return ImageFigures(loss=loss, confusion_full=_confusions(np.zeros(len(sc))),
                        confusion_scaled=_confusions(scaled_errors))


def test_terciles_split_by_rank_into_near_equal_thirds():
    sc = np.array([5.0, 1.0, 3.0, 9.0, 7.0, 2.0, 8.0])
    t = terciles_of(sc)
    assert np.bincount(t).tolist() == [3, 2, 2]
    assert sc[t == 0].max() < sc[t == 1].min() and sc[t == 1].max() < sc[t == 2].min()


def test_miou_matches_the_confusion_matrix_class():
    rng = np.random.default_rng(0)
    m = rng.integers(0, 50, size=(4, 4))
    m[3] = 0  # a class absent from the labels is still scored if it was predicted; absent from both is left out
    m[:, 3] = 0
    cm = ConfusionMatrix(4)
    import torch

    cm.matrix = torch.from_numpy(m)
    assert miou_of(m) == pytest.approx(cm.miou())
    assert np.isnan(miou_of(np.zeros((4, 4))))


def test_the_premise_holds_by_construction():
    rng = np.random.default_rng(1)
    sc = rng.uniform(0.1, 1.0, 60)
    loss = sc + rng.normal(0, 0.05, 60)  # harder with complexity
    scaled_errors = np.round(60 * sc)  # downsampling costs complex images more
    res = premise_figures(sc, _figures(sc, loss, scaled_errors), resamples=300, seed=0)
    assert res.spearman.lo > 0.8 and res.spearman.value == pytest.approx(spearmanr(sc, loss).statistic)
    assert res.drops[0] < res.drops[1] < res.drops[2] and res.trend.lo > 0
    assert res.verdict == HOLDS
    m = res.metrics()
    assert {PREMISE_SPEARMAN, PREMISE_SPEARMAN_LO, PREMISE_SPEARMAN_HI, *PREMISE_MIOU_DROP} <= set(m)


def test_the_premise_does_not_hold_when_loss_falls_with_complexity():
    rng = np.random.default_rng(2)
    sc = rng.uniform(0.1, 1.0, 60)
    loss = 1.0 - sc + rng.normal(0, 0.05, 60)
    res = premise_figures(sc, _figures(sc, loss, np.full(60, 20.0)), resamples=300, seed=0)
    assert res.spearman.hi <= 0
    assert res.verdict == DOES_NOT_HOLD


def test_a_falling_drop_beyond_the_noise_overrules_a_positive_spearman():
    rng = np.random.default_rng(3)
    sc = rng.uniform(0.1, 1.0, 60)
    loss = sc + rng.normal(0, 0.05, 60)
    res = premise_figures(sc, _figures(sc, loss, np.round(60 * (1.1 - sc))), resamples=300, seed=0)
    assert res.spearman.lo > 0 and res.trend.hi < 0
    assert res.verdict == DOES_NOT_HOLD


def test_noise_gives_unclear():
    rng = np.random.default_rng(4)
    sc = rng.uniform(0.1, 1.0, 30)
    loss = rng.normal(1.0, 0.2, 30)  # unrelated to SC
    res = premise_figures(sc, _figures(sc, loss, rng.integers(10, 30, 30).astype(float)), resamples=300, seed=0)
    assert res.spearman.lo < 0 < res.spearman.hi
    assert res.verdict == UNCLEAR


@pytest.mark.parametrize("rho,trend,expected", [
    ((0.3, 0.1, 0.5), (0.02, -0.01, 0.05), HOLDS),
    ((0.3, 0.1, 0.5), (-0.01, -0.03, 0.01), UNCLEAR),  # Spearman clear, the drop flat within noise
    ((0.1, -0.1, 0.3), (0.02, 0.01, 0.03), UNCLEAR),  # the drop grows, Spearman's interval spans 0
    ((-0.2, -0.4, 0.0), (0.02, 0.01, 0.03), DOES_NOT_HOLD),  # an interval reaching 0 from below is "at or below"
    ((0.3, 0.1, 0.5), (-0.03, -0.05, -0.01), DOES_NOT_HOLD),
    ((float("nan"),) * 3, (0.02, 0.01, 0.03), UNCLEAR),
])
def test_verdict_rule(rho, trend, expected):
    assert verdict(Interval(*rho), Interval(*trend)) == expected


def test_bootstrap_interval_covers_the_population_value():
    """Spearman's ρ of a bivariate normal is (6/π)·asin(r/2); a 95 % interval should cover it ~95 % of the time."""
    r = 0.5
    truth = 6 / np.pi * np.arcsin(r / 2)
    rng = np.random.default_rng(5)
    cov = [[1.0, r], [r, 1.0]]
    hits = 0
    trials = 150
    widths = []
    for k in range(trials):
        xy = rng.multivariate_normal([0, 0], cov, size=60)
        iv = spearman_interval(xy[:, 0], xy[:, 1], resamples=400, seed=k)
        assert iv.lo <= iv.value <= iv.hi
        hits += iv.lo <= truth <= iv.hi
        widths.append(iv.hi - iv.lo)
    assert 0.85 <= hits / trials <= 0.99
    assert 0.2 < np.mean(widths) < 0.6  # about 2·1.96·(1−ρ²)/√n


def test_bootstrap_is_seeded_and_skips_nan_pairs():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=40), rng.normal(size=40)
    assert spearman_interval(x, y, seed=3) == spearman_interval(x, y, seed=3)
    y2 = y.copy()
    y2[0] = np.nan
    assert spearman_interval(x, y2, seed=3).value == pytest.approx(spearmanr(x[1:], y[1:]).statistic)


def test_too_few_images_is_an_error():
    sc = np.arange(5.0)
    with pytest.raises(ValueError, match="at least 6 images"):
        premise_figures(sc, _figures(sc, sc, np.zeros(5)))
