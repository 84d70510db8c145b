"""Which finished trials a hardware-in-the-loop sweep sends to the boards.

Decided once per trial, when it ends (in the order trials end):

* ``all``: every trial that left a checkpoint;
* ``promoted``: trials that trained past the scheduler's first rung (``grace_period``
  epochs);
* ``{pareto_top: K}``: trials within the first K Pareto fronts of the trials ended so far;
  a device objective not measured yet is stood in for by the trial's counted inference
  FLOPs (the paper's proxy, §2.2);
* ``predicted_front``: the same with the cost model's prediction standing in for it
  (``front_ranks`` fronts); a trial the model cannot predict yet is measured.

Only rows that have every objective (measured, predicted or stood in for) are ranked. The
decision is made on what is known when the trial ends: stand-ins and predictions are later
replaced by measurements, so a trial skipped then might have reached the measured front.
It is never shown there unmeasured: a trial without its device figures is ranked after
every complete one.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from orchestrator.hil.schema import HilConfig
from orchestrator.runs.pareto import pareto_ranks

#: what stands in for an unmeasured device objective in ``pareto_top``
STAND_IN = "infer_flops_per_image"


def objective_value(metrics: dict[str, float], metric: str, predicted: bool) -> float | None:
    """A trial's value for one objective: measured, else the cost model's (``predicted``), else
    for a device objective its counted FLOPs (``pareto_top``)."""
    v = metrics.get(metric)
    if v is None and metric.startswith("device."):
        v = metrics.get(f"predicted.{metric}") if predicted else metrics.get(STAND_IN)
    return v


def front_rank(trial: str, rows: list[dict[str, Any]], objectives: list[tuple[str, str]],
               predicted: bool) -> int | None:
    """Pareto rank of ``trial`` among the ``rows`` (ended trials: {"trial", "metrics"}) that have a value
    for every objective; None when ``trial`` itself lacks one."""
    def values(r):
        return [objective_value(r["metrics"], m, predicted) for m, _ in objectives]

    me = next(r for r in rows if r["trial"] == trial)
    if any(v is None for v in values(me)):
        return None
    complete = [r for r in rows if r is me or all(v is not None for v in values(r))]
    ranks = pareto_ranks(np.array([values(r) for r in complete], dtype=np.float64), [mode for _, mode in objectives])
    return int(ranks[next(i for i, r in enumerate(complete) if r is me)])


def decide(hil: HilConfig, trial: dict[str, Any], ended: list[dict[str, Any]], objectives: list[tuple[str, str]],
           *, epochs: int, grace: int | None, model_ready: bool,
           unready: str = "cost model not trained yet for these boards") -> tuple[bool, str]:
    """(measure?, why) for ``trial`` ({"trial", "status", "epochs", "metrics"}) given the trials ended so far.

    ``unready`` says what the prediction lacks when ``model_ready`` is false.
    """
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
        return True, f"{unready}: measured to learn"
    rank = front_rank(trial["trial"], finished, objectives, predicted=mode == "predicted_front")
    if rank is None:
        return True, "an objective cannot be ranked yet: measured"
    k = hil.top_ranks
    word = "predicted " if mode == "predicted_front" else ""
    if rank <= k:
        return True, f"{word}Pareto rank {rank} <= {k}"
    return False, f"{word}Pareto rank {rank} > {k}"
