"""Torch datasets that hand each image to the network at its DANCE size.

Training samples are resized to their CAD bucket size (bilinear for the image, nearest
neighbour for the label) and carry their CAL weight; evaluation samples are resized
the same way but keep the full-resolution label, because logits are scored after being
upsampled back to it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from workers.data.datasets.base import SegDataset

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255.0
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255.0


def to_input(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → normalised (3, H, W) float32, ImageNet statistics."""
    x = (rgb.astype(np.float32) - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if rgb.shape[:2] == (h, w):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if label.shape == (h, w):
        return label
    return np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))


class SlimmedTrainSet(Dataset):
    """(image, label, weight, index) at each image's quantised CAD size, augmented when asked."""

    def __init__(self, dataset: SegDataset, sizes: Sequence[tuple[int, int]], weights: np.ndarray, *,
                 augment_scale: tuple[float, float] | None = None, seed: int = 0) -> None:
        self.dataset, self.sizes = dataset, list(sizes)
        self.weights = np.asarray(weights, dtype=np.float32)
        self.augment_scale, self.seed = augment_scale, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple) -> dict:
        """``key`` is an index, or ``(index, (height, width)[, draw key])`` as the DANCE sampler yields it."""
        i, size, draw = (key, self.sizes[key], 0) if not isinstance(key, tuple) else (
            (key[0], key[1], key[2] if len(key) > 2 else 0))
        image, label = self.dataset.load_image(i), self.dataset.load_label(i)
        if self.augment_scale is not None:
            from workers.data.augment import augment_pair, draw_rng

            image, label = augment_pair(image, label, size, self.augment_scale, draw_rng(self.seed, i, draw))
        else:
            image, label = resize_rgb(image, size), resize_label(label, size)
        return {
            "image": to_input(image),
            "label": torch.from_numpy(label.astype(np.int64)),
            "weight": torch.tensor(self.weights[i]),
            "index": i,
        }


class SlimmedEvalSet(Dataset):
    """(image at its DANCE size, label at full resolution, index)."""

    def __init__(self, dataset: SegDataset, sizes: Sequence[tuple[int, int]]) -> None:
        self.dataset, self.sizes = dataset, list(sizes)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        image = resize_rgb(self.dataset.load_image(i), self.sizes[i])
        return {
            "image": to_input(image),
            "label": torch.from_numpy(self.dataset.load_label(i).astype(np.int64)),
            "index": i,
        }


def collate_eval(items: list[dict]) -> dict:
    """Stack images (one size per batch); labels stay a list since full sizes may differ."""
    return {
        "image": torch.stack([it["image"] for it in items]),
        "label": [it["label"] for it in items],
        "index": [it["index"] for it in items],
    }
