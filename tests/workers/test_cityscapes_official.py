"""The official cityscapesScripts pixel-level evaluation accepts the synthetic set and `dance predict` output.

`evalPixelLevelSemanticLabeling` walks CITYSCAPES_RESULTS for exactly one PNG per
``<city>_<seq>_<frame>`` prefix and opens ``*_gtFine_instanceIds.png`` next to every
labelIds file (for iIoU). Its class mIoU must equal `dance eval`'s on the same checkpoint.

cityscapesScripts is not a project dependency (its ``typing`` backport breaks Python 3.11
environments); install it without dependencies to run this check:
``pip install --no-deps cityscapesscripts==2.3.0 pyquaternion==0.9.9``.
"""
from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from orchestrator.cli import main
from orchestrator.config import load_config
from workers.prepare import worker_config
from workers.train_loop import run_local


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    from workers.data.synth import generate_dataset

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("official")
    generate_dataset(tmp / "synth", n_train=12, n_val=4, size=(64, 128), seed=4)
    cfg = load_config(None, [f"data.root={tmp / 'synth'}", f"data.cache_dir={tmp / 'cache'}", "model.variant=small",
                             "ans.stages=1", "ans.l1_lambda=1e-3", "optim.lr=0.02", "train.epochs=2",
                             "train.batch_size=2", "train.eval_batch_size=2", "scaling.num_workers=1"])
    rt = run_local(worker_config(cfg), checkpoint_root=tmp / "ckpt")
    ckpt = rt.checkpoints[-1]
    assert main(["predict", str(ckpt), "--out", str(tmp / "results"), "--color"]) == 0
    yield tmp, ckpt
    torch.set_num_threads(before)


def test_one_prediction_per_image_and_colour_maps_elsewhere(predicted):
    """The official matching rule (fnmatch of the image prefix over every PNG under the results folder)."""
    tmp, _ = predicted
    walk = [(root, files) for root, _, files in os.walk(tmp / "results")]
    gts = sorted((tmp / "synth" / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))
    assert gts
    for gt in gts:
        city, seq, frame = gt.name.split("_")[:3]
        hits = [f for _, files in walk for f in fnmatch.filter(files, f"{city}_{seq}_{frame}*.png")]
        assert len(hits) == 1, (gt.name, hits)
        assert Path(str(gt).replace("labelIds", "instanceIds")).is_file()
    assert len(list((tmp / "results_color").rglob("*.png"))) == len(gts)


def test_official_evaluation_runs_and_agrees_with_dance_eval(predicted, capsys):
    pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
                        reason="cityscapesScripts not installed (see the module docstring)")
    tmp, ckpt = predicted
    assert main(["eval", str(ckpt), "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)
    # the 0-based epoch, as in the folder name and the metrics (2 epochs: the last is epoch 1)
    assert ckpt.name == "checkpoint_epoch_0001" and ours["epoch"] == 1 and ours["epochs_done"] == 2
    env = {**os.environ, "CITYSCAPES_DATASET": str(tmp / "synth"), "CITYSCAPES_RESULTS": str(tmp / "results"),
           "CITYSCAPES_EXPORT_DIR": str(tmp)}
    # cityscapesScripts 2.3.0 still calls np.in1d, which NumPy 2.4 removed; np.isin is its documented successor.
    launcher = ("import numpy as np, runpy\n"
                "if not hasattr(np, 'in1d'): np.in1d = np.isin\n"
                "runpy.run_module('cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling', run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", launcher], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads((tmp / "resultPixelLevelSemanticLabeling.json").read_text())
    assert result["averageScoreClasses"] == pytest.approx(ours["miou"], abs=1e-6)
