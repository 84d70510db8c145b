"""Driver-side preparation of a training run: score once, fit the CDF once.

The driver scores the training set (Eq. 1, cached on disk so a sweep scores a dataset
once), fits the Maxwell CDF on it, maps the training *and* validation scores through
that one CDF (the validation set never influences the fit), and hands p and the CDF to
every worker in the worker config. Workers then derive sizes, drop probabilities and
loss weights from p with :mod:`workers.dance.slimming`; none of them scores or fits.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from workers.config import ExperimentConfig

Progress = Callable[[int, int], None]


def needs_scores(cfg: ExperimentConfig) -> bool:
    """Whether any data-slimming switch depends on p (RD does not)."""
    return cfg.slimming.uses_p


def pretrained_digests(cfg: ExperimentConfig) -> dict[str, str]:
    """{path: sha256} of the configured pretrained backbone when it is a file here; {} otherwise."""
    from pathlib import Path

    from workers.digest import cached_file_sha256

    path = cfg.model.pretrained_backbone
    return {str(path): cached_file_sha256(path)} if path and Path(path).is_file() else {}


def worker_config(cfg: ExperimentConfig, *, progress_train: Progress | None = None,
                  progress_val: Progress | None = None, run_name: str | None = None,
                  score: bool | None = None) -> dict[str, Any]:
    """The plain dict :func:`workers.train_loop.train_loop` receives (JSON-able).

    ``score`` forces scoring on (a sweep scores once for every trial, some of which use p)
    or off; by default only a config whose slimming uses p is scored.
    """
    from workers.dance.cdf import MaxwellCDF
    from workers.data.datasets import open_dataset
    from workers.data.scoring import score_dataset
    from workers.evaluate import scoring_flops, stored_sizes

    out: dict[str, Any] = {"experiment": cfg.model_dump(mode="json"), "cdf": None, "train_p": None, "val_p": None,
                           "scoring_flops": 0, "run_name": run_name or cfg.name}
    # The weights as this (driver) process finds them: the worker checks that it loads the same file.
    out["pretrained_sha256"] = pretrained_digests(cfg)
    d = cfg.data
    # Opened even when nothing is scored: layout and pairing errors surface here, not in a worker.
    train = open_dataset(d.kind, d.root, d.train_split)
    val = open_dataset(d.kind, d.root, d.val_split)
    if not (needs_scores(cfg) if score is None else score):
        return out
    sc_train = score_dataset(train, cache_dir=d.cache_dir, batch_size=d.score_batch, progress=progress_train)
    try:
        cdf = MaxwellCDF.fit(sc_train)
    except ValueError as exc:
        from workers.data.datasets.base import DatasetError

        raise DatasetError(f"{d.root} ({d.train_split}): {exc}") from None
    sc_val = score_dataset(val, cache_dir=d.cache_dir, batch_size=d.score_batch, progress=progress_val)
    out["cdf"] = cdf.to_dict()
    out["train_p"] = [float(v) for v in cdf.p(sc_train)]
    out["val_p"] = [float(v) for v in cdf.p(sc_val)]
    # Training pays for scoring its images once (DESIGN §4); counted here, added to train_flops.
    out["scoring_flops"] = int(sum(scoring_flops(h, w) for h, w in stored_sizes(train)))
    out["sc_train_summary"] = {"min": float(np.min(sc_train)), "median": float(np.median(sc_train)),
                               "max": float(np.max(sc_train))}
    return out
