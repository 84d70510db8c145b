"""Checkpoints of pruned models: architecture + weights + CDF + extra, exact in a fresh process."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from workers.checkpoint import CheckpointError, load_checkpoint, model_structure, save_checkpoint
from workers.dance.ans import ANSConfig, NetworkSlimmer
from workers.dance.cdf import MaxwellCDF
from workers.models import build_model

ROOT = Path(__file__).resolve().parents[2]
BUILTIN = ["deeplabv3plus", "deeplabv3", "pspnet", "icnet", "bisenet"]


def pruned(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(name, num_classes=5, variant="small")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.01)
                m.running_mean.normal_(generator=g)
    slimmer = NetworkSlimmer(model, ANSConfig(target_ratio=0.6, stages=3))
    slimmer.step(), slimmer.step()
    return model.eval()


LOADER = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from workers.checkpoint import load_checkpoint
torch.set_num_threads(1)
out = {}
for path, x_path in zip(sys.argv[2::2], sys.argv[3::2]):
    ck = load_checkpoint(path)
    with torch.no_grad():
        out[path] = {"y": ck.model(torch.load(x_path)), "cdf": ck.cdf.to_dict(), "extra": ck.extra,
                     "training": ck.model.training}
torch.save(out, sys.argv[-2] + ".out")
"""


def test_pruned_round_trip_in_a_fresh_process_is_exact(tmp_path):
    cdf = MaxwellCDF(loc=1.5, scale=7.25)
    args, expected = [], {}
    for name in BUILTIN:
        model = pruned(name)
        q, lo = model.size_quantum, model.min_size
        x = torch.randn(2, 3, lo + q, lo + 2 * q)
        with torch.no_grad():
            expected[name] = model(x)
        extra = {"epoch": 7, "ans": {"stage": 2}, "optimizer": {"state": {0: {"momentum": torch.ones(3)}}},
                 "config": {"data": {"root": tmp_path}}, "p": np.arange(3.0)}
        path = save_checkpoint(tmp_path / f"{name}.pt", model, cdf=cdf, extra=extra, class_names=list("abcde"))
        torch.save(x, tmp_path / f"{name}.x")
        args += [str(path), str(tmp_path / f"{name}.x")]
    script = tmp_path / "load.py"
    script.write_text(LOADER)
    proc = subprocess.run([sys.executable, str(script), str(ROOT), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = torch.load(args[-2] + ".out", weights_only=True)
    for name in BUILTIN:
        got = out[str(tmp_path / f"{name}.pt")]
        assert torch.equal(got["y"], expected[name]), name
        assert got["cdf"] == cdf.to_dict() and got["training"] is False
        assert got["extra"]["epoch"] == 7 and got["extra"]["ans"] == {"stage": 2}
        assert torch.equal(got["extra"]["optimizer"]["state"][0]["momentum"], torch.ones(3))
        assert got["extra"]["config"]["data"]["root"] == str(tmp_path)  # paths are stored as strings
        assert torch.equal(got["extra"]["p"], torch.arange(3.0, dtype=torch.float64))


def test_structure_records_pruned_channels(tmp_path):
    model = pruned("deeplabv3plus")
    ck = load_checkpoint(save_checkpoint(tmp_path / "c.pt", model))
    assert model_structure(ck.model) == model_structure(model)
    fresh = build_model(**model.spec)
    assert model_structure(fresh) != model_structure(model)  # the spec alone is the unpruned model
    assert ck.meta["class_names"] is None and ck.cdf is None


def test_missing_and_corrupt_files_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(bad)
    good = save_checkpoint(tmp_path / "good.pt", pruned("icnet"))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=str(truncated.name)):
        load_checkpoint(truncated)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a DANCE checkpoint"):
        load_checkpoint(other)
    assert not list(tmp_path.glob(".*.tmp*"))  # atomic writes leave no temporary files


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.decoder = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.head = nn.Conv2d(12, 3, 1)

    def forward(self, x):
        return self.head(self.decoder(self.encoder(x)))


def test_model_without_spec_loads_into_a_given_instance(tmp_path):
    net = Plain()
    with torch.no_grad():
        net.decoder[1].weight.copy_(torch.rand(12) + 0.01)
    slimmer = NetworkSlimmer(net, ANSConfig(target_ratio=0.5, stages=1), example_input_size=(16, 16),
                             parts={"backbone": "encoder", "header": "decoder", "classifier": "head"})
    slimmer.step()
    net.eval()
    path = save_checkpoint(tmp_path / "plain.pt", net)
    with pytest.raises(CheckpointError, match="no model spec"):
        load_checkpoint(path)
    ck = load_checkpoint(path, model=Plain)
    x = torch.randn(1, 3, 16, 16)
    assert ck.model.head.in_channels == 6 and torch.equal(ck.model(x), net(x))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path, model=nn.Sequential(nn.Conv2d(3, 3, 1)))
