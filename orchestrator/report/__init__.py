"""Paper-style reports from sweeps (issue 12): `dance report SWEEP_RUN_ID`.

* :mod:`.collect` — the sweep's parent and child runs from MLflow, as :class:`.collect.Trial`;
* :mod:`.paper` — the paper's own numbers (configs/reproduce/paper_numbers.yaml);
* :mod:`.tables` — Tables 4, 6, 8, 9, Fig. 4 and the equal-epochs / equal-FLOPs comparisons,
  each built from the trials whose configs match it (never from labels);
* :mod:`.runtime` — Table 12: timed module hooks on the trials' checkpoints;
* :mod:`.claims` — which of the paper's directional claims hold, with the numbers;
* :mod:`.render` — the Markdown report and its PNGs.
"""
from orchestrator.report.build import build_report

__all__ = ["build_report"]
