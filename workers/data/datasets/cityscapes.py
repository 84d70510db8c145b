"""Cityscapes fine annotations: ``leftImg8bit/`` images with ``gtFine/*_labelIds.png`` labels.

Every official labelId 0..33 is a valid value: the 19 evaluation classes map to train ids
0..18, the other 15 to 255 (ignore). License plates (id -1) never appear in official
labelIds files: cityscapesScripts skips negative ids when rasterising, so plate pixels keep
the car's id. Values 34..255 are errors -- this also catches a ``_labelTrainIds.png`` file
(which contains 255) put where a labelIds file belongs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from workers.data.datasets._common import (
    available,
    by_stem,
    image_files,
    inverse,
    lookup,
    pair,
    require_dir,
    require_root,
    require_samples,
)
from workers.data.datasets.base import IGNORE_INDEX, DatasetError, SegDataset

# (labelId, name) of the 19 evaluation classes, in train-id order.
TRAIN_CLASSES: list[tuple[int, str]] = [
    (7, "road"), (8, "sidewalk"), (11, "building"), (12, "wall"), (13, "fence"), (17, "pole"),
    (19, "traffic light"), (20, "traffic sign"), (21, "vegetation"), (22, "terrain"), (23, "sky"),
    (24, "person"), (25, "rider"), (26, "car"), (27, "truck"), (28, "bus"), (31, "train"),
    (32, "motorcycle"), (33, "bicycle"),
]
CLASS_NAMES = [name for _, name in TRAIN_CLASSES]
# Official colours per train id, for visualisation.
COLORS = [
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
]
NUM_LABEL_IDS = 34  # labelIds 0..33
UNLABELED_ID = 0

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"

LAYOUT = """  ROOT/leftImg8bit/SPLIT/CITY/CITY_SEQ_FRAME_leftImg8bit.png
  ROOT/gtFine/SPLIT/CITY/CITY_SEQ_FRAME_gtFine_labelIds.png"""


def id_to_train_table() -> np.ndarray:
    valid = {i: IGNORE_INDEX for i in range(NUM_LABEL_IDS)}
    valid.update({label_id: t for t, (label_id, _) in enumerate(TRAIN_CLASSES)})
    return lookup(valid)


def open_cityscapes(root: str | Path, split: str = "train") -> SegDataset:
    root = require_root(root)
    img_root = require_dir(root / "leftImg8bit", "image folder", LAYOUT)
    lbl_root = require_dir(root / "gtFine", "label folder", LAYOUT)
    if not (img_root / split).is_dir():
        raise DatasetError(
            f"{img_root / split}: missing image folder for split {split!r} "
            f"(splits present: {available(img_root)}); expected layout:\n{LAYOUT}"
        )
    img_dir = img_root / split
    lbl_dir = require_dir(lbl_root / split, f"label folder for split {split!r}", LAYOUT)

    files = image_files(img_dir, recursive=True)
    for f in files:
        if not f.name.endswith(IMAGE_SUFFIX) or f.parent.parent != img_dir:
            raise DatasetError(f"{f}: not a Cityscapes image name; expected layout:\n{LAYOUT}")
    labels = [p for p in lbl_dir.rglob(f"*{LABEL_SUFFIX}") if not p.name.startswith(".")]
    images = by_stem(files, img_dir, strip=IMAGE_SUFFIX[:-4])
    label_map = by_stem(labels, lbl_dir, strip=LABEL_SUFFIX[:-4])

    def expected_label(img: Path) -> Path:
        return lbl_dir / img.parent.name / (img.name[: -len(IMAGE_SUFFIX)] + LABEL_SUFFIX)

    def expected_image(lbl: Path) -> Path:
        return img_dir / lbl.parent.name / (lbl.name[: -len(LABEL_SUFFIX)] + IMAGE_SUFFIX)

    samples = require_samples(pair(images, label_map, expected_label, expected_image), img_dir, "images")
    table = id_to_train_table()
    return SegDataset(
        kind="cityscapes", root=root, split=split, class_names=list(CLASS_NAMES), samples=samples,
        id_to_train=table, train_to_id=inverse(table, UNLABELED_ID), label_mode="L",
        meta={"colors": COLORS, "label_suffix": LABEL_SUFFIX, "image_suffix": IMAGE_SUFFIX},
    )
