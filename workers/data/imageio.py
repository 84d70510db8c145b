"""Decoding images and labels with errors that name the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


def _open(path: Path) -> Image.Image:
    from workers.data.datasets.base import DatasetError

    try:
        img = Image.open(path)
        img.load()
        return img
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable image ({exc})") from None


def read_rgb(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3)."""
    img = _open(Path(path))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def read_label(path: Path) -> np.ndarray:
    """Raw label values uint8 (H, W): palette indices for 'P' images, gray values otherwise."""
    from workers.data.datasets.base import DatasetError

    img = _open(Path(path))
    if img.mode in ("P", "L"):
        return np.asarray(img)
    if img.mode in ("I", "I;16"):
        arr = np.asarray(img)
        if arr.max(initial=0) > 255:
            raise DatasetError(f"{path}: label values above 255")
        return arr.astype(np.uint8)
    raise DatasetError(f"{path}: label image has mode {img.mode}, expected a single-channel or palette PNG")


def read_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    from workers.data.datasets.base import DatasetError

    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable image ({exc})") from None
