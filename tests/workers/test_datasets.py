"""Dataset readers on tiny fixture trees in each real on-disk layout, good and bad."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workers.data.datasets import DATASET_KINDS, DatasetError, open_dataset
from workers.data.datasets.base import IGNORE_INDEX, SegDataset
from workers.data.datasets.voc import voc_palette

H, W = 8, 16


def _rgb(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _label(values: list[int]) -> np.ndarray:
    """H x W label using ``values`` in vertical stripes, so every value occurs."""
    cols = np.array(values, np.uint8)[np.arange(W) * len(values) // W]
    return np.broadcast_to(cols, (H, W)).copy()


def _save(path: Path, arr: np.ndarray, palette: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    if palette:
        img = img.convert("P")
        img.putpalette(np.asarray(voc_palette(), np.uint8).ravel().tolist())
        img.putdata(arr.ravel().tolist())  # keep the raw indices
    img.save(path)
    return path


def _corrupt(path: Path) -> None:
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 200, dtype=np.uint8).tobytes())


def _raises(fn, *needles: object) -> str:
    with pytest.raises(DatasetError) as info:
        fn()
    msg = str(info.value)
    for needle in needles:
        assert str(needle) in msg, f"{needle!s} not in error: {msg}"
    return msg


# ----------------------------------------------------------------------------- Cityscapes
CS_VALUES = [7, 8, 26, 0, 33, 1, 23]


def _cityscapes(root: Path, split: str = "train", cities=("aachen", "bremen"), n: int = 2) -> Path:
    for city in cities:
        for i in range(n):
            stem = f"{city}_{i:06d}_000019"
            _save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", _rgb(i))
            lbl = root / "gtFine" / split / city
            _save(lbl / f"{stem}_gtFine_labelIds.png", _label(CS_VALUES))
            _save(lbl / f"{stem}_gtFine_color.png", _rgb(9))  # siblings that are not labels
            (lbl / f"{stem}_gtFine_polygons.json").write_text("{}")
    return root


def test_cityscapes_loads_and_maps_train_ids(tmp_path: Path) -> None:
    ds = open_dataset("cityscapes", _cityscapes(tmp_path))
    assert isinstance(ds, SegDataset) and ds.kind == "cityscapes" and len(ds) == 4
    assert ds.num_classes == 19 and ds.class_names[0] == "road" and ds.class_names[-1] == "bicycle"
    assert [s.image.parent.name for s in ds.samples] == ["aachen", "aachen", "bremen", "bremen"]
    assert ds.image_size(0) == (W, H)
    assert ds.load_image(0).shape == (H, W, 3)
    lab = ds.load_label(0)
    assert lab.dtype == np.uint8 and lab.shape == (H, W)
    assert sorted(set(lab.ravel().tolist())) == [0, 1, 10, 13, 18, IGNORE_INDEX]
    back = ds.to_dataset_ids(lab)
    assert sorted(set(back.ravel().tolist())) == [0, 7, 8, 23, 26, 33]  # void ids come back as 0
    assert ds.train_to_id[:19].tolist() == [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
    assert ds.valid_ids() == list(range(34))


def test_cityscapes_missing_folders(tmp_path: Path) -> None:
    _raises(lambda: open_dataset("cityscapes", tmp_path / "nope"), tmp_path / "nope", "not found")
    root = _cityscapes(tmp_path)
    _raises(lambda: open_dataset("cityscapes", root, "val"), root / "leftImg8bit" / "val", "train")
    (root / "gtFine" / "train").rename(root / "gtFine" / "old")
    _raises(lambda: open_dataset("cityscapes", root), root / "gtFine" / "train", "gtFine_labelIds.png")


def test_cityscapes_orphans(tmp_path: Path) -> None:
    root = _cityscapes(tmp_path)
    extra = _save(root / "leftImg8bit/train/aachen/aachen_000009_000019_leftImg8bit.png", _rgb())
    _raises(lambda: open_dataset("cityscapes", root), extra, "no label", "aachen_000009_000019_gtFine_labelIds.png")
    extra.unlink()
    lonely = _save(root / "gtFine/train/zurich/zurich_000000_000019_gtFine_labelIds.png", _label([7]))
    _raises(lambda: open_dataset("cityscapes", root), lonely, "no image")


def test_cityscapes_bad_names_and_empty_split(tmp_path: Path) -> None:
    root = _cityscapes(tmp_path)
    odd = _save(root / "leftImg8bit/train/aachen/aachen_1.png", _rgb())
    _raises(lambda: open_dataset("cityscapes", root), odd, "not a Cityscapes image name")
    (root / "leftImg8bit/test").mkdir()
    (root / "gtFine/test").mkdir()
    _raises(lambda: open_dataset("cityscapes", root, "test"), root / "leftImg8bit/test", "empty split")


def test_cityscapes_bad_files_fail_at_load(tmp_path: Path) -> None:
    ds = open_dataset("cityscapes", _cityscapes(tmp_path))
    _corrupt(ds.samples[0].image)
    _raises(lambda: ds.load_image(0), ds.samples[0].image, "unreadable")
    _corrupt(ds.samples[1].label)
    _raises(lambda: ds.load_label(1), ds.samples[1].label, "unreadable")
    _save(ds.samples[2].label, _label([7, 34]))
    _raises(lambda: ds.load_label(2), ds.samples[2].label, "[34]")
    _save(ds.samples[3].label, _label([0, 255]))  # a labelTrainIds file where labelIds belong
    _raises(lambda: ds.load_label(3), ds.samples[3].label, "[255]")


def test_label_size_mismatch(tmp_path: Path) -> None:
    ds = open_dataset("cityscapes", _cityscapes(tmp_path))
    _save(ds.samples[0].label, np.full((H, W + 1), 7, np.uint8))
    _raises(lambda: ds.load_label(0), ds.samples[0].label, f"{W}x{H}")


# ----------------------------------------------------------------------------- CamVid
def _camvid(root: Path, split: str = "train", names=("0001TP_006690", "Seq05VD_f00000")) -> Path:
    for i, name in enumerate(names):
        _save(root / split / f"{name}.png", _rgb(i))
        _save(root / f"{split}annot" / f"{name}.png", _label([0, 3, 10, 11]))
    return root


def test_camvid(tmp_path: Path) -> None:
    root = _camvid(tmp_path)
    (root / "train" / ".DS_Store").write_bytes(b"junk")  # hidden files are not images
    ds = open_dataset("camvid", root, "train")
    assert len(ds) == 2 and ds.num_classes == 11 and ds.class_names[3] == "road"
    assert sorted(set(ds.load_label(1).ravel().tolist())) == [0, 3, 10, IGNORE_INDEX]
    assert ds.train_to_id[IGNORE_INDEX] == 11 and ds.train_to_id[4] == 4
    _save(ds.samples[0].label, _label([0, 12]))
    _raises(lambda: ds.load_label(0), ds.samples[0].label, "[12]")


def test_camvid_bad_layouts(tmp_path: Path) -> None:
    root = _camvid(tmp_path)
    _raises(lambda: open_dataset("camvid", root, "val"), root / "val", "SPLITannot")
    _camvid(root, "val")
    lonely = _save(root / "valannot" / "extra.png", _label([1]))
    _raises(lambda: open_dataset("camvid", root, "val"), lonely, "no image")
    (root / "testannot").mkdir()
    _save(root / "test" / "a.png", _rgb())
    _raises(lambda: open_dataset("camvid", root, "test"), root / "test" / "a.png", "no label")


# ----------------------------------------------------------------------------- BDD100K
def _bdd(root: Path, split: str = "train", names=("0a0a0b1a-7c39d841", "0a0b16e2-93f8c456")) -> Path:
    for i, name in enumerate(names):
        _save(root / "images/10k" / split / f"{name}.jpg", _rgb(i))
        _save(root / "labels/sem_seg/masks" / split / f"{name}.png", _label([0, 2, 18, 255]))
    return root


def test_bdd100k(tmp_path: Path) -> None:
    ds = open_dataset("bdd100k", _bdd(tmp_path))
    assert len(ds) == 2 and ds.class_names == open_dataset("cityscapes", _cityscapes(tmp_path / "cs")).class_names
    assert ds.load_image(0).shape == (H, W, 3)
    assert sorted(set(ds.load_label(0).ravel().tolist())) == [0, 2, 18, IGNORE_INDEX]
    assert ds.train_to_id[18] == 18 and ds.train_to_id[IGNORE_INDEX] == IGNORE_INDEX
    _save(ds.samples[1].label, _label([19]))
    _raises(lambda: ds.load_label(1), ds.samples[1].label, "[19]")


def test_bdd100k_orphans_and_missing(tmp_path: Path) -> None:
    root = _bdd(tmp_path)
    _raises(lambda: open_dataset("bdd100k", root, "val"), root / "images/10k/val")
    extra = _save(root / "images/10k/train/ffff.jpg", _rgb())
    _raises(lambda: open_dataset("bdd100k", root), extra, "no label", "#103")


def test_bdd100k_legacy_seg_layout(tmp_path: Path) -> None:
    for name in ("a", "b"):
        _save(tmp_path / "seg/images/val" / f"{name}.jpg", _rgb())
        _save(tmp_path / "seg/labels/val" / f"{name}_train_id.png", _label([1, 255]))
        _save(tmp_path / "seg/color_labels/val" / f"{name}_train_color.png", _rgb())
    ds = open_dataset("bdd100k", tmp_path, "val")
    assert [s.label.name for s in ds.samples] == ["a_train_id.png", "b_train_id.png"]
    assert sorted(set(ds.load_label(0).ravel().tolist())) == [1, IGNORE_INDEX]


# ----------------------------------------------------------------------------- VOC
def _voc(root: Path, names=("2007_000032", "2007_000039")) -> Path:
    base = root / "VOCdevkit" / "VOC2012"
    for i, name in enumerate(names):
        _save(base / "JPEGImages" / f"{name}.jpg", _rgb(i))
        _save(base / "SegmentationClass" / f"{name}.png", _label([0, 1, 15, 20, 255]), palette=True)
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(names) + "\n\n")
    (lists / "val.txt").write_text(f"{names[0]}\n2008_999999\n")
    return base


def test_voc(tmp_path: Path) -> None:
    base = _voc(tmp_path)
    assert Image.open(base / "SegmentationClass/2007_000032.png").mode == "P"
    for root in (tmp_path, tmp_path / "VOCdevkit", base):  # any of the usual roots
        ds = open_dataset("voc", root, "train")
        assert ds.root == base and len(ds) == 2
    assert ds.num_classes == 21 and ds.label_mode == "P" and len(ds.meta["palette"]) == 768
    assert ds.meta["colors"][1] == (128, 0, 0) and ds.meta["colors"][15] == (192, 128, 128)
    assert sorted(set(ds.load_label(0).ravel().tolist())) == [0, 1, 15, 20, IGNORE_INDEX]
    _save(ds.samples[1].label, _label([0, 21]), palette=True)
    _raises(lambda: ds.load_label(1), ds.samples[1].label, "[21]")


def test_voc_bad_lists(tmp_path: Path) -> None:
    base = _voc(tmp_path)
    _raises(lambda: open_dataset("voc", base, "val"), base / "JPEGImages/2008_999999.jpg", "line 2", "val.txt")
    _raises(lambda: open_dataset("voc", base, "trainaug"), "trainaug.txt", "train, val")
    (base / "ImageSets/Segmentation/empty.txt").write_text("\n")
    _raises(lambda: open_dataset("voc", base, "empty"), "empty.txt", "empty split")
    (base / "SegmentationClass/2007_000039.png").unlink()
    _raises(lambda: open_dataset("voc", base, "train"), base / "SegmentationClass/2007_000039.png", "line 2")
    _raises(lambda: open_dataset("voc", tmp_path / "elsewhere"), "not found")


# ----------------------------------------------------------------------------- registry
def test_registry() -> None:
    assert DATASET_KINDS == ("cityscapes", "camvid", "bdd100k", "voc")
    _raises(lambda: open_dataset("kitti", "."), "kitti", "cityscapes, camvid, bdd100k, voc")


@pytest.mark.parametrize("kind", DATASET_KINDS)
def test_empty_root_names_expected_layout(tmp_path: Path, kind: str) -> None:
    msg = _raises(lambda: open_dataset(kind, tmp_path), tmp_path)
    assert "expected layout" in msg
