"""BDD100K semantic segmentation (the 10K subset): masks already hold train ids.

Current release layout: ``images/10k/SPLIT/*.jpg`` with ``labels/sem_seg/masks/SPLIT/*.png``.
The older "seg" release (``seg/images/SPLIT/*.jpg``, ``seg/labels/SPLIT/*_train_id.png``) is
read too. Mask values are the 19 Cityscapes train ids 0..18 and 255 (ignore); anything
else is an error.
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
from workers.data.datasets.base import IGNORE_INDEX, DatasetError, SegDataset
from workers.data.datasets.cityscapes import CLASS_NAMES, COLORS

LAYOUT = """  ROOT/images/10k/SPLIT/NAME.jpg
  ROOT/labels/sem_seg/masks/SPLIT/NAME.png      (SPLIT = train or val; values 0..18, 255)
or the older release:
  ROOT/seg/images/SPLIT/NAME.jpg
  ROOT/seg/labels/SPLIT/NAME_train_id.png"""

# bdd100k/bdd100k#103: the image zips published before June 2021 don't match the masks.
MISMATCH_HINT = (
    "; note: BDD100K 10k image archives published before June 2021 don't match the sem_seg masks "
    "(bdd100k/bdd100k issue #103) -- download the current 10K images archive"
)


def open_bdd100k(root: str | Path, split: str = "train") -> SegDataset:
    root = require_root(root)
    if (root / "images").is_dir() or not (root / "seg").is_dir():
        img_dir = require_dir(root / "images" / "10k" / split, f"image folder for split {split!r}", LAYOUT)
        lbl_dir = require_dir(root / "labels" / "sem_seg" / "masks" / split, f"mask folder for split {split!r}", LAYOUT)
        strip = ""
    else:
        img_dir = require_dir(root / "seg" / "images" / split, f"image folder for split {split!r}", LAYOUT)
        lbl_dir = require_dir(root / "seg" / "labels" / split, f"label folder for split {split!r}", LAYOUT)
        strip = "_train_id"
    images = by_stem(image_files(img_dir), img_dir)
    label_files = image_files(lbl_dir)
    if strip:
        # Only the *_train_id masks are labels; the colour renderings beside them are not.
        label_files = [p for p in label_files if p.stem.endswith(strip)]
    labels = by_stem(label_files, lbl_dir, strip=strip)
    for p in label_files:
        if p.suffix.lower() != ".png":
            raise DatasetError(f"{p}: masks must be PNG (JPEG compression corrupts label values)")
    samples = pair(
        images, labels,
        expected_label=lambda p: lbl_dir / (p.stem + strip + ".png"),
        expected_image=lambda p: img_dir / (p.stem[: len(p.stem) - len(strip)] + ".jpg"),
        hint=MISMATCH_HINT if not strip else "",
    )
    table = lookup({**{i: i for i in range(len(CLASS_NAMES))}, IGNORE_INDEX: IGNORE_INDEX})
    return SegDataset(
        kind="bdd100k", root=root, split=split, class_names=list(CLASS_NAMES),
        samples=require_samples(samples, img_dir, "images"),
        id_to_train=table, train_to_id=inverse(table, IGNORE_INDEX), label_mode="L",
        meta={"colors": COLORS},
    )
