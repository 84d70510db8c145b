"""Synthetic urban-scene generator: layout, determinism, label validity, variety."""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from workers.data import synth as synth_module
from workers.data.datasets import open_dataset
from workers.data.datasets.base import IGNORE_INDEX, DatasetError
from workers.data.synth import LABEL_IDS, SceneGenerator, encode_png, generate_dataset

SIZE = (128, 256)
N_TRAIN, N_VAL = 20, 4
ROOT = Path(__file__).resolve().parents[2]


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def _sobel_mean(rgb: np.ndarray) -> float:
    """Spatial complexity as the design defines it: mean Sobel magnitude of BT.601 luma, edge padding."""
    y = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    p = np.pad(y, 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return float(np.sqrt(gx**2 + gy**2).mean())


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list]:
    root = tmp_path_factory.mktemp("synth") / "set"
    calls: list[tuple[int, int]] = []
    summary = generate_dataset(root, n_train=N_TRAIN, n_val=N_VAL, size=SIZE, seed=0,
                               progress=lambda done, total: calls.append((done, total)))
    return root, summary, calls


def test_layout_and_summary(synth) -> None:
    root, summary, calls = synth
    assert calls == [(i, N_TRAIN + N_VAL) for i in range(1, N_TRAIN + N_VAL + 1)]
    assert summary["images"] == N_TRAIN + N_VAL and summary["size"] == list(SIZE)
    assert summary["splits"] == {"train": N_TRAIN, "val": N_VAL}
    assert json.loads((root / "synth.json").read_text())["seed"] == 0
    train_cities = {p.name for p in (root / "leftImg8bit/train").iterdir()}
    val_cities = {p.name for p in (root / "leftImg8bit/val").iterdir()}
    assert len(train_cities) >= 3 and val_cities and not train_cities & val_cities
    names = sorted(p.name for p in (root / "gtFine/val").rglob("*_labelIds.png"))
    assert names[0].endswith("_000000_000019_gtFine_labelIds.png")
    assert abs(sum(summary["label_fractions"].values()) - 1) < 1e-3


def test_reads_back_as_cityscapes(synth) -> None:
    root, _, _ = synth
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        ds = open_dataset("cityscapes", root, split)
        assert len(ds) == n
        for i in range(n):
            assert ds.image_size(i) == (SIZE[1], SIZE[0])
            assert ds.load_image(i).shape == SIZE + (3,)
            lab = ds.load_label(i)  # raises if any value is not a valid labelId
            assert lab.shape == SIZE and (lab != IGNORE_INDEX).mean() > 0.5


def test_label_ids_and_class_coverage(synth) -> None:
    root, _, _ = synth
    seen: set[int] = set()
    for p in (root / "gtFine/train").rglob("*_gtFine_labelIds.png"):
        img = Image.open(p)
        assert img.mode == "L"
        seen |= set(np.unique(np.asarray(img)).tolist())
    assert seen <= set(LABEL_IDS) <= set(range(34))
    main = {7: "road", 8: "sidewalk", 11: "building", 17: "pole", 20: "traffic sign", 21: "vegetation",
            23: "sky", 24: "person", 26: "car"}
    assert not set(main) - seen, f"missing: {[main[k] for k in set(main) - seen]}"
    assert seen & {1, 4}, "no void pixels: ignore handling would go untested"


def test_complexity_and_scale_vary(synth) -> None:
    root, _, _ = synth
    ds = open_dataset("cityscapes", root, "train")
    sc = np.array([_sobel_mean(ds.load_image(i)) for i in range(len(ds))])
    assert sc.std() / sc.mean() > 0.15, sc
    areas: list[int] = []
    for i in range(len(ds)):
        lab = ds.load_label(i)
        for train_id in (11, 13):  # person, car
            comp, n = ndimage.label(lab == train_id)
            areas += np.bincount(comp.ravel())[1:].tolist() if n else []
    areas_a = np.array(areas)
    assert areas_a.size > 20 and areas_a.max() / np.median(areas_a) > 10 and areas_a.min() < 20, areas_a


def test_deterministic_by_seed(tmp_path: Path) -> None:
    kw = dict(n_train=4, n_val=2, size=(48, 96))
    a, b, c = (generate_dataset(tmp_path / n, seed=s, **kw)["root"] for n, s in (("a", 7), ("b", 7), ("c", 8)))
    fa, fb, fc = _files(Path(a)), _files(Path(b)), _files(Path(c))
    assert len(fa) == 18 and fa == fb  # 6 images, each with labelIds and instanceIds
    assert fa.keys() == fc.keys() and all(fa[k] != fc[k] for k in fa if "leftImg8bit" in k)


def test_render_is_per_index() -> None:
    g1, g2 = SceneGenerator((40, 80), 3), SceneGenerator((40, 80), 3)
    rgb1, lab1 = g1.render("val", 5)
    g2.render("val", 4)
    rgb2, lab2 = g2.render("val", 5)
    assert np.array_equal(rgb1, rgb2) and np.array_equal(lab1, lab2)
    assert not np.array_equal(rgb1, g1.render("train", 5)[0])


def _digest(gen: SceneGenerator) -> str:
    h = hashlib.sha256()
    for split in ("train", "val"):
        for i in range(3):
            rgb, lab = gen.render(split, i)
            h.update(rgb.tobytes())
            h.update(lab.tobytes())
    return h.hexdigest()


# sha256 of 3 train + 3 val scenes (48x96, seed 7) from the generator before issue 20 (commit dce2a35)
VERSION_1 = {"day": "82c3bd96b9a0a7a63ec2385309ad01e7c760385c2f08b39cbf6c89a4185c694a",
             "dusk": "a7f18376c228c50273fb7bec4812c003ab7b7653420ce1f8b54cf5f973984ecd"}


@pytest.mark.parametrize("style", ["day", "dusk"])
def test_texture_mode_paints_the_version_1_sets(style: str) -> None:
    assert _digest(SceneGenerator((48, 96), 7, style, complexity="texture")) == VERSION_1[style]
    assert _digest(SceneGenerator((48, 96), 7, style)) != VERSION_1[style]  # the default is the new mode


def test_objects_mode_keeps_texture_a_minor_part_of_complexity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eq. 1's Sobel complexity of an "objects" scene comes from what its labels hold: painting the same
    scenes without texture removes under a fifth of it on average, and less than in the "texture" mode."""
    share = {}
    for mode in ("texture", "objects"):
        gen, parts = SceneGenerator((64, 128), 0, complexity=mode), []
        for i in range(16):
            full = _sobel_mean(gen.render("train", i)[0])
            with monkeypatch.context() as m:  # the same scene (rng per index), in flat colours
                m.setattr(synth_module, "_BASE_AMP", synth_module._BASE_AMP * 0)
                flat = _sobel_mean(gen.render("train", i)[0])
            parts.append((full - flat) / full)
        share[mode] = float(np.mean(parts))
    assert share["objects"] < 0.2 and share["objects"] < share["texture"] - 0.05, share


def test_manifest_names_the_mode_and_its_version(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", n_train=1, n_val=0, size=(32, 64))
    b = generate_dataset(tmp_path / "b", n_train=1, n_val=0, size=(32, 64), complexity="texture")
    assert (a["complexity"], a["version"], b["complexity"], b["version"]) == ("objects", 2, "texture", 1)
    assert json.loads((tmp_path / "a/synth.json").read_text())["complexity"] == "objects"
    with pytest.raises(ValueError, match="unknown complexity"):
        generate_dataset(tmp_path / "c", n_train=1, n_val=0, size=(32, 64), complexity="noise")


def test_refuses_to_clobber(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty") as info:
        generate_dataset(tmp_path / "real", n_train=1, n_val=0, size=(32, 64))
    assert isinstance(info.value, DatasetError)  # the CLI prints DatasetErrors as one line
    with pytest.raises(FileExistsError, match="synth.json"):
        generate_dataset(tmp_path / "real", n_train=1, n_val=0, size=(32, 64), overwrite=True)
    out = tmp_path / "s"
    generate_dataset(out, n_train=3, n_val=1, size=(32, 64))
    generate_dataset(out, n_train=2, n_val=0, size=(32, 64), overwrite=True)
    assert len(open_dataset("cityscapes", out, "train")) == 2 and not (out / "leftImg8bit/val").exists()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="out of range") as info:
        generate_dataset(tmp_path / "x", n_train=1, size=(8, 8))
    assert isinstance(info.value, DatasetError)
    with pytest.raises(ValueError, match="n_train"):
        generate_dataset(tmp_path / "y", n_train=0)


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3), (1, 1)])
def test_encode_png_roundtrip(shape: tuple[int, ...]) -> None:
    arr = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    back = np.asarray(Image.open(io.BytesIO(encode_png(arr))))
    assert back.dtype == np.uint8 and np.array_equal(back, arr)
    with pytest.raises(ValueError):
        encode_png(arr.astype(np.int16))


def test_encode_png_16_bit_roundtrip() -> None:
    arr = np.random.default_rng(1).integers(0, 65536, (6, 9), dtype=np.uint16)
    back = np.asarray(Image.open(io.BytesIO(encode_png(arr))))
    assert np.array_equal(back.astype(np.int64), arr.astype(np.int64))


def test_instance_ids_files_follow_the_cityscapes_encoding(synth) -> None:
    """cityscapesScripts' evaluation opens gtFine/*_instanceIds.png next to every labelIds file (for iIoU)."""
    from workers.data.synth import INSTANCE_LABEL_IDS

    root, _, _ = synth
    seen_instances = 0
    for lab_path in sorted((root / "gtFine").rglob("*_gtFine_labelIds.png")):
        inst_path = Path(str(lab_path).replace("labelIds", "instanceIds"))
        assert inst_path.is_file(), inst_path
        lab = np.asarray(Image.open(lab_path)).astype(np.int64)
        inst = np.asarray(Image.open(inst_path)).astype(np.int64)
        assert inst.shape == lab.shape
        is_obj = inst >= 1000
        # objects: labelId*1000 + k, only on instance classes; everything else holds its labelId
        assert np.array_equal(np.where(is_obj, inst // 1000, inst), lab)
        assert set(np.unique(lab[is_obj]).tolist()) <= set(INSTANCE_LABEL_IDS)
        assert not np.isin(lab[~is_obj], INSTANCE_LABEL_IDS).any()
        seen_instances += len(np.unique(inst[is_obj]))
    assert seen_instances > 0


def test_benchmark_script_runs() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/bench_synth.py"), "--size", "32x64", "--n", "3",
                          "--json"], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["size"] == "32x64" and result["images_per_s"] > 0
