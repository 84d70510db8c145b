"""The experiment schema: defaults from the paper, every shipped YAML valid, errors with YAML paths."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import load_config
from orchestrator.errors import UserError
from workers.config import ExperimentConfig

ROOT = Path(__file__).resolve().parents[2]
# Experiment files (board inventories and sweeps have their own schema and tests).
SHIPPED = sorted(p for p in (ROOT / "configs").glob("*.yaml") if p.name != "boards.yaml") + \
    sorted((ROOT / "configs" / "ablations").glob("*.yaml"))


def error_of(tmp_path: Path, text: str, overrides: list[str] = ()) -> str:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(UserError) as exc:
        load_config(f, overrides)
    return str(exc.value)


def test_paper_defaults():
    cfg = ExperimentConfig()
    assert cfg.model.name == "deeplabv3plus" and cfg.lr == 1e-3 and cfg.batch_size == 8
    assert cfg.ans.enabled and cfg.ans.stages == 6 and cfg.ans.target_ratio == 0.5
    assert cfg.slimming.cad and cfg.slimming.casd and cfg.slimming.cal and not cfg.slimming.rd
    assert cfg.train.mode == "co" and cfg.optim.momentum == 0.9
    icnet = ExperimentConfig.model_validate({"model": {"name": "icnet"}})
    assert icnet.lr == 1e-2 and icnet.batch_size == 16
    assert ExperimentConfig.model_validate({"model": {"name": "bisenet"}}).batch_size == 16


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    load_config(path)


def test_quickstart_turns_everything_on():
    cfg = load_config(ROOT / "configs" / "quickstart.yaml")
    assert cfg.ans.enabled and cfg.slimming.cad and cfg.slimming.casd and cfg.slimming.cal
    assert cfg.model.variant == "small" and cfg.scaling.num_workers == 2 and not cfg.scaling.use_gpu


def test_errors_name_their_yaml_paths(tmp_path):
    msg = error_of(tmp_path, """
optim: {momentum: 1.5, lr: -1}
train: {epochs: 0, batch_size: 1, mode: sideways, colour: red}
scaling: {num_workers: 0}
model: {name: unet}
""")
    for path in ("optim.momentum", "optim.lr", "train.epochs", "train.batch_size", "train.mode", "train.colour",
                 "scaling.num_workers", "model"):
        assert f"  {path}" in msg, path
    assert "unknown key" in msg and "unet" in msg


def test_model_options_are_checked(tmp_path):
    msg = error_of(tmp_path, "model: {name: deeplabv3plus, variant: small, options: {aspp_channels: 16, wings: 2}}\n")
    assert "wings" in msg and "model" in msg
    cfg = load_config(None, ["model.variant=small", "model.options={aspp_channels: 16}"])
    assert cfg.model.options == {"aspp_channels": 16}


def test_cross_field_rules(tmp_path):
    assert "ans.enabled is false" in error_of(tmp_path, "train: {mode: network_then_data}\nans: {enabled: false}\n")
    msg = error_of(tmp_path, "train: {mode: data_then_network}\nslimming: {cad: false, casd: false, cal: false}\n")
    assert "every slimming switch is off" in msg
    assert "at least 2 epochs" in error_of(tmp_path, "train: {mode: data_then_network, epochs: 1}\n")
    msg = error_of(tmp_path, "train: {epochs: 3, fault_injection: {epoch: 1, rank: 3, marker: /tmp/m}}\n")
    assert "fault_injection.rank" in msg
    assert "nccl" in error_of(tmp_path, "scaling: {backend: nccl}\n")
    assert "min_batch" in error_of(tmp_path, "train: {batch_size: 2, min_batch: 4}\n")


def test_overrides_reach_nested_sections():
    cfg = load_config(ROOT / "configs" / "quickstart.yaml",
                      ["slimming.cad=false", "ans.stages=3", "train.init_checkpoint=/x/model.pt",
                       "scaling.use_gpu=true"])
    assert not cfg.slimming.cad and cfg.ans.stages == 3 and cfg.train.init_checkpoint == Path("/x/model.pt")
    assert cfg.scaling.use_gpu
