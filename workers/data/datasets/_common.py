"""Layout helpers shared by the dataset readers: folder checks, file listing, pairing."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from workers.data.datasets.base import IGNORE_INDEX, DatasetError, Sample, SegDataset

IMAGE_EXTS = (".png", ".jpg", ".jpeg")


def require_root(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetError(f"{path}: dataset root not found (or not a folder)")
    return path


def require_dir(path: Path, what: str, layout: str) -> Path:
    """``path`` must be a folder; otherwise the error shows the layout the reader expects."""
    if not path.is_dir():
        raise DatasetError(f"{path}: missing {what}; expected layout:\n{layout}")
    return path


def available(folder: Path, suffix: str = "") -> str:
    """Comma list of sub-folder names (with ``suffix`` stripped) for 'did you mean' hints."""
    if not folder.is_dir():
        return "none"
    names = sorted(p.name[: len(p.name) - len(suffix)] if suffix else p.name
                   for p in folder.iterdir() if p.is_dir() and p.name.endswith(suffix) and not p.name.startswith("."))
    return ", ".join(names) or "none"


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files under ``folder``; hidden files (.DS_Store, ._x) and non-image files don't count."""
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".") and p.is_file())


def pair(
    images: dict[str, Path],
    labels: dict[str, Path],
    expected_label: Callable[[Path], Path],
    expected_image: Callable[[Path], Path],
    hint: str = "",
) -> list[Sample]:
    """Samples for matching keys, sorted; any unmatched file is an error naming it.

    ``expected_label(image)`` / ``expected_image(label)`` give the path the partner
    should have had, so the message says exactly what is missing.
    """
    lonely_images = sorted(k for k in images if k not in labels)
    if lonely_images:
        first = images[lonely_images[0]]
        more = _more(len(lonely_images) - 1, "image has no label", "images have no label")
        raise DatasetError(f"{first}: image has no label (expected {expected_label(first)}){more}{hint}")
    lonely_labels = sorted(k for k in labels if k not in images)
    if lonely_labels:
        first = labels[lonely_labels[0]]
        more = _more(len(lonely_labels) - 1, "label has no image", "labels have no image")
        raise DatasetError(f"{first}: label has no image (expected {expected_image(first)}){more}{hint}")
    return [Sample(images[k], labels[k]) for k in sorted(images)]


def _more(n: int, one: str, many: str) -> str:
    return "" if n <= 0 else f" (and {n} more {one if n == 1 else many})"


def by_stem(files: Iterable[Path], folder: Path, strip: str = "") -> dict[str, Path]:
    """Key files by their name without extension (and without ``strip``); duplicates are errors."""
    out: dict[str, Path] = {}
    for f in files:
        key = f.relative_to(folder).with_suffix("").as_posix()
        if strip and key.endswith(strip):
            key = key[: -len(strip)]
        if key in out:
            raise DatasetError(f"{f}: two files for the same sample ({out[key].name} and {f.name})")
        out[key] = f
    return out


def require_samples(samples: list[Sample], folder: Path, what: str) -> list[Sample]:
    if not samples:
        raise DatasetError(f"{folder}: no {what} found (empty split)")
    return samples


def lookup(valid: dict[int, int]) -> np.ndarray:
    """256-entry id->train table; every value not in ``valid`` is INVALID."""
    table = np.full(256, SegDataset.INVALID, dtype=np.uint8)
    for value, train in valid.items():
        table[value] = train
    return table


def inverse(id_to_train: np.ndarray, ignore_id: int) -> np.ndarray:
    """train->id table: each train id maps to its lowest dataset id; 255 (and unused) to ``ignore_id``."""
    table = np.full(256, ignore_id, dtype=np.uint8)
    for value in range(255, -1, -1):
        t = int(id_to_train[value])
        if t not in (IGNORE_INDEX, SegDataset.INVALID):
            table[t] = value
    return table
