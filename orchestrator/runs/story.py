"""The sweep's parent run tells its story: the description MLflow's UI shows on the run's page.

A Markdown note (tag ``mlflow.note.content``): the front first (rank, trial name with its swept
values, mIoU, training and inference cost, device figures where measured, a link to the trial's
run), then the trials that were not ranked and why, and the best trial per objective.
"""
from __future__ import annotations

from typing import Any, Sequence

from orchestrator.runs.pareto import UNITS, rank_order
from orchestrator.runs.schema import IS_PARETO, NOTE_TAG, PARETO_RANK

# (figure, column header, format); each figure is shown in the unit of pareto.UNITS
COLUMNS = (("miou", "mIoU", "{:.4f}"), ("train_flops", "train TFLOPs", "{:.3g}"),
           ("infer_flops_per_image", "infer GFLOPs/image", "{:.3g}"),
           ("device.energy_j_per_image", "J/image (board)", "{:.4g}"),
           ("device.latency_ms_p50", "p50 ms (board)", "{:.3g}"))


def front_note(rows: Sequence[dict[str, Any]], experiment_id: str, objectives: Sequence[tuple[str, str]],
               hypervolume: float | None, sweep_id: str) -> str:
    """The Markdown description of a sweep's parent run."""
    cols = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    extra = [(m, m, "{:.4g}") for m, _ in objectives if m not in {c[0] for c in cols}]
    cols += extra
    head = ["rank", "trial", *[c[1] for c in cols], "status"]
    lines = [f"**Sweep `{sweep_id}`**: {len(rows)} trial(s), "
             f"{sum(1 for r in rows if r.get(IS_PARETO))} on the Pareto front of "
             + ", ".join(f"{m} ({mode})" for m, mode in objectives)
             + (f"; hypervolume {hypervolume:.4f}" if hypervolume is not None else "") + ".", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=rank_order):
        rank = r.get(PARETO_RANK)
        star = "★ " if r.get(IS_PARETO) else ""
        link = f"[{r.get('name') or r['trial']}](#/experiments/{experiment_id}/runs/{r['run_id']})"
        cells = [f"{star}{rank}" if rank is not None else "-", link]
        for key, _, fmt in cols:
            v = r.get(key)
            cells.append("" if v is None else fmt.format(v / UNITS.get(key, (1.0,))[0]))
        cells.append(r.get("status", ""))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "A trial without a figure is ranked after every complete one; a failed trial has no rank. "
              "The front's models are in the model registry; `pareto.png` and `pareto.html` are this run's "
              "artifacts."]
    return "\n".join(lines)


def write_note(client, run_id: str, text: str) -> None:
    client.set_tag(run_id, NOTE_TAG, text)
