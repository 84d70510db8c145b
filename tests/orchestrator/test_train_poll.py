"""Ray Train's controller polls its workers every 0.5 s, not its 2 s default (issue 17: a tiny trial's fixed
cost 25.6 s -> 20.2 s), unless the user chose a value; Ray Train hands the setting to the controller."""
from __future__ import annotations

import os

from orchestrator.config import load_config
from orchestrator.training import TRAIN_POLL_ENV, TRAIN_POLL_S, build_trainer


def _build(tmp_path):
    cfg = load_config(None, [f"data.root={tmp_path}", "model.variant=small", "scaling.num_workers=1",
                             f"train.storage_path={tmp_path / 'results'}"])
    return build_trainer(cfg, {}, run_name="poll")


def test_the_trainer_polls_faster_and_ray_train_passes_it_on(tmp_path, monkeypatch):
    from ray.train.v2._internal.constants import get_env_vars_to_propagate

    monkeypatch.setenv(TRAIN_POLL_ENV, "unset")  # recorded first, so the test leaves the variable as it found it
    monkeypatch.delenv(TRAIN_POLL_ENV)
    _build(tmp_path)
    assert get_env_vars_to_propagate()[TRAIN_POLL_ENV] == TRAIN_POLL_S == "0.5"


def test_a_value_the_user_set_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv(TRAIN_POLL_ENV, "3")
    _build(tmp_path)
    assert os.environ[TRAIN_POLL_ENV] == "3"
