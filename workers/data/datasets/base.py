"""Common shape of every segmentation dataset the platform reads.

A dataset is a list of (image, label) file pairs plus the class table that maps the
dataset's own label ids to contiguous train ids (255 = ignore). Loading is lazy; every
problem with the files raises :class:`DatasetError` naming the offending path, at
construction (layout, pairing) or at load time (unreadable or out-of-range files).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IGNORE_INDEX = 255


class DatasetError(Exception):
    """A dataset on disk is missing, incomplete or malformed; the message names the file."""


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path


@dataclass
class SegDataset:
    """A split of a segmentation dataset.

    ``id_to_train`` maps every label value found in the label files to a train id
    (0..num_classes-1, or 255 for ignore); a value absent from the table is an error.
    ``train_to_id`` is the inverse used by ``dance predict`` to write labels in the
    dataset's own ids.
    """

    kind: str
    root: Path
    split: str
    class_names: list[str]
    samples: list[Sample]
    id_to_train: np.ndarray  # uint8 lookup table of length 256; 254 marks "not a valid value"
    train_to_id: np.ndarray  # uint8 table of length 256 mapping train id -> dataset id
    label_mode: str = "L"  # PIL mode of label files ("L" grayscale or "P" palette)
    meta: dict = field(default_factory=dict)

    INVALID = 254  # marker in id_to_train for values that must not occur

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def image_paths(self) -> list[Path]:
        return [s.image for s in self.samples]

    def load_image(self, i: int) -> np.ndarray:
        """RGB uint8 array (H, W, 3) of sample ``i``."""
        from workers.data.imageio import read_rgb

        return read_rgb(self.samples[i].image)

    def load_label(self, i: int) -> np.ndarray:
        """Train-id uint8 array (H, W) of sample ``i``, 255 = ignore."""
        from workers.data.imageio import read_label

        path = self.samples[i].label
        raw = read_label(path)
        mapped = self.id_to_train[raw]
        if (mapped == self.INVALID).any():
            bad = sorted(set(np.unique(raw[mapped == self.INVALID]).tolist()))
            raise DatasetError(
                f"{path}: label values {bad[:10]} are not classes of {self.kind} "
                f"(expected ids {self.valid_ids()})"
            )
        img_size = self.image_size(i)
        if raw.shape != (img_size[1], img_size[0]):
            raise DatasetError(
                f"{path}: label is {raw.shape[1]}x{raw.shape[0]} but its image "
                f"{self.samples[i].image} is {img_size[0]}x{img_size[1]}"
            )
        return mapped

    def image_size(self, i: int) -> tuple[int, int]:
        """(width, height) of sample ``i``'s image, read from the file header only."""
        from workers.data.imageio import read_size

        return read_size(self.samples[i].image)

    def valid_ids(self) -> list[int]:
        return [v for v in range(256) if self.id_to_train[v] != self.INVALID]

    def to_dataset_ids(self, train_ids: np.ndarray) -> np.ndarray:
        """Map a train-id map back to the dataset's own label ids (for predictions)."""
        return self.train_to_id[train_ids]
