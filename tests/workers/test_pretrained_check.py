"""A worker refuses to train from weights other than the ones its run recorded (a node with another copy)."""
from __future__ import annotations

import hashlib

import pytest

from orchestrator.config import load_config
from workers.prepare import worker_config
from workers.train_loop import run_local


def test_a_worker_checks_the_weights_file_against_the_drivers_digest(tmp_path):
    from workers.data.synth import generate_dataset

    generate_dataset(tmp_path / "a", n_train=4, n_val=2, size=(64, 128), seed=1)
    w = tmp_path / "w.pth"
    w.write_bytes(b"not a state dict")
    cfg = load_config(None, [f"data.root={tmp_path / 'a'}", f"data.cache_dir={tmp_path / 'cache'}",
                             "model.variant=small", f"model.pretrained_backbone={w}", "ans.enabled=false",
                             "train.epochs=1", "train.batch_size=2", "scaling.num_workers=1"])
    wcfg = worker_config(cfg)
    assert wcfg["pretrained_sha256"] == {str(w): hashlib.sha256(b"not a state dict").hexdigest()}
    w.write_bytes(b"another file at the same path")  # what a node with a stale copy would read
    with pytest.raises(ValueError, match="is not the file the run recorded.*every node must read the same"):
        run_local(wcfg)
    # the recorded file passes the check and reaches the loader, which then judges its contents
    w.write_bytes(b"not a state dict")
    with pytest.raises(Exception) as exc:
        run_local(wcfg)
    assert "is not the file the run recorded" not in str(exc.value)
