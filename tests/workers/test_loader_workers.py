"""``train.loader_workers`` (the full-scale reproduction's GPU nodes use 3): DataLoader processes
change where samples are decoded and augmented, never which samples a step sees.

A run with one loader process must train exactly as a run without: the sampler plans every
step, and each sample's augmentation is drawn from its own (seed, epoch, index) generator, not
from the process that happens to load it.
"""
from __future__ import annotations

import pytest

from orchestrator.config import load_config
from workers.prepare import worker_config
from workers.train_loop import run_local


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from workers.data.synth import generate_dataset

    tmp = tmp_path_factory.mktemp("loaders")
    generate_dataset(tmp / "a", n_train=12, n_val=2, size=(64, 128), seed=3)
    return tmp


def reports(data, loaders: int) -> list[dict]:
    cfg = load_config(None, [f"data.root={data / 'a'}", f"data.cache_dir={data / 'cache'}", "model.variant=small",
                             "data.augment=true", "ans.stages=2", "ans.l1_lambda=1e-3", "optim.lr=0.02",
                             "train.epochs=2", "train.batch_size=2", "train.eval_batch_size=2",
                             "scaling.num_workers=1", f"train.loader_workers={loaders}"])
    return run_local(worker_config(cfg)).reports


def test_loader_processes_train_exactly_as_the_main_process(data):
    inline, loaded = reports(data, 0), reports(data, 1)
    for a, b in zip(inline, loaded, strict=True):
        for key in ("train_loss", "miou", "train_flops", "train_images", "header_channels_kept"):
            assert a.get(key) == pytest.approx(b.get(key), rel=1e-6), (a["epoch"], key)
