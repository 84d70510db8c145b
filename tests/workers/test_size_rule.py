"""workers.models.base.size_rule: the quantum and smallest side that input sizes are cut at."""
from __future__ import annotations

import pytest
from torch import nn

from workers.models import build_model, size_rule


def test_model_quantum_and_min_size_by_default():
    model = build_model("deeplabv3plus", 3, "small")
    assert size_rule(model, None) == (model.size_quantum, model.min_size) == (16, model.min_size)


def test_train_quantum_coarsens_but_keeps_the_model_min_size():
    model = build_model("deeplabv3plus", 3, "small")
    assert size_rule(model, 32) == (32, model.min_size)


def test_train_quantum_must_be_a_multiple():
    model = build_model("deeplabv3plus", 3, "small")
    with pytest.raises(ValueError,
                       match=r"train.size_quantum \(24\) must be a multiple of the model's size quantum \(16\)"):
        size_rule(model, 24)


def test_a_model_without_the_attributes():
    assert size_rule(nn.Conv2d(3, 3, 1), None) == (32, 64)
    assert size_rule(nn.Conv2d(3, 3, 1), 64) == (64, 128)
