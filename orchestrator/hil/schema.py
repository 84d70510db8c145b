"""The ``sweep.hil:`` section: which trials a sweep sends to boards, and how.

::

    sweep:
      hil:
        boards: configs/boards.yaml      # inventory (default: configs/boards.yaml, else this host)
        labels: [tx2]                    # boards carrying all these labels measure
        measure: all                     # all | promoted | predicted_front | {pareto_top: K}
        wait: false                      # false: measure while the sweep trains; true: after it
        train_steps: 2                   # > 0: also training J/step (TorchScript on the board)
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParetoTop(Strict):
    pareto_top: int = Field(ge=1, description="measure trials in the first K Pareto fronts (1: the front)")


class HilConfig(Strict):
    boards: Path | None = Field(default=None, description="board inventory YAML (default configs/boards.yaml, "
                                                          "else this host as the one `local` board)")
    labels: list[str] = Field(default_factory=list, description="boards carrying all these labels measure")
    primary: str | None = Field(default=None, description="board kind whose figures are the unqualified "
                                                          "device.* metrics (default: the first kind)")
    measure: Literal["all", "promoted", "predicted_front"] | ParetoTop = "all"
    front_ranks: int = Field(default=1, ge=1, description="predicted_front: measure trials the cost model "
                                                          "places within this many Pareto fronts")
    min_points: int = Field(default=8, ge=3, description="predicted_front: cached measurements a board model "
                                                         "needs before its cost model is trusted")
    wait: bool = Field(default=False, description="false: boards measure while the sweep trains; "
                                                  "true: they start when every trial has trained")
    train_steps: int = Field(default=0, ge=0, description="> 0: also measure training J/step (batch 2)")
    buckets: str | None = Field(default=None, description="export buckets 'HxW:share,...' "
                                                          "(default: the trial's own bucket plan)")
    timeout_s: float = Field(default=3600.0, gt=0, description="after training, how long the sweep waits for "
                                                               "outstanding measurements (then they stay pending)")
    journal: Path | None = Field(default=None, description="the board pool's journal "
                                                           "(default .dance/hil/<sweep>.journal.sqlite)")
    cache: Path = Field(default=Path(".dance/measurements.sqlite"), description="measurement cache; also the "
                                                                                "cost model's training data")

    @property
    def mode(self) -> str:
        return self.measure if isinstance(self.measure, str) else "pareto_top"

    @property
    def top_ranks(self) -> int:
        """Fronts that count as 'near the front' for pareto_top / predicted_front."""
        return self.measure.pareto_top if isinstance(self.measure, ParetoTop) else self.front_ranks
