"""`dance train / eval / predict` on the command line (no Ray needed for these)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from orchestrator.cli import main
from orchestrator.config import load_config
from workers.prepare import worker_config
from workers.train_loop import CHECKPOINT_FILE, run_local

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from workers.data.synth import generate_dataset

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("train_cli")
    generate_dataset(tmp / "synth", n_train=16, n_val=5, size=(64, 128), seed=2)
    cfg = load_config(None, [f"data.root={tmp / 'synth'}", f"data.cache_dir={tmp / 'cache'}", "model.variant=small",
                             "ans.stages=1", "ans.l1_lambda=1e-3", "ans.min_gamma_spread=1e-6", "optim.lr=0.02",
                             "train.epochs=2", "train.batch_size=2", "train.eval_batch_size=2",
                             "scaling.num_workers=1"])
    rt = run_local(worker_config(cfg), checkpoint_root=tmp / "ckpt")
    yield tmp, rt
    torch.set_num_threads(before)


def test_eval_json_matches_the_last_report(trained, capsys):
    tmp, rt = trained
    assert main(["eval", str(rt.checkpoints[-1] / CHECKPOINT_FILE), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["miou"] == pytest.approx(rt.reports[-1]["miou"])
    assert res["images"] == 5 and res["adaptive_resolution"]
    assert set(res["per_class_iou"]) >= {"road", "car", "sky"}
    # --full-res turns complexity-adaptive inference off: every image at its stored size
    assert main(["eval", str(rt.checkpoints[-1]), "--json", "--full-res"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert full["sizes"] == {"64x128": 5} and not full["adaptive_resolution"]
    # what a person reads counts epochs from 1, as the training log does; MLflow's step is the 0-based index
    assert main(["eval", str(rt.checkpoints[-1])]) == 0
    assert "epoch                 2/2 (MLflow step 1)" in capsys.readouterr().out


def test_predict_writes_cityscapes_label_ids(trained, tmp_path, capsys):
    from workers.data.datasets import open_dataset
    from workers.data.datasets.cityscapes import TRAIN_CLASSES, id_to_train_table
    from workers.metrics import ConfusionMatrix

    tmp, rt = trained
    out = tmp_path / "pred"
    assert main(["predict", str(rt.checkpoints[-1]), "--out", str(out), "--color"]) == 0
    capsys.readouterr()
    val = open_dataset("cityscapes", tmp / "synth", "val")
    table = id_to_train_table()
    cm = ConfusionMatrix(val.num_classes)
    for i, s in enumerate(val.samples):
        city = s.image.parent.name
        pred = out / city / s.image.name          # <city>/<city>_<seq>_<frame>_leftImg8bit.png
        assert pred.is_file(), pred
        img = Image.open(pred)
        assert img.mode == "L" and img.size == Image.open(s.image).size
        ids = np.asarray(img)
        assert set(np.unique(ids)) <= {label_id for label_id, _ in TRAIN_CLASSES}   # official labelIds
        cm.update(torch.from_numpy(table[ids].astype(np.int64)), torch.from_numpy(val.load_label(i).astype(np.int64)))
        assert (tmp_path / "pred_color" / city / s.image.name).is_file()   # colour maps outside OUT
    # scoring the written files reproduces `dance eval`'s mIoU
    assert cm.miou() == pytest.approx(rt.reports[-1]["miou"])
    # and the platform's own Cityscapes reader accepts them as gtFine labelIds
    fake = tmp_path / "as_gt"
    shutil.copytree(tmp / "synth" / "leftImg8bit" / "val", fake / "leftImg8bit" / "val")
    for s in val.samples:
        dest = (fake / "gtFine" / "val" / s.image.parent.name
                / s.image.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png"))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / s.image.parent.name / s.image.name, dest)
    back = open_dataset("cityscapes", fake, "val")
    assert all(back.load_label(i).max() < 19 for i in range(len(back)))


def test_eval_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing.pt")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["eval", str(bad)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_train_rejects_bad_config_before_ray(tmp_path, capsys, monkeypatch):
    import orchestrator.training as training

    monkeypatch.setattr(training, "ensure_ray", lambda *a, **k: pytest.fail("Ray must not start"))
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("train:\n  epochs: 0\n  mode: sideways\nscaling:\n  num_workers: 2\nans:\n  stages: -1\n")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "train.epochs" in err and "train.mode" in err and "ans.stages" in err
    assert main(["train", str(ROOT / "configs" / "quickstart.yaml"), "--set", "slimming.casd=maybe"]) == 2
    assert "slimming.casd" in capsys.readouterr().err


def test_train_dry_run_prints_the_resolved_config(capsys):
    assert main(["train", str(ROOT / "configs" / "quickstart.yaml"), "--dry-run", "--set", "train.epochs=3"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["train"]["epochs"] == 3 and cfg["scaling"]["num_workers"] == 2 and cfg["model"]["variant"] == "small"
