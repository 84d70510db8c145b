"""`dance export`: ONNX (opset ≤ 13, static shapes, checked in onnxruntime) and TorchScript, per bucket."""
from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from orchestrator.cli import main
from workers.checkpoint import save_checkpoint
from workers.dance.ans import ANSConfig, NetworkSlimmer
from workers.dance.cdf import MaxwellCDF
from workers.export import ONNX_TOLERANCE, Bucket, ExportError, export_checkpoint, export_model, parse_buckets
from workers.models import build_model

MANIFEST_KEYS = {"schema", "format", "num_classes", "class_names", "cdf", "model", "size_quantum", "buckets"}
BUILTIN = ["deeplabv3plus", "deeplabv3", "pspnet", "icnet", "bisenet"]


def pruned(name: str, variant: str = "small") -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, variant=variant)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.01)
                m.running_mean.normal_(generator=g)
    NetworkSlimmer(model, ANSConfig(target_ratio=0.5, stages=1)).step()
    return model.eval()


@pytest.mark.parametrize("name,variant", [(n, "small") for n in BUILTIN]
                         + [("deeplabv3plus", "mobilenetv2"), ("deeplabv3", "mobilenetv2")])
def test_onnx_export_of_a_pruned_model_matches_pytorch_in_onnxruntime(name, variant, tmp_path):
    model = pruned(name, variant)
    q, lo = model.size_quantum, model.min_size
    buckets = [Bucket(lo + q, lo + 3 * q, 0.75), Bucket(lo, lo, 0.25)]
    res = export_model(model, tmp_path, "onnx", buckets, cdf=MaxwellCDF(2.0, 5.0))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest == res.manifest and set(manifest) == MANIFEST_KEYS
    assert manifest["schema"] == 1 and manifest["format"] == "onnx" and manifest["num_classes"] == 5
    assert manifest["cdf"] == {"distribution": "maxwell", "loc": 2.0, "scale": 5.0}
    assert manifest["model"] == model.spec and manifest["size_quantum"] == q
    assert [set(b) for b in manifest["buckets"]] == [{"height", "width", "file", "fraction"}] * 2
    for b in manifest["buckets"]:
        proto = onnx.load(str(tmp_path / b["file"]))
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) <= 13
        assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, b["height"], b["width"]]
        # Sizes are baked in: no Shape ops left, every Resize reads its sizes/scales from initializers.
        made_by_node = {o for n in proto.graph.node for o in n.output}
        assert not [n for n in proto.graph.node if n.op_type == "Shape"]
        resizes = [n for n in proto.graph.node if n.op_type == "Resize"]
        assert all(i not in made_by_node for n in resizes for i in n.input[1:] if i)
        sess = ort.InferenceSession(str(tmp_path / b["file"]), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == ["input"] and [o.name for o in sess.get_outputs()] == ["logits"]
        x = torch.randn(1, 3, b["height"], b["width"])
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(["logits"], {"input": x.numpy()})[0]
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= ONNX_TOLERANCE * max(1.0, np.abs(ref).max())
    assert all(c["ok"] for c in res.checks)


def test_torchscript_export_traces_each_bucket(tmp_path):
    model = pruned("bisenet")
    res = export_model(model, tmp_path, "torchscript", [Bucket(64, 128, 1.0)], class_names=list("vwxyz"))
    assert res.manifest["format"] == "torchscript" and res.manifest["class_names"] == list("vwxyz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in favour of torch.export
        traced = torch.jit.load(str(tmp_path / "model_64x128.pt"))
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        assert torch.allclose(traced(x), model(x), atol=1e-5)
    traced(x).sum().backward()  # on-device training runs backward through the traced module
    assert any(p.grad is not None for p in traced.parameters())


def test_bucket_parsing_and_validation(tmp_path):
    assert parse_buckets("512x1024,256x512") == [Bucket(512, 1024, 0.5), Bucket(256, 512, 0.5)]
    assert parse_buckets("64x64:3, 32x32:1")[0].fraction == pytest.approx(0.75)
    for bad in ["", "512", "512x", "axb", "64x64:-1", "64x64,64x64"]:
        with pytest.raises(ExportError):
            parse_buckets(bad)
    with pytest.raises(ExportError, match="multiples of 16"):
        export_model(pruned("deeplabv3plus"), tmp_path, "onnx", [Bucket(40, 64, 1.0)])
    with pytest.raises(ExportError, match="opset"):
        export_model(pruned("deeplabv3plus"), tmp_path, "onnx", [Bucket(64, 64, 1.0)], opset=17)


def test_cli_exports_a_checkpoint_and_reports_bad_input(tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "c.pt", pruned("pspnet"), cdf=MaxwellCDF(1.0, 3.0), class_names=list("abcde"))
    out = tmp_path / "out"
    assert main(["export", str(ckpt), "--format", "onnx", "--out", str(out), "--buckets", "64x128,32x64"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [b["file"] for b in manifest["buckets"]] == ["model_64x128.onnx", "model_32x64.onnx"]
    assert manifest["class_names"] == list("abcde") and (out / "model_32x64.onnx").is_file()
    capsys.readouterr()
    assert main(["export", str(tmp_path / "missing.pt"), "--out", str(out), "--buckets", "64x64"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert main(["export", str(ckpt), "--out", str(out), "--buckets", "64by64"]) == 2
    assert "bad bucket" in capsys.readouterr().err
    assert main(["export", str(ckpt), "--out", str(out)]) == 2  # no training config in the checkpoint
    assert "--buckets" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "manifest.json" in capsys.readouterr().out


def test_default_buckets_come_from_the_validation_images(tmp_path):
    from workers.data.synth import generate_dataset

    root = tmp_path / "synth"
    generate_dataset(root, n_train=2, n_val=6, size=(96, 192), seed=3)
    model = pruned("deeplabv3plus")
    config = {"data": {"kind": "cityscapes", "root": str(root), "cache_dir": str(tmp_path / "cache")},
              "slimming": {"cad": True, "cad_range": {"lo": 0.5, "hi": 1.0}}}
    ckpt = save_checkpoint(tmp_path / "c.pt", model, cdf=MaxwellCDF(0.0, 20.0), extra={"config": config})
    res = export_checkpoint(ckpt, tmp_path / "out", "onnx", verify=False)
    buckets = res.manifest["buckets"]
    assert sum(b["fraction"] for b in buckets) == pytest.approx(1.0)
    assert all(b["height"] % 16 == 0 and b["width"] % 16 == 0 and b["height"] <= 96 for b in buckets)
    assert res.manifest["size_quantum"] == model.size_quantum == 16
    # Buckets cut at train.size_quantum 32: the manifest says 32, so a board computes the same sizes.
    coarse = save_checkpoint(tmp_path / "c32.pt", model, cdf=MaxwellCDF(0.0, 20.0),
                             extra={"config": {**config, "train": {"size_quantum": 32}}})
    res32 = export_checkpoint(coarse, tmp_path / "out32", "onnx", verify=False)
    assert res32.manifest["size_quantum"] == 32
    assert all(b["height"] % 32 == 0 and b["width"] % 32 == 0 for b in res32.manifest["buckets"])
    # A Table 6 ablation (random / inverse p) cannot be sized by a board: refused with one clear error.
    inv = save_checkpoint(tmp_path / "inv.pt", model, cdf=MaxwellCDF(0.0, 20.0),
                          extra={"config": {**config, "slimming": {**config["slimming"], "p_mode": "inverse"}}})
    with pytest.raises(ExportError, match="p_mode=inverse"):
        export_checkpoint(inv, tmp_path / "out_inv", "onnx", verify=False)
    assert all(abs(b["fraction"] * 6 - round(b["fraction"] * 6)) < 1e-9 for b in buckets)  # shares of 6 images
    # The synthetic set has 19 classes, the model 5: dataset names are not borrowed for it.
    assert res.manifest["class_names"] == [f"class_{i}" for i in range(5)]
