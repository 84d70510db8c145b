"""The ``sweep:`` section of an experiment YAML (validated by pydantic, like the rest).

Each entry of ``space`` maps a dotted path of the experiment schema (``ans.stages``,
``slimming.casd_range``, or a whole section such as ``slimming``) to one domain::

    ans.target_ratio: {grid: [0.3, 0.5, 0.7]}       # every value, crossed with other grids
    ans.stages: {choice: [2, 4, 6]}                  # one value drawn per sample
    optim.lr: {loguniform: [1.0e-3, 3.0e-2]}         # continuous, log scale
    ans.l1_lambda: {uniform: [1.0e-4, 1.0e-3]}
    train.batch_size: {randint: [2, 9]}              # integers lo <= v < hi (Ray's convention)

A mapping value (a range ``{lo, hi}``, or a partial section) is one swept value. A key that
starts with a dot names an axis of whole partial configs — recipes — crossed with the others::

    .method:
      grid:
        - {label: baseline, ans: {enabled: false}, slimming: {cad: false, casd: false, cal: false}}
        - {label: DANCE}                              # the experiment as written
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.hil.schema import HilConfig

DOMAIN_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
DISCRETE = ("grid", "choice")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Domain(Strict):
    """Exactly one of the five domain kinds."""

    grid: list[Any] | None = None
    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _one(self) -> "Domain":
        given = [k for k in DOMAIN_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(DOMAIN_KINDS)} (got {given or 'none'})")
        kind = given[0]
        v = getattr(self, kind)
        if kind in DISCRETE and not v:
            raise ValueError(f"{kind} needs at least one value")
        if kind == "uniform" and not v[0] < v[1]:
            raise ValueError(f"uniform [{v[0]}, {v[1]}]: lower bound must be below the upper")
        if kind == "loguniform" and not 0 < v[0] < v[1]:
            raise ValueError(f"loguniform [{v[0]}, {v[1]}]: bounds must be positive and increasing")
        if kind == "randint" and not v[0] < v[1]:
            raise ValueError(f"randint [{v[0]}, {v[1]}): lower bound must be below the (exclusive) upper")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in DOMAIN_KINDS if getattr(self, k) is not None)

    @property
    def values(self) -> Any:
        return getattr(self, self.kind)

    def probe_points(self) -> list[Any]:
        """Values that stand for the whole domain when checking it against the schema."""
        v = self.values
        if self.kind in DISCRETE:
            return list(v)
        if self.kind == "randint":
            return [v[0], v[1] - 1]
        return [v[0], v[1]]


class Objective(Strict):
    metric: str
    mode: Literal["min", "max"]


class SchedulerConfig(Strict):
    kind: Literal["none", "asha"] = "none"
    metric: str = "miou"
    mode: Literal["min", "max"] = "max"
    grace_period: int = Field(default=1, ge=1, description="epochs every trial trains before ASHA may stop it")
    reduction_factor: float = Field(default=3.0, gt=1.0)


class SweepConfig(Strict):
    name: str | None = Field(default=None, description="sweep id; default <config name>-<time>-<random>")
    space: dict[str, Domain] = Field(default_factory=dict)
    num_samples: int = Field(default=1, ge=1, description="samples per grid point (grid/random) or trials (optuna)")
    search: Literal["grid", "random", "optuna"] = "grid"
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective(metric="miou", mode="max"), Objective(metric="train_flops", mode="min"),
                                 Objective(metric="infer_flops_per_image", mode="min")])
    scheduler: SchedulerConfig = SchedulerConfig()
    max_concurrent_trials: int | Literal["auto"] = "auto"
    max_failures: int = Field(default=1, ge=-1, description=(
        "times a trial lost to the infrastructure (a dead worker or node) is started again from its last "
        "checkpoint; -1: without limit. A trial whose own code failed is never retried"))
    trial_cpus: float = Field(default=0.01, gt=0,
                              description="CPU share of each trial's driver (its workers ask apart)")
    reuse_trial_actors: bool = Field(default=False, description=(
        "run the next trial's driver in the process of one that ended (Tune's reuse_actors), so it does not "
        "start a process and import Ray Train again; the training workers are started per trial either way. "
        "Off by default: it saved 0.8 points of the quickstart's fixed cost, and with it on the two-node fault "
        "test twice saw a trial start only after the other had trained 14 and 24 epochs (cause not found)"))
    register_models: bool = Field(default=True, description="register the Pareto trials' models in MLflow's registry")
    hil: HilConfig | None = Field(default=None, description="hardware-in-the-loop: measure trials on boards "
                                                            "(docs/sweeps.md, 'Measured on boards')")
    hypervolume_reference: list[float] | None = Field(
        default=None, description="reference point, one value per objective in its own units; "
                                  "default: each objective's worst value moved 10 % of its range further")
