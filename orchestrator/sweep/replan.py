"""Concurrency re-planned from the live cluster while a sweep runs (issue 17).

:func:`~orchestrator.sweep.resources.plan_concurrency` sizes ``max_concurrent_trials`` from the
nodes at the start. A node that leaves makes that number too large (the extra trials' worker
groups wait for CPUs that are gone); a node that joins leaves its CPUs idle. Every
:data:`CHECK_S` seconds of Tune's loop, :class:`Replanner` reads the alive nodes again and, when
they changed, gives the search algorithm the concurrency they hold now, with one line saying so.
A trial that no node can hold any more waits (concurrency 1) for a node to join.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ray.tune import Callback

from orchestrator.errors import UserError
from orchestrator.sweep.resources import TrialNeeds, cluster_nodes, plan_concurrency

CHECK_S = 5.0


@dataclass
class Plan:
    """What the driver planned with: the trials' needs, the configured request, where lines go."""
    needs: list[TrialNeeds]
    requested: int | str
    say: Callable[[str], None]


# sweep id -> its Plan, set by the driver that runs the sweep (Tune pickles its callbacks with the
# sweep's state; what a restarted driver planned with is not theirs to keep)
PLANS: dict[str, Plan] = {}


def replanned(needs: list[TrialNeeds], nodes: list[dict], requested: int | str) -> int:
    """How many trials ``nodes`` hold at once: never below 1, never above a fixed request."""
    try:
        fits = plan_concurrency(needs, nodes, "auto")
    except UserError:  # no node can hold a trial now: one waits for a node to join
        return 1
    return fits if requested == "auto" else max(1, min(int(requested), fits))


def set_concurrency(search_alg, n: int) -> None:
    """Tune's BasicVariantGenerator and ConcurrencyLimiter both read ``max_concurrent`` before each new trial."""
    if hasattr(search_alg, "set_max_concurrency"):
        search_alg.set_max_concurrency(n)
    else:
        search_alg.max_concurrent = n


def _shape(nodes: list[dict]) -> tuple:
    return tuple(sorted((float(n.get("CPU", 0)), float(n.get("GPU", 0))) for n in nodes))


class Replanner(Callback):
    """A Tune callback holding the sweep's search algorithm; re-plans when the alive nodes change."""

    def __init__(self, sweep_id: str, search_alg, concurrency: int,
                 nodes_fn: Callable[[], list[dict]] = cluster_nodes, clock: Callable[[], float] = time.monotonic):
        self.sweep_id, self.search_alg, self.concurrency = sweep_id, search_alg, concurrency
        self.nodes_fn, self.clock = nodes_fn, clock
        self._next = 0.0
        self._shape: tuple | None = None

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        now = self.clock()
        plan = PLANS.get(self.sweep_id)
        if now < self._next or plan is None or self.search_alg is None:
            return
        self._next = now + CHECK_S
        try:
            nodes = self.nodes_fn()
        except Exception:  # the GCS is briefly unreachable: try again at the next check
            return
        shape = _shape(nodes)
        if shape == self._shape:
            return
        # the first check always sets it: a restored sweep's search algorithm holds what was saved last
        first, self._shape = self._shape is None, shape
        n = replanned(plan.needs, nodes, plan.requested)
        if n != self.concurrency:
            cpus = sum(float(x.get("CPU", 0)) for x in nodes)
            plan.say(f"the cluster has {len(nodes)} node(s) and {cpus:g} CPU now: up to {n} trial(s) at once "
                     f"(was {self.concurrency})")
        if first or n != self.concurrency:
            set_concurrency(self.search_alg, n)
        self.concurrency = n
