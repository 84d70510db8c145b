"""Which finished trials a hardware-in-the-loop sweep sends to the boards.

Decided once per trial, when it ends (in the order trials end):

* ``all``: every trial that left a checkpoint;
* ``promoted``: trials that trained past the scheduler's first rung (``grace_period``
  epochs); without a scheduler, trials that trained every epoch;
* ``{pareto_top: K}``: trials within the first K Pareto fronts of the trials ended so far;
* ``predicted_front``: the same with the cost model's predictions standing in for the
  device objectives of unmeasured trials (``front_ranks`` fronts).

A trial's Pareto rank among the trials ended so far can only grow as more end, so every
trial that ends within the first K fronts of the whole sweep was within them when it ended:
deciding early never misses one (it may measure a trial that is later dominated).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from orchestrator.hil.schema import HilConfig
from orchestrator.sweep.pareto import pareto_ranks


def objective_value(metrics: dict[str, float], metric: str, predicted: bool) -> float | None:
    """A trial's value for one objective: measured first, then (if allowed) the cost model's."""
    v = metrics.get(metric)
    if v is None and predicted and metric.startswith("device."):
        v = metrics.get(f"predicted.{metric}")
    return v


def front_rank(trial: str, rows: list[dict[str, Any]], objectives: list[tuple[str, str]], predicted: bool) -> int | None:
    """Pareto rank of ``trial`` among ``rows`` (ended trials: {"trial", "metrics"}) on the objectives
    every row has a value for; None if ``trial`` lacks one of the objectives that remain."""
    usable = [(m, mode) for m, mode in objectives
              if all(objective_value(r["metrics"], m, predicted) is not None for r in rows)]
    if not usable:
        return 1
    values = np.array([[objective_value(r["metrics"], m, predicted) for m, _ in usable] for r in rows],
                      dtype=np.float64)
    ranks = pareto_ranks(values, [mode for _, mode in usable])
    idx = next(i for i, r in enumerate(rows) if r["trial"] == trial)
    return int(ranks[idx])


def decide(hil: HilConfig, trial: dict[str, Any], ended: list[dict[str, Any]], objectives: list[tuple[str, str]],
           *, epochs: int, grace: int | None, model_ready: bool) -> tuple[bool, str]:
    """(measure?, why) for ``trial`` ({"trial", "status", "epochs", "metrics"}) given the trials ended so far."""
    if not trial.get("has_checkpoint", True):
        return False, "no checkpoint"
    mode = hil.mode
    if mode == "all":
        return True, "measure: all"
    if mode == "promoted":
        need = epochs if grace is None else grace + 1
        if trial["epochs"] >= need:
            return True, f"trained {trial['epochs']} epoch(s), past the first rung"
        return False, f"not promoted ({trial['epochs']} epoch(s) < {need})"
    finished = [r for r in ended if r["status"] == "FINISHED"]
    if trial["status"] != "FINISHED":
        return False, "stopped early: not ranked"
    if mode == "predicted_front" and not model_ready:
        return True, "cost model not trained yet for these boards: measured to learn"
    rank = front_rank(trial["trial"], finished, objectives, predicted=mode == "predicted_front")
    if rank is None:
        return True, "missing an objective: measured"
    k = hil.top_ranks
    word = "predicted " if mode == "predicted_front" else ""
    if rank <= k:
        return True, f"{word}Pareto rank {rank} <= {k}"
    return False, f"{word}Pareto rank {rank} > {k}"
