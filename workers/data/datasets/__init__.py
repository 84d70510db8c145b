"""Segmentation datasets read from their standard on-disk layouts.

``open_dataset(kind, root, split)`` checks the layout and pairs every image with its label
up front; decoding is lazy (``load_image`` / ``load_label``). Every problem raises one
:class:`DatasetError` whose message starts with the offending path.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from workers.data.datasets.base import IGNORE_INDEX, DatasetError, Sample, SegDataset
from workers.data.datasets.bdd100k import open_bdd100k
from workers.data.datasets.camvid import open_camvid
from workers.data.datasets.cityscapes import open_cityscapes
from workers.data.datasets.voc import open_voc

_OPENERS: dict[str, Callable[[str | Path, str], SegDataset]] = {
    "cityscapes": open_cityscapes,
    "camvid": open_camvid,
    "bdd100k": open_bdd100k,
    "voc": open_voc,
}
DATASET_KINDS: tuple[str, ...] = tuple(_OPENERS)


def open_dataset(kind: str, root: str | Path, split: str = "train") -> SegDataset:
    """One split of a dataset of ``kind`` (one of :data:`DATASET_KINDS`) stored under ``root``."""
    opener = _OPENERS.get(str(kind).lower())
    if opener is None:
        raise DatasetError(f"unknown dataset kind {kind!r}; expected one of {', '.join(DATASET_KINDS)}")
    return opener(root, split)


__all__ = ["DATASET_KINDS", "IGNORE_INDEX", "DatasetError", "Sample", "SegDataset", "open_dataset"]
