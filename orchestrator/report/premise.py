"""The premise figures of the data a report is about: the newest ``dance data premise`` run (MLflow kind
``premise``) of each dataset the report's trials trained on, printed before the tables (issue 20)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.runs.schema import DATASET_TAG, KIND_PREMISE, KIND_TAG, PREMISE_VERDICT_TAG
from workers.premise import (
    PREMISE_DROP_TREND,
    PREMISE_DROP_TREND_HI,
    PREMISE_DROP_TREND_LO,
    PREMISE_MIOU_DROP,
    PREMISE_SPEARMAN,
    PREMISE_SPEARMAN_HI,
    PREMISE_SPEARMAN_LO,
    verdict_phrase,
)


@dataclass
class PremiseCheck:
    dataset: str  # "<kind>:<root>", as the run's dance.dataset tag says
    run_id: str
    verdict: str
    metrics: dict[str, float]
    split: str | None = None

    def line(self) -> str:
        """One Markdown line: the verdict and the figures it rests on."""
        m = self.metrics

        def num(key: str, spec: str) -> str:
            return format(m[key], spec) if key in m else "–"

        drops = " / ".join(num(k, ".4f") for k in PREMISE_MIOU_DROP)
        return (f"`{self.dataset}`{f' ({self.split})' if self.split else ''}: the premise "
                f"**{verdict_phrase(self.verdict)}**: Spearman(SC, per-image loss) {num(PREMISE_SPEARMAN, '+.3f')} "
                f"[{num(PREMISE_SPEARMAN_LO, '+.3f')}, {num(PREMISE_SPEARMAN_HI, '+.3f')}]; mIoU lost at the "
                f"downsampled input by SC tercile {drops}, tercile 3 minus tercile 1 "
                f"{num(PREMISE_DROP_TREND, '+.4f')} [{num(PREMISE_DROP_TREND_LO, '+.4f')}, "
                f"{num(PREMISE_DROP_TREND_HI, '+.4f')}] (run `{self.run_id}`)")


def _key(dataset_tag: str) -> tuple[str, str]:
    kind, _, root = dataset_tag.partition(":")
    return kind, str(Path(root).resolve()) if root else ""


def premise_checks(client, trials) -> tuple[list[PremiseCheck], list[str]]:
    """(the newest premise check of each dataset the trials trained on, the datasets without one)."""
    wanted: dict[tuple[str, str], str] = {}
    for t in trials:
        root = t.param("data.root")
        if root:
            tag = f"{t.param('data.kind', '?')}:{root}"
            wanted.setdefault(_key(tag), tag)
    if not wanted:
        return [], []
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, filter_string=f"tags.`{KIND_TAG}` = '{KIND_PREMISE}'",
                              order_by=["attributes.start_time DESC"], max_results=1000) if exps else []
    found: dict[tuple[str, str], PremiseCheck] = {}
    for r in runs:
        key = _key(r.data.tags.get(DATASET_TAG, ""))
        if key in wanted and key not in found:
            found[key] = PremiseCheck(wanted[key], r.info.run_id, r.data.tags.get(PREMISE_VERDICT_TAG, "?"),
                                      dict(r.data.metrics), r.data.params.get("split"))
    return [found[k] for k in wanted if k in found], [tag for k, tag in wanted.items() if k not in found]
