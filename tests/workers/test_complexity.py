"""Eq. 1 against hand-worked values, scipy's Sobel, and the streaming scorer with its cache."""
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from workers.dance.complexity import luma, sc_mean, sc_mean_numpy
from workers.data.scoring import score_paths


def gray_image(values: np.ndarray) -> np.ndarray:
    """R = G = B, so BT.601 luma equals the value exactly (weights sum to 1)."""
    return np.repeat(np.asarray(values, dtype=np.uint8)[..., None], 3, axis=2)


def test_vertical_edge_by_hand():
    # columns 0, 0, 100: s_h = 4·(x[c+1] − x[c−1]) with replicate padding → 0, 400, 400; s_v = 0
    img = gray_image([[0, 0, 100], [0, 0, 100]])
    assert sc_mean_numpy(img) == pytest.approx(800 / 3, rel=1e-6)


def test_single_dot_by_hand():
    # a dot of 9 in a 3×3 field: the 4 edge-neighbours see |∇| = 2·9, the 4 corners 9·√2, the centre 0
    img = gray_image([[0, 0, 0], [0, 9, 0], [0, 0, 0]])
    assert sc_mean_numpy(img) == pytest.approx(9 * (8 + 4 * math.sqrt(2)) / 9, rel=1e-6)


def test_flat_image_is_zero():
    assert sc_mean_numpy(gray_image(np.full((5, 6), 77))) == 0.0


def test_luma_is_bt601():
    px = torch.tensor([[[[255, 0, 0], [0, 255, 0], [0, 0, 255]]]], dtype=torch.uint8)
    np.testing.assert_allclose(luma(px)[0, 0].numpy(), [0.299 * 255, 0.587 * 255, 0.114 * 255], rtol=1e-6)


@pytest.mark.parametrize("shape", [(2, 2), (7, 5), (40, 64)])
def test_matches_scipy_sobel_batched(shape):
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (3, *shape, 3), dtype=np.uint8)
    gray = batch.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    ref = [np.hypot(ndimage.sobel(g, axis=1, mode="nearest"), ndimage.sobel(g, axis=0, mode="nearest")).mean()
           for g in gray]
    np.testing.assert_allclose(sc_mean(torch.from_numpy(batch)).numpy(), ref, rtol=1e-5)


def _write_images(folder, n, rng, shape=(24, 32)):
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        arr[:, : shape[1] // 2] //= (i + 1)  # vary complexity across files
        path = folder / f"img{i:02d}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def test_scorer_matches_direct_and_uses_cache(tmp_path):
    rng = np.random.default_rng(2)
    paths = _write_images(tmp_path, 7, rng)
    paths += _write_images(tmp_path / "big", 0, rng)
    (tmp_path / "odd").mkdir()
    odd = tmp_path / "odd" / "x.png"
    Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(odd)
    paths.insert(3, odd)  # a differently sized image in the middle must not break batching
    cache = tmp_path / "cache"
    direct = [sc_mean_numpy(np.asarray(Image.open(p).convert("RGB"))) for p in paths]
    first = score_paths(paths, cache_dir=cache, batch_size=3)
    np.testing.assert_allclose(first, direct, rtol=1e-6)
    assert len(list((cache / "complexity").glob("*.npz"))) == 1

    calls = []
    second = score_paths(paths, cache_dir=cache, progress=lambda d, t: calls.append((d, t)))
    np.testing.assert_array_equal(first, second)
    assert calls == [(len(paths), len(paths))]  # nothing re-scored

    # touching one file re-scores that file only
    Image.fromarray(np.zeros((24, 32, 3), dtype=np.uint8)).save(paths[0])
    os.utime(paths[0], ns=(1, 1))
    calls.clear()
    third = score_paths(paths, cache_dir=cache, progress=lambda d, t: calls.append((d, t)))
    assert third[0] == 0.0 and calls[0] == (len(paths) - 1, len(paths))
    np.testing.assert_array_equal(third[1:], first[1:])


def test_scorer_survives_unwritable_cache(tmp_path):
    paths = _write_images(tmp_path, 3, np.random.default_rng(3))
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    scores = score_paths(paths, cache_dir=blocker)
    assert np.isfinite(scores).all()


def test_scorer_names_corrupt_file(tmp_path):
    from workers.data.datasets.base import DatasetError

    paths = _write_images(tmp_path, 2, np.random.default_rng(4))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match="bad.png"):
        score_paths(paths + [bad], cache_dir=tmp_path / "c")


@pytest.mark.parametrize("rows", [1, 2, 3, 7, 1000])
def test_strip_size_does_not_change_the_result(rows):
    rng = np.random.default_rng(5)
    batch = torch.from_numpy(rng.integers(0, 256, (2, 9, 11, 3), dtype=np.uint8))
    np.testing.assert_allclose(sc_mean(batch, strip_rows=rows).numpy(), sc_mean(batch, strip_rows=9).numpy(), rtol=1e-6)
