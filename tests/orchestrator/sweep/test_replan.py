"""Concurrency re-planned from the live nodes while a sweep runs (orchestrator/sweep/replan.py)."""
from __future__ import annotations

from orchestrator.sweep.replan import CHECK_S, PLANS, Plan, Replanner, replanned
from orchestrator.sweep.resources import TrialNeeds

NEED = TrialNeeds(workers=1, cpus_per_worker=0.98, gpus_per_worker=0.0, driver_cpus=0.01)  # the cluster tests'


class Grid:
    """Stands for Tune's BasicVariantGenerator: it reads max_concurrent before every new trial."""
    max_concurrent = 2


class Limiter:
    """Stands for Tune's ConcurrencyLimiter."""
    def __init__(self) -> None:
        self.calls: list[int] = []

    def set_max_concurrency(self, n: int) -> bool:
        self.calls.append(n)
        return True


def _run(alg, shapes: list[list[dict]], requested="auto", start=2) -> tuple[list[str], list[int]]:
    lines: list[str] = []
    PLANS["s"] = Plan([NEED], requested, lines.append)
    feed, now = iter(shapes), [0.0]
    rp = Replanner("s", alg, start, nodes_fn=lambda: next(feed), clock=lambda: now[0])
    seen = []
    try:
        for _ in shapes:
            rp.on_step_begin(0, [])
            rp.on_step_begin(0, [])  # within CHECK_S: not read again
            seen.append(rp.concurrency)
            now[0] += CHECK_S
    finally:
        PLANS.pop("s")
    return lines, seen


def test_a_node_that_leaves_then_joins_changes_concurrency_with_one_line_each():
    two, one = [{"CPU": 1.0}, {"CPU": 1.0}], [{"CPU": 1.0}]
    grid = Grid()
    lines, seen = _run(grid, [two, two, one, one, two])
    assert seen == [2, 2, 1, 1, 2] and grid.max_concurrent == 2
    assert lines == ["the cluster has 1 node(s) and 1 CPU now: up to 1 trial(s) at once (was 2)",
                     "the cluster has 2 node(s) and 2 CPU now: up to 2 trial(s) at once (was 1)"]


def test_a_fixed_request_is_never_exceeded_and_a_trial_that_fits_nowhere_waits():
    lim = Limiter()
    three, small = [{"CPU": 1.0}] * 3, [{"CPU": 0.5}]
    lines, seen = _run(lim, [three, small, three], requested=2)
    assert seen == [2, 1, 2] and lim.calls == [2, 1, 2] and len(lines) == 2  # the first check sets it too
    # the drivers sit together on one node (plan_concurrency), so three 1-CPU nodes hold two trials
    assert replanned([NEED], three, "auto") == 2 and replanned([NEED], [{"CPU": 2.0}] * 2, "auto") == 4
    assert replanned([NEED], [], "auto") == 1


def test_without_the_drivers_plan_nothing_changes():
    grid = Grid()
    rp = Replanner("gone", grid, 2, nodes_fn=lambda: [{"CPU": 1.0}], clock=lambda: 0.0)
    rp.on_step_begin(0, [])
    assert grid.max_concurrent == 2 and rp.concurrency == 2
