"""Pascal VOC 2012 segmentation: the split list names images and palette-PNG labels.

``ROOT`` may be the ``VOC2012`` folder itself, the ``VOCdevkit`` folder holding it, or the
folder holding ``VOCdevkit``. Label palette indices are the 21 classes 0..20 and 255 (the
object-border "ignore" band); any other index is an error.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from workers.data.datasets._common import inverse, lookup, require_dir, require_root, require_samples
from workers.data.datasets.base import IGNORE_INDEX, DatasetError, Sample, SegDataset

CLASS_NAMES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]

LAYOUT = """  ROOT/JPEGImages/NAME.jpg
  ROOT/SegmentationClass/NAME.png            (palette PNG; indices 0..20, 255 = ignore)
  ROOT/ImageSets/Segmentation/SPLIT.txt      (one NAME per line; SPLIT = train, val, trainval)"""


def voc_palette() -> list[tuple[int, int, int]]:
    """The standard VOC colour map: bits of the index spread over R, G, B from the top bit down."""
    colors = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return colors


def _resolve(root: Path) -> Path:
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    return root


def open_voc(root: str | Path, split: str = "train") -> SegDataset:
    root = _resolve(require_root(root))
    img_dir = require_dir(root / "JPEGImages", "image folder", LAYOUT)
    lbl_dir = require_dir(root / "SegmentationClass", "label folder", LAYOUT)
    list_dir = require_dir(root / "ImageSets" / "Segmentation", "split-list folder", LAYOUT)
    list_file = list_dir / f"{split}.txt"
    if not list_file.is_file():
        present = ", ".join(sorted(p.stem for p in list_dir.glob("*.txt"))) or "none"
        raise DatasetError(f"{list_file}: split list not found (lists present: {present}); expected layout:\n{LAYOUT}")
    try:
        lines = list_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{list_file}: unreadable split list ({exc})") from None

    samples = []
    for lineno, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            continue
        image, label = img_dir / f"{name}.jpg", lbl_dir / f"{name}.png"
        for path, what in ((image, "image"), (label, "label")):
            if not path.is_file():
                raise DatasetError(f"{path}: {what} not found (named on line {lineno} of {list_file})")
        samples.append(Sample(image, label))

    table = lookup({**{i: i for i in range(len(CLASS_NAMES))}, IGNORE_INDEX: IGNORE_INDEX})
    palette = voc_palette()
    return SegDataset(
        kind="voc", root=root, split=split, class_names=list(CLASS_NAMES),
        samples=require_samples(samples, list_file, "image names"),
        id_to_train=table, train_to_id=inverse(table, IGNORE_INDEX), label_mode="P",
        meta={"colors": palette[: len(CLASS_NAMES)], "palette": np.asarray(palette, np.uint8).ravel().tolist()},
    )
