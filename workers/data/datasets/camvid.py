"""CamVid in the SegNet layout: ``SPLIT/`` images and ``SPLITannot/`` labels with the same names.

Labels hold the 11 SegNet classes as values 0..10 and 11 for void (-> 255 ignore); any
other value is an error.
"""
from __future__ import annotations

from pathlib import Path

from workers.data.datasets._common import (
    by_stem,
    image_files,
    inverse,
    lookup,
    pair,
    require_dir,
    require_root,
    require_samples,
)
from workers.data.datasets.base import IGNORE_INDEX, SegDataset

CLASS_NAMES = [
    "sky", "building", "pole", "road", "sidewalk", "tree", "sign_symbol", "fence", "car",
    "pedestrian", "bicyclist",
]
VOID_ID = 11
# SegNet's colours per train id, for visualisation.
COLORS = [
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
]

LAYOUT = """  ROOT/SPLIT/NAME.png        (SPLIT = train, val or test)
  ROOT/SPLITannot/NAME.png   (same NAME; values 0..10, 11 = void)"""


def open_camvid(root: str | Path, split: str = "train") -> SegDataset:
    root = require_root(root)
    img_dir = require_dir(root / split, f"image folder for split {split!r}", LAYOUT)
    lbl_dir = require_dir(root / f"{split}annot", f"label folder for split {split!r}", LAYOUT)
    images = by_stem(image_files(img_dir), img_dir)
    labels = by_stem(image_files(lbl_dir), lbl_dir)
    samples = pair(
        images, labels,
        expected_label=lambda p: lbl_dir / (p.stem + ".png"),
        expected_image=lambda p: img_dir / (p.stem + ".png"),
    )
    table = lookup({**{i: i for i in range(len(CLASS_NAMES))}, VOID_ID: IGNORE_INDEX})
    return SegDataset(
        kind="camvid", root=root, split=split, class_names=list(CLASS_NAMES),
        samples=require_samples(samples, img_dir, "images"),
        id_to_train=table, train_to_id=inverse(table, VOID_ID), label_mode="L",
        meta={"colors": COLORS},
    )
