"""How many trials the cluster holds at once, and which trials it can never hold.

A trial is a tiny driver (``sweep.trial_cpus``) plus a Ray Train worker group of
``num_workers × cpus_per_worker`` CPUs (and GPUs). Tune would happily start more trials
than fit; their worker groups then wait for CPUs forever (on 2 cores:
``WorkerGroupStartupTimeoutError``, retried without end). So ``auto`` concurrency is the
number of whole worker groups the cluster's nodes can place, and a trial that no node
arrangement can hold is refused before the first trial starts.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from orchestrator.errors import UserError
from workers.config import ExperimentConfig

log = logging.getLogger("dance.sweep")


@dataclass(frozen=True)
class TrialNeeds:
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    driver_cpus: float

    @property
    def cpus(self) -> float:
        return self.workers * self.cpus_per_worker + self.driver_cpus

    @property
    def gpus(self) -> float:
        return self.workers * self.gpus_per_worker


def needs_of(cfg: ExperimentConfig, driver_cpus: float) -> TrialNeeds:
    s = cfg.scaling
    return TrialNeeds(s.num_workers, s.cpus_per_worker, s.gpus_per_worker if s.use_gpu else 0.0, driver_cpus)


def _groups_on_nodes(nodes: list[dict], need: TrialNeeds) -> int:
    """Worker groups that fit at once when each worker must sit whole on one node."""
    workers = 0
    for n in nodes:
        per_cpu = int(n.get("CPU", 0) // need.cpus_per_worker + 1e-9) if need.cpus_per_worker else 10 ** 6
        per_gpu = int(n.get("GPU", 0) // need.gpus_per_worker + 1e-9) if need.gpus_per_worker else 10 ** 6
        workers += min(per_cpu, per_gpu)
    return workers // max(need.workers, 1)


def _fits_with_drivers(nodes: list[dict], need: TrialNeeds, k: int) -> bool:
    """Whether k worker groups still fit when the k trial drivers all sit on the largest node.

    Tune packs the drivers' small bundles together, so that is the case to plan for.
    """
    left = [dict(n) for n in nodes]
    big = max(left, key=lambda n: n.get("CPU", 0))
    big["CPU"] = big.get("CPU", 0) - k * need.driver_cpus
    return big["CPU"] >= 0 and _groups_on_nodes(left, need) >= k


def plan_concurrency(needs: list[TrialNeeds], nodes: list[dict], requested: int | str) -> int:
    """``max_concurrent_trials`` for these trials on these nodes; UserError if one never fits."""
    total_cpu = sum(n.get("CPU", 0) for n in nodes)
    total_gpu = sum(n.get("GPU", 0) for n in nodes)
    worst = max(needs, key=lambda n: (n.cpus, n.gpus))
    for need in needs:
        if _groups_on_nodes(nodes, need) < 1:
            raise UserError(
                f"a trial needs {need.workers} worker(s) × {need.cpus_per_worker:g} CPU"
                + (f" + {need.gpus_per_worker:g} GPU" if need.gpus_per_worker else "")
                + f", but the Ray cluster has {total_cpu:g} CPU and {total_gpu:g} GPU on {len(nodes)} node(s) "
                  "(largest node: " + f"{max((n.get('CPU', 0) for n in nodes), default=0):g} CPU); it could never "
                  "start. Lower scaling.num_workers or scaling.cpus_per_worker, or add nodes")
    groups = _groups_on_nodes(nodes, worst)
    fits = max(1, max((k for k in range(1, groups + 1) if _fits_with_drivers(nodes, worst, k)), default=1))
    if requested == "auto":
        if fits < groups:
            log.warning("only %d trial(s) at a time: the trial drivers' CPU share (%g each) leaves no room for a "
                        "further worker group; a slightly smaller scaling.cpus_per_worker (e.g. %.2f) would let %d "
                        "run at once", fits, worst.driver_cpus,
                        math.floor((worst.cpus_per_worker - groups * worst.driver_cpus) * 100) / 100, groups)
        return fits
    if int(requested) > fits:
        raise UserError(f"sweep.max_concurrent_trials is {requested}, but the cluster holds only {fits} trial(s) "
                        f"of {worst.workers} × {worst.cpus_per_worker:g} CPU at once; the rest would wait for CPUs "
                        "forever. Use auto or at most " + str(fits))
    return int(requested)


def cluster_nodes() -> list[dict]:
    """Resources of the alive nodes of the connected Ray cluster."""
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
