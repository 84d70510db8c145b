"""The sweep's search algorithm: the planned concurrency on it, and picklable (Tune saves it for --resume)."""
from __future__ import annotations

import pytest
import ray.cloudpickle as pickle

from orchestrator.sweep.runner import _search_alg
from orchestrator.sweep.space import load_sweep

SPACE = """
name: s
data: {{root: {root}}}
model: {{name: deeplabv3plus, variant: small}}
sweep:
  search: {search}
  num_samples: 3
  space:
    optim.lr: {{loguniform: [0.001, 0.1]}}
"""


def _spec(tmp_path, search: str):
    from workers.data.synth import generate_dataset

    generate_dataset(tmp_path / "data", n_train=2, n_val=1, size=(32, 64))
    cfg = tmp_path / f"{search}.yaml"
    cfg.write_text(SPACE.format(root=tmp_path / "data", search=search))
    return load_sweep(cfg)


def test_grid_search_holds_the_planned_concurrency(tmp_path):
    alg = pickle.loads(pickle.dumps(_search_alg(_spec(tmp_path, "grid"), 2)))
    assert type(alg).__name__ == "BasicVariantGenerator" and alg.max_concurrent == 2


def test_a_multi_objective_optuna_search_survives_pickling(tmp_path):
    """Optuna 5's NSGA-II sampler holds a lock: pickled as it is, Tune failed to save the sweep before the first
    trial (TypeError: cannot pickle '_thread.lock'). Ours leaves the lock out and remakes it."""
    pytest.importorskip("optuna")
    alg = _search_alg(_spec(tmp_path, "optuna"), 2)
    assert len(alg.searcher._metric) == 3  # the default objectives: mIoU, training and inference FLOPs
    back = pickle.loads(pickle.dumps(alg))
    assert type(back).__name__ == "ConcurrencyLimiter" and back.max_concurrent == 2
    lock = back.searcher._sampler._thread_lock
    assert lock.acquire(blocking=False)  # a fresh, working lock
    lock.release()
