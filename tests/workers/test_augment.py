"""data.augment: scale jitter cropped back to the CAD size (FLOPs stay exact), flips, seeded draws."""
from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from workers.config import DataConfig
from workers.data.augment import augment_pair, draw_rng
from workers.data.datasets.base import IGNORE_INDEX


def _pair(h=40, w=80):
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[:, : w // 2] = 255  # left half white
    lab = np.zeros((h, w), dtype=np.uint8)
    lab[:, : w // 2] = 1
    return img, lab


def test_output_is_always_the_cad_size_and_labels_stay_aligned():
    img, lab = _pair()
    scales, flips = [], 0
    for key in range(60):
        rng = draw_rng(0, 3, key)
        out_img, out_lab = augment_pair(img, lab, (24, 48), (0.75, 1.25), rng)
        assert out_img.shape == (24, 48, 3) and out_lab.shape == (24, 48)
        labelled = out_lab != IGNORE_INDEX
        # label 1 exactly where the image is white, wherever the crop, the padding or the flip put it
        white = out_img[..., 0] > 128
        assert np.mean(white[labelled] == (out_lab[labelled] == 1)) > 0.97
        scales.append(labelled.mean())
        flips += bool(out_lab[labelled.any(axis=1)][0, -1] == 1) if labelled.any() else 0
    assert min(scales) < 0.95 and max(scales) == 1.0   # padded (s < 1) and cropped (s ≥ 1) draws both happen
    assert 10 < flips < 50                              # flipped about half the time


def test_draws_are_replayed_from_their_key():
    img, lab = _pair()
    a = augment_pair(img, lab, (24, 48), (0.75, 1.25), draw_rng(7, 1, 99))
    b = augment_pair(img, lab, (24, 48), (0.75, 1.25), draw_rng(7, 1, 99))
    c = augment_pair(img, lab, (24, 48), (0.75, 1.25), draw_rng(7, 1, 100))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not (np.array_equal(a[0], c[0]) and np.array_equal(a[1], c[1]))


def test_augment_is_off_by_default_and_its_range_is_checked():
    assert DataConfig().augment is False
    with pytest.raises(ValidationError, match="augment_scale"):
        DataConfig(augment_scale=(1.2, 0.8))
