"""Paper §3.3, Algorithm 1: automated network slimming (ANS) of the segmentation header.

Network Slimming (Liu et al. 2017) made progressive:

* during training the loss gets ``λ·Σ|γ|`` over the header's BatchNorm scales
  (:meth:`NetworkSlimmer.l1_penalty`, or :meth:`NetworkSlimmer.regularize` after backward);
* prune ``s`` (s = 1..S) leaves the header ``r^(s/S)`` of its ORIGINAL prunable channels,
  ``1 − r`` being the configured ``target_ratio``. When the prunes happen is
  :func:`stage_points`: Algorithm 1 prunes after epochs 0, t_max/S, …, (S−1)·t_max/S, so
  the last stage trains the final structure (``schedule: algorithm1``, the default);
  ``end_of_stage`` prunes at the end of every S-th instead (the last prune on the last
  iteration), kept for comparison. The channels that go
  are those with the smallest |γ|, ranked globally across the header (no per-layer
  normalisation), and they are removed structurally with Torch-Pruning's dependency
  graph, so concatenations (ASPP, pyramid pooling, cascade and feature fusion) shrink
  consistently and FLOPs and latency really fall.

What is never pruned: the backbone's outputs and the classifier's outputs (a channel group
whose output channels touch a module outside the header is not a candidate). The
classifier's *input* channels do shrink when the header's last layer does.

A prunable "channel" is one output channel of a Torch-Pruning group rooted in the header:
channels coupled by an addition or multiplication count once, and their importance is the
mean |γ| over the group's BatchNorms. Each group keeps at least ``min_channels_per_layer``;
``channel_multiple`` > 1 rounds each group's width to a multiple (fast conv kernels) at the
price of an approximate total.

Pruning is refused (:class:`PruningNotReadyError`) while the |γ|'s have not been separated
by sparse training — freshly initialised BatchNorms all hold γ = 1, and ranking ties would
remove arbitrary channels. The measure is the coefficient of variation (std/mean) of the
candidates' importances, compared with ``min_gamma_spread``. ``plan_stage(force=True)``
plans anyway (the training loop does so by default, ``not_ready: prune``, so every stage
prunes at its own point); every plan records the spread it rested on.

Under DDP (DESIGN §5): unwrap, :meth:`plan_stage` (deterministic from the synchronised
weights; :func:`broadcast_plan` makes rank 0's plan authoritative), :meth:`apply` on every
rank, re-wrap, build a new optimizer (pruning replaces the parameter tensors).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from workers.pruning_report import pruning_report

log = logging.getLogger(__name__)

__all__ = ["ANSConfig", "NetworkSlimmer", "PrunePlan", "PruningNotReadyError", "unwrap_model", "broadcast_plan",
           "due_stage", "stage_points", "header_layer_shapes", "SCHEDULES"]

SCHEDULES = ("algorithm1", "end_of_stage")


class ANSConfig(BaseModel):
    """ANS settings (the ``ans`` section of an experiment YAML)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    target_ratio: float = Field(default=0.5, ge=0.0, lt=1.0,
                                description="1 − r: fraction of the header's prunable channels removed by the end")
    stages: int = Field(default=6, ge=1, description="S: number of pruning stages (one prune per stage)")
    schedule: Literal["algorithm1", "end_of_stage"] = Field(
        default="algorithm1", description="algorithm1: prune after epochs 0, t_max/S, ..., (S-1)·t_max/S, the last "
                                          "stage trains the final structure (paper Algorithm 1); end_of_stage: "
                                          "prune at the end of every S-th of training, "
                                          "the last prune on the last iteration")
    l1_lambda: float = Field(default=1e-4, ge=0.0, description="λ of the L1 penalty on the header's BN scales")
    min_gamma_spread: float = Field(default=1e-3, ge=0.0,
                                    description="a stage is 'not ready' while std/mean of the header's |γ| is "
                                                "below this")
    not_ready: Literal["prune", "wait"] = Field(
        default="prune", description="a stage due while the |γ| spread is below min_gamma_spread: prune at its own "
                                     "point anyway (the spread is reported), or wait and retry every step (later "
                                     "stages then follow one step apart at the earliest, never in the same step)")
    min_channels_per_layer: int = Field(default=1, ge=1, description="channels every header layer keeps at least")
    channel_multiple: int = Field(default=1, ge=1,
                                  description="round each layer's kept channels to a multiple of this (8 or 16 keeps "
                                              "CPU/GPU conv kernels on their fast blocked paths); 1 = exact r^(s/S)")

    @property
    def keep_ratio(self) -> float:
        """r, the fraction of the header's prunable channels kept after the last stage."""
        return 1.0 - self.target_ratio


class PruningNotReadyError(RuntimeError):
    """The header's BN scales are not separated enough for a meaningful ranking."""


@dataclass
class PrunePlan:
    """Which output channels of which header layers go at one stage (serialisable, deterministic).

    ``prune`` maps a group's root layer (dotted name relative to the unwrapped model) to the
    indices, in the layer's current numbering, of the output channels to remove.
    """

    stage: int
    stages: int
    original_channels: int
    target_channels: int
    channels_before: int
    prune: dict[str, list[int]] = field(default_factory=dict)
    threshold: float | None = None
    gamma_spread: float | None = None  # std/mean of the header's |γ| the ranking rested on
    forced: bool = False  # planned although gamma_spread < min_gamma_spread

    @property
    def num_pruned(self) -> int:
        return sum(len(v) for v in self.prune.values())

    @property
    def channels_after(self) -> int:
        return self.channels_before - self.num_pruned

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "stages": self.stages, "original_channels": self.original_channels,
                "target_channels": self.target_channels, "channels_before": self.channels_before,
                "prune": {k: list(map(int, v)) for k, v in self.prune.items()}, "threshold": self.threshold,
                "gamma_spread": self.gamma_spread, "forced": self.forced}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PrunePlan":
        return cls(stage=int(d["stage"]), stages=int(d["stages"]), original_channels=int(d["original_channels"]),
                   target_channels=int(d["target_channels"]), channels_before=int(d["channels_before"]),
                   prune={str(k): [int(i) for i in v] for k, v in d["prune"].items()},
                   threshold=None if d.get("threshold") is None else float(d["threshold"]),
                   gamma_spread=None if d.get("gamma_spread") is None else float(d["gamma_spread"]),
                   forced=bool(d.get("forced", False)))

    def digest(self) -> str:
        """Short hash of the plan: equal on every rank iff the ranks agree."""
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under DDP / DataParallel / ``torch.compile`` wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile
        if isinstance(inner, nn.Module):
            model = inner
            continue
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
            continue
        return model


def broadcast_plan(plan: PrunePlan | None, src: int = 0) -> PrunePlan:
    """Make rank ``src``'s plan the plan of every rank (no-op outside torch.distributed).

    Ranks other than ``src`` may pass ``None``.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        if plan is None:
            raise ValueError("broadcast_plan outside torch.distributed needs a plan")
        return plan
    box = [plan.to_dict() if plan is not None else None]
    dist.broadcast_object_list(box, src=src)
    return PrunePlan.from_dict(box[0])


def stage_points(total: float, stages: int, schedule: str = "algorithm1") -> list[float]:
    """Progress (epochs done, fractional) at which prune ``s`` = 1..S falls due.

    ``algorithm1`` (paper Algorithm 1, DESIGN §3): t counts epochs from 0 and a prune follows
    the SGD update of every epoch with ``t mod (t_max/S) == 0``, i.e. after epochs 0,
    t_max/S, …, (S−1)·t_max/S — points 1, 1 + t_max/S, … in epochs done. The last stage
    then trains the final structure for ``t_max/S − 1`` epochs. When a stage is one epoch
    or shorter the first prune comes half a stage in instead of one epoch, so the last
    stage still trains (and no two points coincide).

    ``end_of_stage``: after every S-th of training, ``s·t_max/S``; the last prune lands on
    the very last iteration and the reported model never trains after it.
    """
    if total <= 0:
        raise ValueError("total must be positive")
    if stages < 1:
        raise ValueError("stages must be >= 1")
    length = total / stages
    if schedule == "end_of_stage":
        return [s * length for s in range(1, stages + 1)]
    if schedule != "algorithm1":
        raise ValueError(f"unknown ANS schedule {schedule!r}; choose one of {SCHEDULES}")
    first = 1.0 if length > 1.0 else length / 2
    return [first + (s - 1) * length for s in range(1, stages + 1)]


def ans_window(mode: str, epochs: int) -> tuple[int, int]:
    """[start, end) epochs over which the S pruning stages are spread (and λ·Σ|γ| is on): all of
    them when co-optimizing, one half in the separate modes of paper Table 4."""
    if mode == "network_then_data":
        return 0, epochs // 2
    if mode == "data_then_network":
        return epochs // 2, epochs
    return 0, epochs


def plan_prunes(steps_per_epoch: list[int], window: tuple[int, int], stages: int,
                schedule: str = "algorithm1") -> list[tuple[int, int]]:
    """(epoch, step) after which each stage prunes, if none waits (step -1: the end of an empty epoch).

    A pure function of the schedule and the epochs' step counts: a loop applies at most one stage
    per step, so fewer than ``stages`` entries means the schedule is denser than the steps.
    """
    lo, hi = window
    if hi <= lo:
        return []
    stage, out = 0, []
    for e in range(lo, hi):
        n = steps_per_epoch[e]
        ticks = [(k, e + (k + 1) / n) for k in range(n)] if n else [(-1, float(e + 1))]
        for k, progress in ticks:
            if stage < due_stage(min(max(progress - lo, 0.0), hi - lo), hi - lo, stages, schedule):
                stage += 1
                out.append((e, k))
    return out


def prune_plan_problem(steps_per_epoch: list[int], window: tuple[int, int], stages: int,
                       schedule: str = "algorithm1", at_most: bool = False) -> str | None:
    """Why ``stages`` prunes cannot be placed in ``window`` with these step counts (None: they can).

    ``at_most``: the step counts are an upper bound (a config check before the data is planned).
    """
    lo, hi = window
    if hi <= lo:
        return (f"ans.stages={stages}: the pruning window (epochs {lo}..{hi - 1}) is empty; "
                "use more epochs (the separate modes prune in one half of them)")
    if len(plan_prunes(steps_per_epoch, window, stages, schedule)) >= stages:
        return None
    steps = sum(steps_per_epoch[lo:hi])
    return (f"ans.stages={stages} needs {stages} separate training steps for its prunes, but epochs "
            f"{lo}..{hi - 1} have {'at most ' if at_most else ''}{steps} steps in all; use fewer stages, "
            "more epochs or a smaller train.batch_size")


def due_stage(progress: float, total: float, stages: int, schedule: str = "algorithm1") -> int:
    """How many prunes are due after ``progress`` of ``total`` epochs (see :func:`stage_points`).

    A loop prunes (at most one stage per step) while ``slimmer.stage < due_stage(...)``; after
    a resume this also catches up.
    """
    # The small epsilon keeps e.g. 10 epochs / 3 stages from missing a boundary to float error.
    return sum(1 for p in stage_points(total, stages, schedule) if progress + 1e-9 >= p)


def _bn_out_fn(dg: Any, module: nn.Module) -> Any:
    return dg.get_pruner_of_module(module).prune_out_channels


class NetworkSlimmer:
    """Progressive Network Slimming of a segmentation model's header.

    Args:
        model: the model (DDP-wrapped is fine: the slimmer works on the unwrapped module, and
            keeps working on that same module object after a re-wrap).
        cfg: the ANS settings.
        example_input_size: (H, W) of the dummy input used to trace the dependency graph; any
            valid size (multiple of ``size_quantum``, ≥ ``min_size``). Defaults to
            ``2·min_size`` square.
        parts: ``{"backbone": path, "header": path, "classifier": path}`` for models that
            are not :class:`~workers.models.SegmentationModel` (see ``get_parts``).
    """

    def __init__(self, model: nn.Module, cfg: ANSConfig | None = None,
                 example_input_size: tuple[int, int] | None = None,
                 parts: Mapping[str, str] | None = None) -> None:
        from workers.models.base import get_parts

        self.cfg = cfg or ANSConfig()
        self.model = unwrap_model(model)
        self._parts_arg = dict(parts) if parts is not None else None
        self.parts = get_parts(self.model, self._parts_arg)
        if example_input_size is None:
            side = 2 * int(getattr(self.model, "min_size", 64))
            example_input_size = (side, side)
        self.example_input_size = (int(example_input_size[0]), int(example_input_size[1]))
        self.stage = 0
        self._names = {m: n for n, m in self.model.named_modules()}
        self._header_modules = set(self.parts.header.modules())
        self._dg: Any = None
        self._dg_signature: tuple | None = None
        groups = self._groups()
        self.original_channels: dict[str, int] = {name: g["channels"] for name, g in groups.items()}
        self.original_layers = header_layer_shapes(self.model, self.parts.header_name, self.parts.classifier_name)
        if not self.original_channels:
            raise ValueError("the header has no prunable channel group (every header conv must feed a BatchNorm "
                             "and its outputs must not be coupled to the backbone or classifier outputs)")
        self._penalised = self._collect_bns(groups)

    # ------------------------------------------------------------------ graph
    def _signature(self) -> tuple:
        return tuple((n, tuple(p.shape)) for n, p in self.model.named_parameters())

    def _graph(self) -> Any:
        """Torch-Pruning dependency graph of the current structure (cached until the shapes change)."""
        import torch_pruning as tp

        sig = self._signature()
        if self._dg is not None and sig == self._dg_signature:
            return self._dg
        param = next(self.model.parameters())
        x = torch.randn(1, 3, *self.example_input_size, device=param.device, dtype=param.dtype)
        # Torch-Pruning traces in eval mode and leaves the model there; restore each module's
        # own flag (a frozen backbone BN must stay in eval). Eval also keeps the dummy
        # forward from touching BN running statistics.
        modes = {m: m.training for m in self.model.modules()}
        try:
            with torch.enable_grad():
                self._dg = tp.DependencyGraph().build_dependency(self.model, example_inputs=x, verbose=False)
        finally:
            for m, flag in modes.items():
                m.training = flag
        self._dg_signature = sig
        return self._dg

    def _groups(self) -> dict[str, dict[str, Any]]:
        """Prunable groups rooted in the header: root name -> {group, channels, bns}."""
        dg = self._graph()
        outside = [m for m in self.model.modules() if m not in self._header_modules]
        out: dict[str, dict[str, Any]] = {}
        for group in dg.get_all_groups(ignored_layers=outside, root_module_types=(nn.Conv2d, nn.Linear)):
            root = group[0].dep.target.module
            bns: list[tuple[nn.Module, list[int], list[int]]] = []
            for item in group:
                dep = item.dep
                mod = dep.target.module
                if (isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.affine
                        and dg.is_out_channel_pruning_fn(dep.handler)):
                    bns.append((mod, list(item.idxs), list(item.root_idxs)))
            if not bns:
                continue  # no BN scale to rank by: Network Slimming cannot prune it
            n = dg.get_out_channels(root)
            out[self._names[root]] = {"group": group, "channels": int(n), "bns": bns}
        return dict(sorted(out.items()))

    @staticmethod
    def _collect_bns(groups: Mapping[str, Mapping[str, Any]]) -> list[nn.Module]:
        seen: dict[int, nn.Module] = {}
        for g in groups.values():
            for bn, _, _ in g["bns"]:
                seen.setdefault(id(bn), bn)
        return list(seen.values())

    @staticmethod
    def _importance(g: Mapping[str, Any]) -> np.ndarray:
        """Mean |γ| per channel over the group's BatchNorms (float64, CPU)."""
        n = g["channels"]
        total = np.zeros(n, dtype=np.float64)
        count = np.zeros(n, dtype=np.float64)
        for bn, idxs, root_idxs in g["bns"]:
            vals = bn.weight.detach().abs().double().cpu().numpy()[idxs]
            np.add.at(total, root_idxs, vals)
            np.add.at(count, root_idxs, 1.0)
        return total / np.maximum(count, 1.0)

    # -------------------------------------------------------------- training
    @property
    def penalised_batchnorms(self) -> list[nn.Module]:
        """The header BatchNorms whose scales rank channels (and get the L1 penalty)."""
        return list(self._penalised)

    def l1_penalty(self) -> torch.Tensor:
        """``λ·Σ|γ|`` over the header's ranking BatchNorms, to add to the loss before backward.

        Works unchanged under DDP and AMP (it is part of the loss, so gradients are
        all-reduced and scaled like the rest). Zero when ANS is disabled or λ = 0.
        """
        param = self._penalised[0].weight
        if not self.cfg.enabled or self.cfg.l1_lambda == 0:
            return torch.zeros((), device=param.device, dtype=param.dtype)
        return self.cfg.l1_lambda * torch.stack([bn.weight.abs().sum() for bn in self._penalised]).sum()

    @torch.no_grad()
    def regularize(self) -> None:
        """Add ``λ·sign(γ)`` to the BN-scale gradients (call after backward, before the step).

        The alternative to :meth:`l1_penalty` (Torch-Pruning's ``pruner.regularize``). With
        AMP call it after ``scaler.unscale_(optimizer)``; under DDP after backward, where
        every rank adds the same term to the same all-reduced gradient.
        """
        if not self.cfg.enabled or self.cfg.l1_lambda == 0:
            return
        for bn in self._penalised:
            if bn.weight.grad is not None:
                bn.weight.grad.add_(torch.sign(bn.weight), alpha=self.cfg.l1_lambda)

    # --------------------------------------------------------------- pruning
    def kept_fraction_target(self, stage: int) -> float:
        """``r^(stage/S)``: fraction of the original prunable header channels kept after ``stage``."""
        if not 0 <= stage <= self.cfg.stages:
            raise ValueError(f"stage must lie in [0, {self.cfg.stages}], got {stage}")
        return self.cfg.keep_ratio ** (stage / self.cfg.stages)

    def header_channels(self) -> int:
        """Current number of prunable header channels."""
        return sum(g["channels"] for g in self._groups().values())

    def header_channels_kept(self) -> float:
        """Current prunable header channels as a fraction of the original ones."""
        return self.header_channels() / sum(self.original_channels.values())

    def gamma_spread(self) -> float:
        """Coefficient of variation (std/mean) of the current channel importances |γ|."""
        imps = np.concatenate([self._importance(g) for g in self._groups().values()])
        mean = float(imps.mean())
        return float(imps.std() / mean) if mean > 0 else 0.0

    def plan_stage(self, stage: int | None = None, force: bool = False) -> PrunePlan:
        """Decide the channels to remove so that ``r^(stage/S)`` of the original channels stay.

        Deterministic in the weights (ties broken by layer name, then channel index), so every
        DDP rank computes the same plan. ``stage`` defaults to the next one. The plan records
        the |γ| spread it rested on (``gamma_spread``).

        Raises:
            PruningNotReadyError: the |γ| spread is below ``cfg.min_gamma_spread`` (untrained BNs)
                and ``force`` is false.
            ValueError: ``stage`` is not after the current stage or beyond ``S``.
        """
        stage = self.stage + 1 if stage is None else int(stage)
        if not self.stage < stage <= self.cfg.stages:
            raise ValueError(f"cannot plan stage {stage}: stage {self.stage} of {self.cfg.stages} already reached")
        groups = self._groups()
        original = sum(self.original_channels.values())
        current = sum(g["channels"] for g in groups.values())
        target = original if not self.cfg.enabled else int(round(original * self.kept_fraction_target(stage)))
        plan = PrunePlan(stage=stage, stages=self.cfg.stages, original_channels=original,
                         target_channels=target, channels_before=current)
        n_remove = current - target
        if n_remove <= 0:
            return plan
        names = list(groups)
        imps = [self._importance(groups[n]) for n in names]
        flat = np.concatenate(imps)
        spread = float(flat.std() / flat.mean()) if flat.mean() > 0 else 0.0
        plan.gamma_spread = spread
        if spread < self.cfg.min_gamma_spread and force:
            plan.forced = True
            log.warning("ANS stage %d: pruning at its scheduled point although the |γ| spread %.2e < "
                        "min_gamma_spread %g (ans.not_ready: prune)", stage, spread, self.cfg.min_gamma_spread)
        elif spread < self.cfg.min_gamma_spread:
            raise PruningNotReadyError(
                f"refusing to prune stage {stage}: the header's BN scales |γ| have a spread (std/mean) of "
                f"{spread:.2e} < min_gamma_spread={self.cfg.min_gamma_spread:g}, so the ranking would be "
                "arbitrary. Train with the L1 penalty (l1_lambda > 0) before the first stage ends, or lower "
                "ans.min_gamma_spread.")
        group_id = np.concatenate([np.full(len(v), i) for i, v in enumerate(imps)])
        chan = np.concatenate([np.arange(len(v)) for v in imps])
        order = np.lexsort((chan, group_id, flat))  # by |γ|, then layer name, then channel
        left = [len(v) for v in imps]
        floor = self.cfg.min_channels_per_layer
        last = None
        for k in order:  # global ranking: remove the smallest |γ| until the target is met
            if n_remove == 0:
                break
            gi = int(group_id[k])
            if left[gi] <= floor:
                continue
            left[gi] -= 1
            n_remove -= 1
            last = float(flat[k])
        if n_remove:
            log.warning("ANS stage %d: min_channels_per_layer=%d leaves %d channels above the target %d",
                        stage, floor, n_remove, target)
        m = self.cfg.channel_multiple
        chosen: dict[int, list[int]] = {}
        for gi, v in enumerate(imps):
            keep = left[gi]
            if m > 1 and keep < len(v):
                # Nearest multiple of m (at least m, at most the current width): the per-layer rounding
                # errors mostly cancel, so the header total stays within a few channels of the target.
                keep = min(len(v), max(m, floor, m * int(math.floor(keep / m + 0.5))))
            if keep < len(v):
                ranked = np.lexsort((np.arange(len(v)), v))  # this layer's channels by |γ|, then index
                chosen[gi] = [int(c) for c in ranked[: len(v) - keep]]
        plan.prune = {names[gi]: sorted(ix) for gi, ix in sorted(chosen.items())}
        plan.threshold = last
        return plan

    def apply(self, plan: PrunePlan) -> None:
        """Remove the plan's channels from the model, in place (structural, not a mask).

        Replaces parameter tensors: rebuild the optimizer (and any DDP wrapper) afterwards.
        """
        if plan.stage <= self.stage:
            raise ValueError(f"plan for stage {plan.stage} but stage {self.stage} is already applied")
        dg = self._graph()
        modules = dict(self.model.named_modules())
        for name, idxs in plan.prune.items():
            if name not in self.original_channels:
                raise ValueError(f"plan names {name!r}, which is not a prunable header layer")
            if not idxs:
                continue
            root = modules[name]
            n = dg.get_out_channels(root)
            if max(idxs) >= n or len(set(idxs)) >= n:
                raise ValueError(f"plan for {name!r} does not fit its {n} channels (stale plan?)")
            group = dg.get_pruning_group(root, _bn_out_fn(dg, root), idxs)
            group.prune()
        self._dg_signature = self._signature()  # the graph follows the surgery in place
        self.stage = plan.stage
        log.info("ANS stage %d/%d: removed %d channels, header keeps %d/%d (%.1f%%)", plan.stage, plan.stages,
                 plan.num_pruned, plan.channels_after, plan.original_channels,
                 100.0 * plan.channels_after / max(plan.original_channels, 1))

    def step(self, stage: int | None = None, force: bool = False) -> PrunePlan:
        """:meth:`plan_stage` then :meth:`apply` (single process; under DDP see the module docs)."""
        plan = self.plan_stage(stage, force=force)
        self.apply(plan)
        return plan

    # ------------------------------------------------------------ reporting
    def report(self) -> dict[str, Any]:
        """Per-layer channels before/after, multi-scale vs other (see :mod:`workers.pruning_report`)."""
        current = header_layer_shapes(self.model, self.parts.header_name, self.parts.classifier_name)
        return pruning_report(self.original_layers, current, getattr(self.model, "multiscale_modules", []),
                              classifier_name=self.parts.classifier_name, stage=self.stage, stages=self.cfg.stages,
                              target_ratio=self.cfg.target_ratio)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Stage reached and original channel counts (JSON-able), for checkpoints and resume."""
        return {"stage": self.stage, "config": self.cfg.model_dump(), "original_channels": dict(self.original_channels),
                "original_layers": self.original_layers}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the stage and the ORIGINAL channel counts (the model itself must already be pruned)."""
        orig = {str(k): int(v) for k, v in state["original_channels"].items()}
        missing = set(orig) ^ set(self.original_channels)
        if missing:
            raise ValueError(f"slimmer state does not match this model's header layers: {sorted(missing)[:5]}")
        self.original_channels = orig
        self.original_layers = {str(k): dict(v) for k, v in state["original_layers"].items()}
        self.stage = int(state["stage"])


def header_layer_shapes(model: nn.Module, header_name: str, classifier_name: str) -> dict[str, dict[str, int]]:
    """``{name: {"out", "in", "params"}}`` for every Conv2d/Linear in the header and classifier."""
    out: dict[str, dict[str, int]] = {}
    for name, m in model.named_modules():
        inside = any(name == p or name.startswith(p + ".") for p in (header_name, classifier_name))
        if not inside:
            continue
        if isinstance(m, nn.Conv2d):
            cout, cin = m.out_channels, m.in_channels
        elif isinstance(m, nn.Linear):
            cout, cin = m.out_features, m.in_features
        else:
            continue
        params = sum(p.numel() for p in m.parameters(recurse=False))
        out[name] = {"out": int(cout), "in": int(cin), "params": int(params)}
    return out
