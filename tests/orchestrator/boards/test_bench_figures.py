"""dance bench's arithmetic: expected J/image over the bucket distribution plus the scoring cost,
mixture latency quantiles, and figures absent (never 0) where nothing was measured."""
import pytest

from orchestrator.boards.figures import Measurement, _mix_quantile, figures
from orchestrator.boards.inventory import Board, board_groups


def _m(purpose, h, w, frac, e=None, lat=None, step=None):
    r = {"energy_j_per_image_gross": e, "energy_j_per_image_net": None if e is None else e / 2,
         "latency_ms": lat or {"min": 1.0, "p50": 2.0, "p90": 3.0, "p99": 4.0, "max": 5.0}}
    if step is not None:
        r["energy_j_per_step_gross"] = step
    return Measurement("k", purpose, h, w, frac, result=r)


def test_expected_energy_is_fraction_weighted_plus_scoring():
    ms = [_m("infer", 64, 128, 0.75, 2.0), _m("infer", 32, 64, 0.25, 1.0), _m("score", 128, 256, 1.0, 0.1)]
    f = figures("k", ms)
    assert f["device.k.network_energy_j_per_image"] == pytest.approx(0.75 * 2.0 + 0.25 * 1.0)
    assert f["device.k.scoring_energy_j_per_image"] == pytest.approx(0.1)
    assert f["device.k.energy_j_per_image"] == pytest.approx(1.75 + 0.1)
    assert f["device.k.energy_j_per_image_net"] == pytest.approx((1.75 + 0.1) / 2)
    assert f["device.k.b64x128.energy_j_per_image"] == 2.0
    assert "device.k.train_energy_j_per_step" not in f


def test_unmeasured_energy_is_absent_not_zero():
    f = figures("k", [_m("infer", 64, 128, 0.5, 2.0), _m("infer", 32, 64, 0.5, None)])
    assert not [k for k in f if k.endswith("energy_j_per_image") and not k.startswith("device.k.b64")]
    assert f["device.k.latency_ms_p50"] > 0  # latency is still there
    f = figures("k", [_m("infer", 64, 128, 1.0, 2.0), _m("score", 64, 128, 1.0, None)])
    assert "device.k.energy_j_per_image" not in f  # scoring cost unknown: the total is unknown


def test_training_energy_per_step_is_fraction_weighted():
    f = figures("k", [_m("infer", 64, 128, 0.75, 1.0), _m("infer", 32, 64, 0.25, 1.0),
                      _m("train", 64, 128, 0.75, step=4.0), _m("train", 32, 64, 0.25, step=2.0)])
    assert f["device.k.train_energy_j_per_step"] == pytest.approx(3.5)


def test_mixture_quantiles():
    a = {"min": 1.0, "p50": 2.0, "p90": 3.0, "p99": 4.0, "max": 5.0}
    b = {"min": 11.0, "p50": 12.0, "p90": 13.0, "p99": 14.0, "max": 15.0}
    assert _mix_quantile([(1.0, a)], 0.5) == pytest.approx(2.0, abs=1e-6)
    assert _mix_quantile([(1.0, a)], 0.9) == pytest.approx(3.0, abs=1e-6)
    # 75 % of images in the fast bucket: the median is the fast bucket's p(2/3), p90 lies in the slow one
    assert 2.0 < _mix_quantile([(0.75, a), (0.25, b)], 0.5) < 3.0
    assert 11.0 < _mix_quantile([(0.75, a), (0.25, b)], 0.9) < 13.0
    assert _mix_quantile([(1.0, {"p50": None})], 0.5) is None


def test_boards_with_the_same_labels_are_one_kind():
    bs = [Board(name="a", transport="local", labels=["tx2"]), Board(name="b", transport="local", labels=["tx2"]),
          Board(name="c", transport="local", labels=["orin"]), Board(name="d", transport="local")]
    ks = {k.name: [b.name for b in k.boards] for k in board_groups(bs)}
    assert ks == {"tx2": ["a", "b"], "c": ["c"], "d": ["d"]}


def test_scoring_sizes_come_from_the_validation_images(tmp_path):
    from orchestrator.boards.scoring import stored_sizes
    from workers.data.synth import generate_dataset

    generate_dataset(tmp_path / "synth", n_train=1, n_val=3, size=(64, 128))
    cfg = {"data": {"kind": "cityscapes", "root": str(tmp_path / "synth")}, "slimming": {"cad": True}}
    assert stored_sizes(cfg) == [(64, 128, 1.0)]
    assert stored_sizes({**cfg, "slimming": {"cad": False}}) is None  # no CAD: inference scores nothing
    assert stored_sizes({"data": {"kind": "cityscapes", "root": str(tmp_path / "none")},
                         "slimming": {"cad": True}}) is None


def test_one_pool_per_journal(tmp_path):
    from orchestrator.boards.journal import Journal
    from orchestrator.errors import UserError

    j = Journal(tmp_path / "j.sqlite")
    with pytest.raises(UserError, match="in use by pid"):
        Journal(tmp_path / "j.sqlite")
    j.close()
    Journal(tmp_path / "j.sqlite").close()  # free again once the first is closed
