"""Training augmentation (``data.augment``): random scale, then a crop back to the image's CAD size, and a flip.

One resize takes the stored image straight to ``s ×`` its CAD size (s drawn from
``data.augment_scale``), and a random window of exactly the CAD size is cut from it
(padded with the mean colour and the ignore label where s < 1). The network therefore sees
the CAD size whatever the jitter, so the counted FLOPs stay exact, and every arm of a
comparison is augmented the same way. Draws come from a generator seeded by (run seed,
image, draw key), so a resumed run replays them.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from workers.data.datasets.base import IGNORE_INDEX

_MEAN_RGB = np.array([124, 116, 104], dtype=np.uint8)  # ImageNet mean: 0 after normalisation


def augment_pair(image: np.ndarray, label: np.ndarray, size: tuple[int, int], scale: tuple[float, float],
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(stored image, stored label) → (image, label) of exactly ``size`` = (height, width), jittered."""
    h, w = size
    s = float(rng.uniform(scale[0], scale[1]))
    sh, sw = max(1, int(round(h * s))), max(1, int(round(w * s)))
    img = np.asarray(Image.fromarray(image).resize((sw, sh), Image.BILINEAR))
    lab = np.asarray(Image.fromarray(label).resize((sw, sh), Image.NEAREST))
    out_img = np.empty((h, w, 3), dtype=np.uint8)
    out_img[:] = _MEAN_RGB
    out_lab = np.full((h, w), IGNORE_INDEX, dtype=label.dtype)
    # A window of the CAD size over the scaled image: cropped where it is larger, padded where smaller.
    oy, ox = int(rng.integers(0, abs(sh - h) + 1)), int(rng.integers(0, abs(sw - w) + 1))
    src_y, dst_y = (slice(oy, oy + h), slice(0, h)) if sh >= h else (slice(0, sh), slice(oy, oy + sh))
    src_x, dst_x = (slice(ox, ox + w), slice(0, w)) if sw >= w else (slice(0, sw), slice(ox, ox + sw))
    out_img[dst_y, dst_x] = img[src_y, src_x]
    out_lab[dst_y, dst_x] = lab[src_y, src_x]
    if rng.random() < 0.5:
        out_img, out_lab = out_img[:, ::-1], out_lab[:, ::-1]
    return np.ascontiguousarray(out_img), np.ascontiguousarray(out_lab)


def draw_rng(seed: int, index: int, key: int) -> np.random.Generator:
    """The generator of one draw of one image (``key`` tells an image's draws apart: epoch, step, slot)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index), int(key), 0xA6]))
