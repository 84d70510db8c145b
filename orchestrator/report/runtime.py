"""Table 12: inference runtime of backbone, multi-scale layers and other header layers, with
and without DANCE, timed with forward hooks on the trials' own checkpoints.

Each model runs the validation images at the sizes its own inference uses (DANCE: the CAD
sizes from its CDF; baseline: the stored size), one image per forward, on the CPU with one
thread. Rounds alternate between the two models so drift in the machine's speed hits both;
each part's figure is the median over rounds of its summed time.
"""
from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

from orchestrator.checkpoints import load_run, resolve_inputs

PARTS = ("backbone", "multiscale", "other", "all")


@contextmanager
def _timed_parts(model) -> Any:
    """Install hooks that add each part's forward time to a dict; yields the dict."""
    from workers.models.base import get_parts

    parts = get_parts(model)
    acc = {"backbone": 0.0, "header": 0.0, "multiscale": 0.0, "classifier": 0.0}
    starts: dict[int, float] = {}
    handles = []

    def watch(mod, key: str) -> None:
        def pre(m, _inp):
            starts[id(m)] = time.perf_counter()

        def post(m, _inp, _out):
            acc[key] += time.perf_counter() - starts.pop(id(m))

        handles.append(mod.register_forward_pre_hook(pre))
        handles.append(mod.register_forward_hook(post))

    watch(parts.backbone, "backbone")
    watch(parts.header, "header")
    watch(parts.classifier, "classifier")
    for name in getattr(model, "multiscale_modules", []) or []:
        watch(model.get_submodule(name), "multiscale")
    try:
        yield acc
    finally:
        for h in handles:
            h.remove()


def time_once(model, sizes: Sequence[tuple[int, int]]) -> dict[str, float]:
    """Seconds per part over one pass of ``sizes`` (one image per forward)."""
    import torch

    with _timed_parts(model) as acc, torch.inference_mode():
        t0 = time.perf_counter()
        for h, w in sizes:
            model(torch.zeros(1, 3, h, w))
        total = time.perf_counter() - t0
    return {"backbone": acc["backbone"], "multiscale": acc["multiscale"],
            "other": acc["header"] - acc["multiscale"], "all": total}


def compare_runtime(models: dict[str, tuple[Any, Sequence[tuple[int, int]]]],
                    rounds: int = 5) -> dict[str, dict[str, float]]:
    """``{name: (model, sizes)}`` → ``{name: {part: median seconds}}``, rounds interleaved."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for model, sizes in models.values():  # warm-up: allocator, oneDNN kernels per shape
            time_once(model, sorted(set(sizes)))
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in models}
        for _ in range(rounds):
            for name, (model, sizes) in models.items():
                runs[name].append(time_once(model, sizes))
    finally:
        torch.set_num_threads(threads)
    return {name: {p: statistics.median(r[p] for r in rs) for p in PARTS} for name, rs in runs.items()}


def load_for_timing(ckpt: Path, max_images: int = 24):
    """(model, the first ``max_images`` inference sizes of its val split) from a checkpoint file."""
    run = load_run(ckpt, "cpu")
    _ds, sizes, _p = resolve_inputs(run)
    return run.checkpoint.model.eval(), [tuple(map(int, s)) for s in sizes[:max_images]]
