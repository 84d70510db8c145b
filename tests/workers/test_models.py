"""Segmentation models: registry, forward contract, parts, pretrained loading, custom models."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workers.models import (
    ModelParts,
    PretrainedReport,
    SegmentationModel,
    build_model,
    check_header,
    get_parts,
    header_layer_groups,
    list_models,
    load_backbone_weights,
    model_options,
)
from workers.models.layers import adaptive_avg_pool_static
from workers.models.resnet import resnet

BUILTIN = ["bisenet", "deeplabv3", "deeplabv3plus", "icnet", "pspnet"]
NUM_CLASSES = 5


@pytest.fixture(scope="module")
def small_models() -> dict[str, SegmentationModel]:
    torch.manual_seed(0)
    return {name: build_model(name, NUM_CLASSES, variant="small") for name in BUILTIN}


def _sizes(model: SegmentationModel) -> list[tuple[int, int]]:
    q, lo = model.size_quantum, model.min_size
    return [(lo, lo), (lo, lo + q), (lo + 3 * q, lo + q), (128, 256)]


# --- registry -------------------------------------------------------------------------------

def test_registry_lists_the_papers_models():
    assert list_models() == BUILTIN
    assert list_models(include_custom=True) == BUILTIN + ["custom"]


def test_unknown_name_option_and_variant_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model 'unet'.*deeplabv3plus"):
        build_model("unet", 3)
    with pytest.raises(TypeError, match="unknown option.*aspp_width.*valid options"):
        build_model("deeplabv3plus", 3, "small", aspp_width=3)
    with pytest.raises(ValueError, match="no variant 'huge'"):
        build_model("pspnet", 3, "huge")
    with pytest.raises(ValueError, match="num_classes"):
        build_model("pspnet", 0, "small")
    with pytest.raises(ValueError, match="output_stride must be 16 or 8"):
        build_model("deeplabv3plus", 3, "small", output_stride=32)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model("bisenet", 3, "small", backbone="vgg16")


@pytest.mark.parametrize("name", BUILTIN)
def test_spec_is_json_and_rebuilds_the_same_architecture(name):
    model = build_model(name, NUM_CLASSES, variant="small")
    spec = json.loads(json.dumps(model.spec))
    assert spec == model.spec
    assert spec["name"] == name and spec["num_classes"] == NUM_CLASSES and spec["variant"] == "small"
    rebuilt = build_model(**spec)
    assert str(rebuilt) == str(model)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert (rebuilt.size_quantum, rebuilt.min_size, rebuilt.multiscale_modules) == \
        (model.size_quantum, model.min_size, model.multiscale_modules)
    rebuilt.load_state_dict(model.state_dict())  # checkpoints restore into a spec rebuild


def test_spec_keeps_overrides_and_drops_pretrained_path(tmp_path):
    trunk = resnet("resnet50", 16, [1, 1, 1, 1])
    path = tmp_path / "r.pth"
    torch.save(trunk.state_dict(), path)
    model = build_model("deeplabv3plus", 3, "small", output_stride=8, aspp_channels=24, pretrained_backbone=str(path))
    assert model.spec["output_stride"] == 8 and model.spec["aspp_channels"] == 24
    assert "pretrained_backbone" not in model.spec
    assert str(build_model(**model.spec)) == str(model)
    assert model.pretrained_report.complete


def test_model_options_lists_the_defaults():
    opts = model_options("deeplabv3plus")
    assert opts["backbone"] == "resnet50" and opts["output_stride"] == 16 and opts["low_level_channels"] == 48
    assert model_options("pspnet")["bins"] == [1, 2, 3, 6]
    assert model_options("bisenet")["backbone"] == "resnet18"


# --- forward contract ------------------------------------------------------------------------

@pytest.mark.parametrize("name", BUILTIN)
def test_small_forward_at_several_sizes(name, small_models):
    model = small_models[name]
    model.train()
    for h, w in _sizes(model):
        x = torch.randn(2, 3, h, w)
        y = model(x)
        assert y.shape == (2, NUM_CLASSES, h, w), (h, w)
        assert torch.isfinite(y).all()
    model.eval()
    with torch.no_grad():
        h = w = model.min_size
        assert model(torch.randn(1, 3, h, w)).shape == (1, NUM_CLASSES, h, w)


@pytest.mark.parametrize("name", BUILTIN)
def test_small_backward_reaches_every_parameter(name, small_models):
    model = small_models[name]
    model.train()
    model.zero_grad()
    model(torch.randn(2, 3, 64, 96)).square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters outside the forward graph: {no_grad}"


def test_size_quantum_and_min_size():
    assert build_model("deeplabv3plus", 3, "small").size_quantum == 16
    assert build_model("deeplabv3plus", 3, "small", output_stride=8).size_quantum == 8
    assert build_model("pspnet", 3, "small").size_quantum == 8
    assert build_model("icnet", 3, "small").size_quantum == 32
    assert build_model("bisenet", 3, "small").size_quantum == 32
    model = build_model("icnet", 3, "small")
    assert model.min_size % model.size_quantum == 0
    model.check_input_size(64, 96)
    with pytest.raises(ValueError, match="multiple of 32"):
        model.check_input_size(64, 100)


def test_deeplab_output_strides_and_aspp_rates():
    for os_, rates, dilated in ((16, [6, 12, 18], [1, 1, 1, 2]), (8, [12, 24, 36], [1, 1, 2, 4])):
        # two blocks in the dilated stages: the first block keeps the previous dilation (torchvision)
        model = build_model("deeplabv3plus", 3, "small", output_stride=os_, backbone_depths=[1, 1, 2, 2])
        feats = model.backbone(torch.randn(1, 3, 64, 64))
        assert feats["layer1"].shape[-1] == 16 and feats["layer4"].shape[-1] == 64 // os_
        aspp = model.header.aspp.branches
        assert [b[0].dilation[0] for b in aspp[1:4]] == rates
        assert [getattr(model.backbone, f"layer{i}")[-1].conv2.dilation[0] for i in range(1, 5)] == dilated
        assert model.header.low_level[0].out_channels == 8  # small variant; 48 in the paper one
    assert build_model("deeplabv3plus", 3, "paper").header.low_level[0].out_channels == 48


def test_pspnet_pools_bin_6_on_a_4x4_map():
    model = build_model("pspnet", 3, "small").eval()
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 32, 32))
        assert feats["layer4"].shape[-2:] == (4, 4)
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    assert [b.bins for b in model.header.ppm.branches] == [1, 2, 3, 6]


@pytest.mark.parametrize("shape,bins", [((4, 4), 6), ((5, 7), 3), ((12, 20), 6), ((16, 32), 2), ((3, 9), 2)])
def test_static_adaptive_pool_matches_torch(shape, bins):
    x = torch.randn(2, 3, *shape)
    assert torch.allclose(adaptive_avg_pool_static(x, bins), F.adaptive_avg_pool2d(x, bins), atol=1e-6)


@pytest.mark.parametrize("name,kwargs", [
    ("deeplabv3plus", {}), ("pspnet", {}), ("icnet", {}), ("bisenet", {}),
    pytest.param("deeplabv3plus", {"backbone": "resnet101", "output_stride": 8}, marks=pytest.mark.slow),
])
def test_paper_variant_forward_at_a_small_size(name, kwargs):
    model = build_model(name, 19, variant="paper", **kwargs).eval()
    size = max(model.min_size, 64)
    with torch.no_grad():
        y = model(torch.randn(1, 3, size, size + model.size_quantum))
    assert y.shape == (1, 19, size, size + model.size_quantum)
    assert check_header(model, torch.randn(1, 3, size, size)) == []


def test_paper_parameter_counts_match_the_reference_networks():
    millions = {name: sum(p.numel() for p in build_model(name, 19, "paper").parameters()) / 1e6 for name in BUILTIN}
    # torchvision ResNet-50 trunk 23.5M, ResNet-18 11.2M; header sizes follow the papers.
    assert 39 < millions["deeplabv3plus"] < 42
    assert 45 < millions["pspnet"] < 48
    assert 24 < millions["icnet"] < 26
    assert 12.5 < millions["bisenet"] < 14


# --- parts -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BUILTIN)
def test_parts_present_and_named(name, small_models):
    model = small_models[name]
    parts = get_parts(model)
    assert isinstance(parts, ModelParts)
    assert (parts.backbone_name, parts.header_name, parts.classifier_name) == ("backbone", "header", "classifier")
    modules = dict(model.named_modules())
    assert modules["backbone"] is parts.backbone is model.backbone
    assert modules["header"] is parts.header is model.header
    assert modules["classifier"] is parts.classifier is model.classifier
    assert isinstance(parts.classifier, nn.Conv2d) and parts.classifier.out_channels == NUM_CLASSES
    # the three parts hold every parameter exactly once
    counted = sum(p.numel() for part in (parts.backbone, parts.header, parts.classifier) for p in part.parameters())
    assert counted == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", BUILTIN)
def test_header_is_prunable(name, small_models):
    model = small_models[name]
    header = get_parts(model).header
    convs = [m for m in header.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.groups == 1 for c in convs)
    assert check_header(model, torch.randn(2, 3, 64, 64)) == []


@pytest.mark.parametrize("name", BUILTIN)
def test_multiscale_modules_split_the_header(name, small_models):
    model = small_models[name]
    modules = dict(model.named_modules())
    assert model.multiscale_modules and all(m.startswith("header.") and m in modules for m in model.multiscale_modules)
    groups = header_layer_groups(model)
    assert groups["multiscale"] and groups["other"]
    all_convs = [f"header.{n}" for n, m in model.header.named_modules() if isinstance(m, nn.Conv2d)]
    assert sorted(groups["multiscale"] + groups["other"]) == sorted(all_convs)


def test_check_header_flags_depthwise_and_missing_bn():
    model = build_model("custom", 4, factory=f"{__name__}:make_bad_net",
                        parts={"backbone": "encoder", "header": "decoder", "classifier": "head"})
    problems = check_header(model, torch.randn(1, 3, 32, 32))
    assert any("net.decoder.0" in p and "depthwise" in p for p in problems)
    assert any("net.decoder.2" in p and "BatchNorm2d" in p for p in problems)


def test_get_parts_unwraps_ddp_like_wrappers(small_models):
    class Wrapper(nn.Module):
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    model = small_models["bisenet"]
    assert get_parts(Wrapper(model)).header is model.header
    with pytest.raises(TypeError, match="not a SegmentationModel"):
        get_parts(nn.Conv2d(1, 1, 1))


# --- ONNX ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BUILTIN)
def test_small_model_exports_to_onnx_opset13(name, small_models):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = small_models[name].eval()
    x = torch.randn(1, 3, 96, 160)  # PSP bins 3 and 6 do not divide the 12x20 map
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x, buf, opset_version=13, dynamo=False)
    graph = onnx.load_from_string(buf.getvalue())
    assert graph.opset_import[0].version == 13
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).numpy()
    assert out.shape == ref.shape and abs(out - ref).max() < 1e-4


# --- pretrained backbones --------------------------------------------------------------------

TORCHVISION_KEYS = ["conv1.weight", "bn1.running_mean", "bn1.num_batches_tracked", "layer1.0.conv1.weight",
                    "layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_var", "layer4.2.bn3.weight"]


def test_resnet_uses_torchvision_names():
    keys = resnet("resnet50").state_dict().keys()
    assert all(k in keys for k in TORCHVISION_KEYS)
    assert not any(k.startswith(("fc.", "avgpool")) for k in keys)
    assert len(keys) == 318  # torchvision's resnet50 state dict has 320 keys, fc.weight and fc.bias included
    assert "layer2.1.bn2.weight" in resnet("resnet18").state_dict()


def _torchvision_style_file(tmp_path: Path, name: str, suffix: str, seed: int = 1, **kw) -> tuple[Path, dict]:
    torch.manual_seed(seed)
    trunk = resnet(name, **kw)
    for t in trunk.state_dict().values():
        if t.is_floating_point():
            t.normal_()
    state = dict(trunk.state_dict())
    state["fc.weight"] = torch.randn(1000, trunk.out_channels["layer4"])
    state["fc.bias"] = torch.randn(1000)
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path, state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("name,backbone", [("deeplabv3plus", "resnet50"), ("bisenet", "resnet18")])
def test_pretrained_backbone_loads_from_a_local_file(tmp_path, suffix, name, backbone):
    path, state = _torchvision_style_file(tmp_path, backbone, suffix, width=16, depths=[1, 1, 1, 1])
    model = build_model(name, 3, "small", pretrained_backbone=str(path))
    report = model.pretrained_report
    assert isinstance(report, PretrainedReport)
    assert report.complete and not report.missing and not report.unexpected
    assert sorted(report.ignored) == ["fc.bias", "fc.weight"]
    own = model.backbone.state_dict()
    assert all(torch.equal(own[k], state[k]) for k in own)
    assert "loaded" in report.summary() and json.dumps(report.to_dict())


def test_pretrained_loads_into_icnet_and_paper_size_backbones(tmp_path):
    path, state = _torchvision_style_file(tmp_path, "resnet50", ".pth", width=16, depths=[1, 1, 1, 1])
    model = build_model("icnet", 3, "small")
    load_backbone_weights(model, path)
    assert torch.equal(model.backbone.layer4[0].conv2.weight, state["layer4.0.conv2.weight"])
    big, big_state = _torchvision_style_file(tmp_path, "resnet18", ".safetensors")
    report = load_backbone_weights(build_model("bisenet", 3, "paper"), big)
    assert report.complete and len(report.loaded) == len(big_state) - 2


def test_pretrained_reports_missing_and_unexpected_keys(tmp_path):
    path, state = _torchvision_style_file(tmp_path, "resnet50", ".pth", width=16, depths=[1, 1, 1, 1])
    del state["layer4.0.bn3.weight"]
    del state["bn1.num_batches_tracked"]  # older torchvision files lack these: not an issue
    state["aux.weight"] = torch.zeros(1)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)  # nested + DDP prefix
    model = build_model("pspnet", 3, "small")
    before = model.backbone.layer4[0].bn3.weight.clone()
    report = load_backbone_weights(model, path)
    assert report.missing == ["layer4.0.bn3.weight"]
    assert report.unexpected == ["aux.weight"]
    assert "bn1.num_batches_tracked" in report.ignored and "fc.weight" in report.ignored
    assert not report.complete
    assert torch.equal(model.backbone.layer4[0].bn3.weight, before)
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    assert "missing in file (1" in report.summary() and "aux.weight" in report.summary()
    with pytest.raises(ValueError, match="layer4.0.bn3.weight"):
        load_backbone_weights(model, path, strict=True)


def test_pretrained_errors(tmp_path):
    model = build_model("deeplabv3plus", 3, "small")
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        load_backbone_weights(model, tmp_path / "nope.pth")
    torch.save({"encoder_weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="no key .* matches the backbone"):
        load_backbone_weights(model, tmp_path / "other.pth")
    wrong, _ = _torchvision_style_file(tmp_path, "resnet18", ".pth", width=16, depths=[1, 1, 1, 1])
    before = model.backbone.conv1.weight.clone()
    with pytest.raises(ValueError, match=r"do not fit the backbone.*layer1\.0\.conv1\.weight"):
        load_backbone_weights(model, wrong)  # ResNet-18 weights into a ResNet-50 trunk
    assert torch.equal(model.backbone.conv1.weight, before)  # all-or-nothing
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="cannot read"):
        load_backbone_weights(model, tmp_path / "junk.pth")


# --- bring your own model ----------------------------------------------------------------------

class TinyNet(nn.Module):
    """A user model: encoder at 1/4, a decoder with an 'aspp' block, a head; logits at 1/4."""

    def __init__(self, num_classes: int, width: int = 8, as_dict: bool = False) -> None:
        super().__init__()
        self.as_dict = as_dict
        self.encoder = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
                                     nn.Conv2d(width, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.decoder = nn.Module()
        self.decoder.aspp = nn.Sequential(nn.Conv2d(width, width, 3, 1, 2, dilation=2), nn.BatchNorm2d(width),
                                          nn.ReLU())
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x):
        out = self.head(self.decoder.aspp(self.encoder(x)))
        return {"out": out, "aux": out} if self.as_dict else out


def make_tiny_net(num_classes: int, width: int = 8, as_dict: bool = False) -> TinyNet:
    return TinyNet(num_classes, width, as_dict)


def make_bad_net() -> nn.Module:
    net = TinyNet(4)
    net.decoder = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1),
                                nn.ReLU())
    net.forward = lambda x: net.head(net.decoder(net.encoder(x)))  # type: ignore[method-assign]
    return net


CUSTOM_PARTS = {"backbone": "encoder", "header": "decoder.aspp", "classifier": "head"}


def _custom(**kw) -> SegmentationModel:
    return build_model("custom", num_classes=6, factory=f"{__name__}:make_tiny_net", parts=CUSTOM_PARTS, **kw)


def test_custom_model_parts_forward_and_spec():
    model = _custom(factory_kwargs={"width": 4}, size_quantum=4, multiscale_modules=["decoder.aspp"])
    parts = get_parts(model)
    assert (parts.backbone_name, parts.header_name, parts.classifier_name) == \
        ("net.encoder", "net.decoder.aspp", "net.head")
    assert parts.backbone is model.net.encoder and parts.header is model.net.decoder.aspp
    assert model.backbone is parts.backbone and model.classifier is parts.classifier
    assert model.net.head.out_channels == 6 and model.net.encoder[0].out_channels == 4  # num_classes passed in
    assert list(model.state_dict()) == [f"net.{k}" for k in model.net.state_dict()]  # parts not duplicated
    assert model(torch.randn(2, 3, 32, 48)).shape == (2, 6, 32, 48)  # 1/4 logits upsampled
    assert model.size_quantum == 4 and model.num_classes == 6
    assert header_layer_groups(model) == {"multiscale": ["net.decoder.aspp.0"], "other": []}
    assert check_header(model, torch.randn(1, 3, 32, 32)) == []
    spec = json.loads(json.dumps(model.spec))
    rebuilt = build_model(**spec)
    assert str(rebuilt) == str(model) and get_parts(rebuilt).header_name == "net.decoder.aspp"


def test_custom_model_dict_output_and_callable_factory():
    model = build_model("custom", 6, factory=make_tiny_net, factory_kwargs={"as_dict": True}, parts=CUSTOM_PARTS)
    assert model.spec["factory"] == f"{__name__}:make_tiny_net"
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 6, 32, 32)


def test_custom_model_errors():
    with pytest.raises(ValueError, match="header path 'decoder.psp' does not name a submodule"):
        build_model("custom", 6, factory=f"{__name__}:make_tiny_net",
                    parts={**CUSTOM_PARTS, "header": "decoder.psp"})
    with pytest.raises(ValueError, match="missing \\['classifier'\\]"):
        build_model("custom", 6, factory=f"{__name__}:make_tiny_net",
                    parts={"backbone": "encoder", "header": "decoder"})
    with pytest.raises(ValueError, match="cannot import factory module"):
        build_model("custom", 6, factory="no_such_pkg.mod:make", parts=CUSTOM_PARTS)
    with pytest.raises(ValueError, match="has no attribute"):
        build_model("custom", 6, factory=f"{__name__}:nothing_here", parts=CUSTOM_PARTS)
    with pytest.raises(ValueError, match="not importable by name"):
        build_model("custom", 6, factory=lambda num_classes: TinyNet(num_classes), parts=CUSTOM_PARTS)
    wrong = build_model("custom", 6, factory=f"{__name__}:make_tiny_net",
                        factory_kwargs={"num_classes": 3}, parts=CUSTOM_PARTS)
    with pytest.raises(ValueError, match=r"\(N, 6, h, w\) logits"):
        wrong(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="header path 'nope'"):
        get_parts(_custom(), parts={"backbone": "net.encoder", "header": "nope", "classifier": "net.head"})
