"""The per-worker DANCE training loop (paper Algorithm 1 with data slimming, DESIGN §3–5).

:func:`train_loop` is the ``train_loop_per_worker`` of a ``ray.train.torch.TorchTrainer``;
:func:`run_local` runs the very same code in this process at world size 1 (the
Ray-overhead benchmark and the fast ablation tests use it). The loop sees its
surroundings only through a :class:`~workers.runtime.Runtime`.

One epoch, on every rank:

1. the DANCE sampler plans the epoch for all ranks (CASD/RD drops from a (seed, epoch)
   generator, CAD size buckets, equal step counts per rank) and this rank takes its share;
2. each step: poly learning rate, forward at the bucket's size, the CAL-weighted loss
   (Eq. 2) plus ``λ·Σ|γ|`` over the header's BatchNorm scales while ANS is active,
   backward (DDP all-reduces), SGD step, and the counted FLOPs (forward + backward) of
   the current structure at that size × the batch;
3. whenever the ANS schedule says a stage is due (Algorithm 1: after epochs 0, t_max/S,
   …, (S−1)·t_max/S; see :func:`workers.dance.ans.stage_points`), pruning the measured-safe
   way (DESIGN §5): unwrap, rank 0 plans from the synchronised weights and broadcasts the
   plan, identical surgery on every rank, re-wrap with ``prepare_model``, a new optimizer.
   At most one stage prunes per step, each at its own point;
4. BatchNorm statistics are broadcast from rank 0, the val set is scored at its DANCE
   sizes (confusion matrices summed over ranks), and everything is reported with
   ``ray.train.report``; rank 0 attaches a checkpoint (architecture, weights, optimizer,
   epoch, pruning stage, sampler position, CDF).

Co-optimization runs data slimming and ANS in the same iterations; the separate modes of
paper Table 4 run ANS in one half of the epochs and data slimming in the other.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from workers import metrics as M
from workers.config import ExperimentConfig
from workers.cost import count_flops
from workers.dance.ans import ans_window, due_stage, plan_prunes, prune_plan_problem
from workers.dance.loss import cal_loss
from workers.energy import EnergyMeter
from workers.metrics import PER_CLASS_PREFIX, SUMMARY_METRICS
from workers.models import build_model
from workers.models.base import size_rule
from workers.runtime import LocalRuntime, Runtime

log = logging.getLogger("dance.train")

CHECKPOINT_FILE = "model.pt"
REPORT_FILE = "pruning_report.json"
# The headline figures of every report (all that a trial reports: workers.metrics).
METRIC_NAMES = SUMMARY_METRICS


# --------------------------------------------------------------------------- entry points
def train_loop(config: dict[str, Any]) -> None:
    """``train_loop_per_worker`` for Ray Train (``config`` from :func:`workers.prepare.worker_config`)."""
    from workers.runtime import RayRuntime

    Trainer(config, RayRuntime()).run()


def run_local(config: dict[str, Any], checkpoint_root: str | Path | None = None,
              resume_from: str | Path | None = None, device: str = "cpu") -> LocalRuntime:
    """The same loop without Ray (world size 1); returns the runtime with ``reports``/``checkpoints``."""
    rt = LocalRuntime(device=device, checkpoint_root=checkpoint_root, resume_from=resume_from)
    Trainer(config, rt).run()
    return rt


# --------------------------------------------------------------------------- helpers
def _dist() -> Any | None:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def all_reduce(values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    """Reduce a few numbers over ranks (identity at world size 1)."""
    dist = _dist()
    if dist is None:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t.cpu().tolist()


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's BatchNorm statistics everywhere (DDP leaves each rank's last local update)."""
    dist = _dist()
    if dist is None:
        return
    for b in model.buffers():
        dist.broadcast(b, 0)


def param_checksum(model: nn.Module, buffers: bool = True) -> str:
    """SHA-1 of every parameter (and buffer) in order: equal across ranks iff they agree bit for bit."""
    h = hashlib.sha1()
    tensors = list(model.named_parameters()) + (list(model.named_buffers()) if buffers else [])
    for name, t in tensors:
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def poly_lr(base: float, step: int, total: int, power: float) -> float:
    return base * max(0.0, 1.0 - step / max(total, 1)) ** power


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))


class CachedDataset(Dataset):
    """Memoise decoded, resized samples (``train.cache_samples``; small datasets only)."""

    def __init__(self, inner: Dataset) -> None:
        self.inner, self.cache = inner, {}

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: Any) -> Any:
        key = i[:2] if isinstance(i, tuple) else i  # (index, size): the draw key only matters when augmenting
        if key not in self.cache:
            self.cache[key] = self.inner[i]
        return self.cache[key]


@dataclass
class DataPhase:
    """One setting of data slimming: sizes, weights and drop probabilities per training image."""

    slimmed: bool
    sizes: list[tuple[int, int]]
    weights: np.ndarray
    drop_prob: np.ndarray
    sampler: Any
    loader: DataLoader
    expected_weight: float | None = None  # CAL's epoch normaliser E[w]; None: Eq. 2's per-batch Σ wᵢ


@dataclass
class StepSums:
    """This rank's running sums over one epoch's steps."""

    flops: float = 0.0
    images: int = 0
    loss: Any = 0.0          # becomes a device tensor: summed without a per-step sync
    counting_s: float = 0.0  # FLOP counting, kept out of the epoch's training time
    last_lr: float = 0.0
    cal_weight: Any = 0.0    # per p quartile: summed effective CAL weights, and image counts (device tensors)
    cal_count: Any = 0.0


@dataclass
class EpochTotals:
    """One epoch's training over all ranks: sums, and the slowest rank's times."""

    flops: float
    images: float
    loss: float
    energy_j: float | None   # None unless every rank measured
    time_s: float
    counting_s: float
    last_lr: float
    cal_weights: list[float | None] | None = None  # mean effective CAL weight per p quartile


def reset_classifier(model: nn.Module, num_classes: int) -> bool:
    """Replace the classifier's output layer when the class count changes (adaptation). True if replaced."""
    from workers.models.base import get_parts

    parts = get_parts(model)
    if getattr(model, "num_classes", None) == num_classes:
        return False
    holder_name, last = None, None
    for name, m in parts.classifier.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            holder_name, last = name, m
    if last is None:
        raise ValueError("the classifier has no Conv2d/Linear output layer to resize")
    if isinstance(last, nn.Conv2d):
        new = nn.Conv2d(last.in_channels, num_classes, last.kernel_size, last.stride, last.padding, last.dilation,
                        bias=last.bias is not None)
    else:
        new = nn.Linear(last.in_features, num_classes, bias=last.bias is not None)
    full = parts.classifier_name + (f".{holder_name}" if holder_name else "")
    parent_name, _, child = full.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
    model.num_classes = num_classes
    if isinstance(getattr(model, "spec", None), dict):
        model.spec["num_classes"] = num_classes
    return True


# --------------------------------------------------------------------------- the loop
class Trainer:
    """State of one worker's run; :meth:`run` is the whole loop, in named phases."""

    def __init__(self, config: dict[str, Any], runtime: Runtime) -> None:
        self.raw = config
        self.probe = Path(config["probe_dir"]) if config.get("probe_dir") else None
        self.cfg = ExperimentConfig.model_validate(config["experiment"])
        self.rt = runtime
        self.rank, self.world = runtime.rank, runtime.world_size
        self.device = runtime.device
        self.amp = bool(self.cfg.scaling.amp and self.device.type == "cuda")
        threads = self.cfg.scaling.torch_threads or max(1, int(self.cfg.scaling.cpus_per_worker))
        if self.device.type == "cpu":
            torch.set_num_threads(threads)
        # Everything below is filled in by run()'s phases (data, model, restore, schedule, epochs).
        self.train_ds: Any = None
        self.val_ds: Any = None
        self.train_stored: list[tuple[int, int]] = []
        self.val_stored: list[tuple[int, int]] = []
        self.train_p: np.ndarray | None = None
        self.val_p: np.ndarray | None = None
        self.p_quartile: torch.Tensor | None = None  # each training image's quartile of p = CDF(SC), 0..3
        self.cdf: Any = None
        self.inner: nn.Module | None = None       # the bare model (pruned in place)
        self.model: nn.Module | None = None       # the same, as the runtime wraps it (DDP)
        self.slimmer: Any = None                  # NetworkSlimmer; None without a prunable header
        self.header_base: int | None = None       # header channels of the unpruned model
        self.adapted_from: str | None = None      # the checkpoint an adaptation started from
        self.quantum, self.min_size = 0, 0
        self.phases: dict[bool, DataPhase] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.start_epoch, self.epoch, self.global_step = 0, 0, 0
        self.train_flops = 0.0
        self.history: list[dict] = []
        self.stage_log: list[dict] = []
        self.steps_per_epoch: list[int] = []
        self.total_steps = 1
        self.prune_plan: list[tuple[int, int]] = []
        self._epoch_prunes: list[Any] = []
        self._warned_not_ready = False
        self._start: dict[str, float] | None = None  # where this process's start went, until its first report

    # ------------------------------------------------------------ schedule
    def data_on(self, epoch: int) -> bool:
        """Whether data slimming acts in ``epoch`` (co: always; separate modes: one half)."""
        mode, half = self.cfg.train.mode, self.cfg.train.epochs // 2
        if mode == "network_then_data":
            return epoch >= half
        if mode == "data_then_network":
            return epoch < half
        return True

    def ans_window(self) -> tuple[int, int]:
        """[start, end) epochs over which the S pruning stages are spread (and λ·Σ|γ| is on)."""
        return ans_window(self.cfg.train.mode, self.cfg.train.epochs)

    def ans_active(self, epoch: int) -> bool:
        lo, hi = self.ans_window()
        return self.cfg.ans.enabled and self.slimmer is not None and lo <= epoch < hi

    def due_stage(self, progress_epochs: float) -> int:
        lo, hi = self.ans_window()
        done = min(max(progress_epochs - lo, 0.0), hi - lo)
        return due_stage(done, hi - lo, self.cfg.ans.stages, self.cfg.ans.schedule)

    def planned_prunes(self) -> list[tuple[int, int]]:
        """(epoch, step) after which each stage prunes (:func:`workers.dance.ans.plan_prunes`)."""
        return plan_prunes(self.steps_per_epoch, self.ans_window(), self.cfg.ans.stages, self.cfg.ans.schedule)

    # ------------------------------------------------------------ setup
    def _open_data(self) -> None:
        from workers.data.datasets import open_dataset
        from workers.evaluate import stored_sizes

        d = self.cfg.data
        self.train_ds = open_dataset(d.kind, d.root, d.train_split)
        self.val_ds = open_dataset(d.kind, d.root, d.val_split)
        self.train_stored = stored_sizes(self.train_ds)
        self.val_stored = stored_sizes(self.val_ds)
        tp, vp = self.raw.get("train_p"), self.raw.get("val_p")
        self.train_p = np.asarray(tp, dtype=np.float64) if tp is not None else None
        self.val_p = np.asarray(vp, dtype=np.float64) if vp is not None else None
        if self.train_p is not None and len(self.train_p) != len(self.train_ds):
            raise ValueError(f"worker config has p for {len(self.train_p)} training images, "
                             f"the dataset has {len(self.train_ds)}")
        if self.val_p is not None and len(self.val_p) != len(self.val_ds):
            raise ValueError(f"worker config has p for {len(self.val_p)} val images, "
                             f"the dataset has {len(self.val_ds)}")
        # Paper Table 6: the rules may use a random or inverted indicator instead of p = CDF(SC).
        from workers.dance.slimming import indicator_p

        s, seed = self.cfg.slimming, self.cfg.seed
        if self.train_p is not None:
            # Quartiles of the complexity itself (not of the Table 6 indicator), to show what CAL weighs.
            edges = np.quantile(self.train_p, [0.25, 0.5, 0.75])
            quart = np.clip(np.searchsorted(edges, self.train_p, side="right"), 0, 3)
            self.p_quartile = torch.as_tensor(quart, dtype=torch.long, device=self.device)
            self.train_p = indicator_p(self.train_p, s, seed, d.train_split)
        if self.val_p is not None:
            self.val_p = indicator_p(self.val_p, s, seed, d.val_split)
        if self.cfg.slimming.uses_p and self.train_p is None:
            raise ValueError("data slimming needs complexity scores: "
                             "build the worker config with workers.prepare.worker_config")
        from workers.dance.cdf import MaxwellCDF

        self.cdf = MaxwellCDF.from_dict(self.raw["cdf"]) if self.raw.get("cdf") else None

    def _build_model(self, resume: dict | None) -> None:
        from workers.checkpoint import load_checkpoint
        from workers.dance.ans import NetworkSlimmer

        m = self.cfg.model
        nc = self.train_ds.num_classes
        _seed_everything(self.cfg.seed)
        init_state = None
        if resume is not None:
            model = resume["model"]
            init_state = resume["extra"].get("slimmer")
            self.header_base = resume["extra"].get("header_base_channels")
            self.adapted_from = resume["extra"].get("adapted_from")
        elif self.cfg.train.init_checkpoint is not None:
            ck = load_checkpoint(self.cfg.train.init_checkpoint, map_location="cpu")
            model = ck.model
            if reset_classifier(model, nc):
                log.info("adaptation: classifier re-initialised for %d classes", nc)
            prior = ck.extra.get("slimmer") or {}
            if prior.get("original_channels"):
                self.header_base = int(sum(prior["original_channels"].values()))
            self.adapted_from = str(self.cfg.train.init_checkpoint)
        else:
            if m.pretrained_backbone:
                from workers.models.pretrained import check_same_file

                check_same_file(m.pretrained_backbone, (self.raw.get("pretrained_sha256") or {}).get(
                    str(m.pretrained_backbone)))
            model = build_model(m.name, nc, m.variant,
                                pretrained_backbone=str(m.pretrained_backbone) if m.pretrained_backbone else None,
                                **m.options)
        model.train()
        self.quantum, self.min_size = size_rule(model, self.cfg.train.size_quantum)
        try:
            self.slimmer = NetworkSlimmer(model, self.cfg.ans)
        except (ValueError, TypeError) as exc:
            if self.cfg.ans.enabled:
                raise
            log.warning("no prunable header (%s); header_channels_kept is reported as 1.0", exc)
        if self.slimmer is not None and init_state is not None:
            self.slimmer.load_state_dict(init_state)
        if self.slimmer is not None and self.header_base is None:
            self.header_base = int(sum(self.slimmer.original_channels.values()))
        self.inner = model
        self.model = self.rt.prepare_model(model)

    def _param_groups(self) -> list[dict]:
        from workers.models.base import get_parts

        parts = get_parts(self.inner)
        backbone = {id(p) for p in parts.backbone.parameters()}
        bb = [p for p in self.inner.parameters() if id(p) in backbone and p.requires_grad]
        rest = [p for p in self.inner.parameters() if id(p) not in backbone and p.requires_grad]
        lr = self.cfg.lr
        groups = []
        if bb:
            groups.append({"params": bb, "lr": lr * self.cfg.optim.backbone_lr_mult,
                           "lr_mult": self.cfg.optim.backbone_lr_mult})
        groups.append({"params": rest, "lr": lr, "lr_mult": 1.0})
        return groups

    def _new_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        return torch.optim.SGD(self._param_groups(), lr=self.cfg.lr, momentum=o.momentum,
                               weight_decay=o.weight_decay, nesterov=o.nesterov and o.momentum > 0)

    def _phase(self, slimmed: bool) -> DataPhase:
        from workers.dance.loss import expected_weight
        from workers.dance.sampler import DanceBatchSampler, baseline_steps
        from workers.dance.slimming import dance_sizes, drop_probability, loss_weight
        from workers.data.slimmed import SlimmedTrainSet

        s = self.cfg.slimming
        n = len(self.train_ds)
        if slimmed and self.train_p is not None:
            p = self.train_p
            sizes = dance_sizes(self.train_stored, p, s, self.quantum, self.min_size)
            weights = loss_weight(p, s)
            drop = drop_probability(p, s)
        else:
            off = s.model_copy(update={"cad": False, "cal": False, "casd": False, "rd": False})
            sizes = dance_sizes(self.train_stored, np.ones(n), off, self.quantum, self.min_size)
            weights = np.ones(n)
            drop = drop_probability(np.zeros(n), s) if (slimmed and s.rd) else np.zeros(n)
        t = self.cfg.train
        # drop_budget steps: a dropping epoch takes the baseline's number of steps (DESIGN §3).
        target = (baseline_steps(n, self.cfg.batch_size, world_size=self.world, min_batch=t.min_batch)
                  if s.drop_budget == "steps" and np.any(np.asarray(drop) > 0) else None)
        sampler = DanceBatchSampler(sizes, drop, self.cfg.batch_size, seed=self.cfg.seed, rank=self.rank,
                                    world_size=self.world, min_batch=t.min_batch, fill=t.fill_batches,
                                    target_steps=target)
        ew = (expected_weight(weights, 1.0 - np.asarray(drop))
              if slimmed and s.cal and s.cal_normalize == "epoch" and self.train_p is not None else None)
        d = self.cfg.data
        ds: Dataset = SlimmedTrainSet(self.train_ds, sizes, weights, seed=self.cfg.seed,
                                      augment_scale=tuple(d.augment_scale) if d.augment else None)
        if self.cfg.train.cache_samples and not d.augment:  # augmented samples differ on every draw
            ds = CachedDataset(ds)
        workers = self.cfg.train.loader_workers
        # Its own generator: a DataLoader draws its workers' base seed from the global RNG at every new
        # iterator (each epoch without persistent workers, once with them), which would shift the seeded
        # dropout stream by train.loader_workers and on resume. Samples and augmentation come from the sampler;
        # the generator differs by rank, as a per-process random draw in a loader process would have to.
        loader = DataLoader(ds, batch_sampler=sampler, num_workers=workers, persistent_workers=workers > 0,
                            pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed((self.cfg.seed * 1_000_003 + self.rank)
                                                                    & 0x7FFFFFFF))
        return DataPhase(slimmed, sizes, np.asarray(weights), np.asarray(drop), sampler, loader, ew)

    def _phase_for(self, epoch: int) -> DataPhase:
        on = self.data_on(epoch)
        if on not in self.phases:
            self.phases[on] = self._phase(on)
        return self.phases[on]

    def _eval_sizes(self) -> list[tuple[int, int]]:
        from workers.evaluate import inference_sizes

        return inference_sizes(self.val_stored, self.val_p, self.cfg.slimming, self.quantum, self.min_size)

    # ------------------------------------------------------------ pruning
    def _agreed_plan(self):
        """Rank 0's plan (or its refusal), the same object on every rank."""
        from workers.dance.ans import PrunePlan, PruningNotReadyError

        box: list[Any] = [None]
        if self.rank == 0:
            try:
                force = self.cfg.ans.not_ready == "prune"
                box[0] = {"plan": self.slimmer.plan_stage(force=force).to_dict()}
            except PruningNotReadyError as exc:
                box[0] = {"error": str(exc)}
        dist = _dist()
        if dist is not None:
            dist.broadcast_object_list(box, src=0)
        if "error" in box[0]:
            return None, box[0]["error"]
        return PrunePlan.from_dict(box[0]["plan"]), None

    def prune_if_due(self, due: int) -> bool:
        """Apply the next stage if ``due`` says it is due: at most ONE stage per call (per step).

        Stages never collapse into one step. With ``ans.not_ready: prune`` (default) the stage
        prunes at its own point whatever the |γ| spread; with ``wait`` it is retried at the next
        step, and the later stages follow one step apart at the earliest. Every prune's spread
        goes into the stage log and the epoch's ``ans_prune_gamma_spread``.
        """
        if self.slimmer.stage >= due:
            return False
        plan, err = self._agreed_plan()
        if plan is None:
            if not self._warned_not_ready:
                log.warning("ANS stage %d postponed: %s", self.slimmer.stage + 1, err)
                self._warned_not_ready = True
            return False
        # DESIGN §5: drop the DDP wrapper, identical surgery everywhere, re-wrap, new optimizer.
        self.model = None
        self.slimmer.apply(plan)
        self.model = self.rt.prepare_model(self.inner)
        self.optimizer = self._new_optimizer()
        self.stage_log.append({"stage": plan.stage, "epoch": self.epoch, "step": self.global_step,
                               "channels_after": plan.channels_after, "digest": plan.digest(),
                               "gamma_spread": plan.gamma_spread, "forced": plan.forced})
        self._epoch_prunes.append(plan)
        self._warned_not_ready = False
        self._probe("prune")
        return True

    def _probe(self, event: str) -> None:
        """With ``probe_dir`` in the worker config: append this rank's checksums (verification aid).

        At a prune the parameters are compared (BatchNorm statistics are rank-local between
        DDP's per-forward syncs); at an epoch end, after the buffer broadcast, everything is.
        """
        if self.probe is None:
            return
        from workers.checkpoint import model_structure

        self.probe.mkdir(parents=True, exist_ok=True)
        rec = {"event": event, "epoch": self.epoch, "step": self.global_step, "rank": self.rank,
               "stage": self.slimmer.stage if self.slimmer is not None else 0,
               "header_channels": self.slimmer.header_channels() if self.slimmer is not None else None,
               "params": param_checksum(self.inner, buffers=False),
               "all": param_checksum(self.inner, buffers=True) if event == "epoch_end" else None,
               "structure": ({k: v["shapes"] for k, v in model_structure(self.inner).items()}
                             if event == "epoch_end" else None)}
        with open(self.probe / f"rank{self.rank}.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")

    def _maybe_fault(self, epoch: int, step: int) -> None:
        fi = self.cfg.train.fault_injection
        if fi is None or epoch != fi.epoch or step != fi.step or self.rank != fi.rank or Path(fi.marker).exists():
            return
        Path(fi.marker).parent.mkdir(parents=True, exist_ok=True)
        Path(fi.marker).write_text(f"rank {self.rank} killed at epoch {epoch} step {step}\n")
        log.warning("fault injection: rank %d %s at epoch %d step %d", self.rank,
                    "exits" if fi.kind == "exit" else "raises", epoch, step)
        time.sleep(fi.delay_s)
        if fi.kind == "raise":
            raise RuntimeError(f"fault injection: rank {self.rank} raised at epoch {epoch} step {step}")
        logging.shutdown()
        os._exit(1)

    def header_channels_kept(self) -> float:
        if self.slimmer is None or not self.header_base:
            return 1.0
        return self.slimmer.header_channels() / self.header_base

    # ------------------------------------------------------------ checkpoint
    def _checkpoint_dir(self, epoch: int, metrics: dict) -> Path | None:
        from workers.checkpoint import save_checkpoint

        if self.rank != 0:
            return None
        d = Path(tempfile.mkdtemp(prefix="dance-ckpt-"))
        extra = {
            "epoch": epoch + 1,  # epochs completed
            "global_step": self.global_step,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "slimmer": self.slimmer.state_dict() if self.slimmer is not None else None,
            "sampler": self._phase_for(epoch).sampler.state_dict(len(self._phase_for(epoch).sampler)),
            "train_flops": self.train_flops,
            "header_base_channels": self.header_base,
            "history": self.history,
            "stage_log": self.stage_log,
            "config": self.raw["experiment"],
            "dataset": {"kind": self.cfg.data.kind, "root": str(self.cfg.data.root),
                        "num_classes": self.train_ds.num_classes},
            "adapted_from": self.adapted_from,
            "world_size": self.world,
        }
        save_checkpoint(d / CHECKPOINT_FILE, self.inner, self.cdf, extra, class_names=list(self.train_ds.class_names))
        if self.slimmer is not None:
            (d / REPORT_FILE).write_text(json.dumps(self.slimmer.report(), indent=1))
        (d / "metrics.json").write_text(json.dumps(metrics, indent=1))
        return d

    def _load_resume(self) -> dict | None:
        from workers.checkpoint import load_checkpoint

        with self.rt.resume_dir() as d:
            if d is None:
                return None
            ck = load_checkpoint(Path(d) / CHECKPOINT_FILE, map_location="cpu")
        return {"model": ck.model, "extra": ck.extra}

    # ------------------------------------------------------------ main
    def run(self) -> dict[str, Any]:
        """Algorithm 1 from the config (or the checkpoint resumed from); returns the last epoch's metrics."""
        entered = time.time()
        self._open_data()
        resume = self._load_resume()
        self._build_model(resume)
        self.optimizer = self._new_optimizer()
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self._restore(resume)
        self._plan_schedule()
        eval_sizes = self._eval_sizes()
        meter = EnergyMeter(self.device, exclusive=self.cfg.scaling.gpus_per_worker >= 1)
        self._start = self._start_trace(entered)
        metrics: dict[str, Any] = {}
        for epoch in range(self.start_epoch, self.cfg.train.epochs):
            self.epoch = epoch
            phase = self._phase_for(epoch)
            phase.sampler.set_epoch(epoch)
            totals = self._train_epoch(epoch, phase, meter)
            metrics = self._epoch_metrics(epoch, phase, totals)
            if self._start is not None:
                metrics.update(self._start)
                self._start = None
            if self._evaluates(epoch):
                metrics.update(self._evaluate(eval_sizes))
            self._report(epoch, metrics)
        return metrics

    def _start_trace(self, entered: float) -> dict[str, float]:
        """The start's phases so far (START_METRICS): the trial function's stamps, when a sweep passed them."""
        trace = self.raw.get("trace") or {}
        out = {M.START_SETUP_S: time.time() - entered}
        if "trial_start" in trace and "train_called" in trace:
            out[M.START_TRIAL_S] = trace["train_called"] - trace["trial_start"]
            out[M.START_WORKERS_S] = entered - trace["train_called"]
        return out

    def _restore(self, resume: dict | None) -> None:
        """Counters, history and optimizer state of the checkpoint resumed from; a fresh run starts at 0."""
        if resume is None:
            self.train_flops = float(self.raw.get("scoring_flops") or 0)
            return
        ex = resume["extra"]
        self.start_epoch, self.global_step = int(ex["epoch"]), int(ex["global_step"])
        self.train_flops = float(ex["train_flops"])
        self.history, self.stage_log = list(ex.get("history") or []), list(ex.get("stage_log") or [])
        self.optimizer.load_state_dict(ex["optimizer"])
        if self.scaler is not None and ex.get("scaler"):
            self.scaler.load_state_dict(ex["scaler"])
        log.info("rank %d resumed after epoch %d (stage %s)", self.rank, self.start_epoch,
                 self.slimmer.stage if self.slimmer else "-")

    def _plan_schedule(self) -> None:
        """Steps of every epoch (the poly schedule spans the iterations the run will take, drops included)."""
        self.steps_per_epoch = []
        for e in range(self.cfg.train.epochs):
            sampler = self._phase_for(e).sampler
            sampler.set_epoch(e)
            self.steps_per_epoch.append(len(sampler.plan.batches))
        self.total_steps = max(1, sum(self.steps_per_epoch))
        if self.cfg.ans.enabled and self.slimmer is not None:
            self._plan_prunes()

    def _plan_prunes(self) -> None:
        """Fix where the ANS stages prune; refuse a schedule with fewer steps than stages."""
        a = self.cfg.ans
        self.prune_plan = self.planned_prunes()
        problem = prune_plan_problem(self.steps_per_epoch, self.ans_window(), a.stages, a.schedule)
        if problem:
            raise ValueError(problem)
        if self.rank == 0:
            log.info("ANS schedule (%s): prunes after (epoch, step) %s", a.schedule, self.prune_plan)

    def _lr_scale(self) -> float:
        return poly_lr(1.0, self.global_step, self.total_steps, self.cfg.optim.poly_power)

    def _sync_device(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _train_epoch(self, epoch: int, phase: DataPhase, meter: EnergyMeter) -> EpochTotals:
        """Every step of ``epoch`` on this rank, the ANS stages due in it included; the totals over all ranks."""
        steps = len(phase.sampler.plan.batches)
        ans_on = self.ans_active(epoch)
        # Dropout etc. draw from a generator seeded by (seed, epoch, rank): a resumed run replays it.
        _seed_everything((self.cfg.seed * 1_000_003 + epoch * 1_009 + self.rank) & 0x7FFFFFFF)
        self.inner.train()
        self._epoch_prunes = []
        sums = StepSums(last_lr=self.cfg.lr * self._lr_scale())
        if self.p_quartile is not None:
            sums.cal_weight, sums.cal_count = torch.zeros(4, device=self.device), torch.zeros(4, device=self.device)
        self._sync_device()
        self._maybe_fault(epoch, 0)  # before the first step: fires even in an epoch without steps
        meter.start()
        t0 = time.perf_counter()
        for step, batch in enumerate(phase.loader):
            if step:
                self._maybe_fault(epoch, step)
            self._train_step(batch, ans_on, sums, phase.expected_weight)
            if step == 0 and self._start is not None:  # loading the first batch included
                self._start[M.START_FIRST_STEP_S] = time.perf_counter() - t0
            if ans_on:
                self.prune_if_due(self.due_stage(epoch + (step + 1) / max(steps, 1)))
        if ans_on and steps == 0:  # an epoch with no steps (everything dropped) still reaches its stage
            self.prune_if_due(self.due_stage(epoch + 1))
        self._sync_device()
        train_time = time.perf_counter() - t0 - sums.counting_s
        energy = meter.stop()
        broadcast_buffers(self.inner)
        self._probe("epoch_end")
        cal = sums.cal_weight.tolist() + sums.cal_count.tolist() if self.p_quartile is not None else []
        flops, images, loss, e_sum, e_ok, *cal_sums = all_reduce(
            [sums.flops, sums.images, float(sums.loss), energy or 0.0, 1.0 if energy is not None else 0.0,
             *cal], self.device)
        epoch_time, counting_max = all_reduce([train_time, sums.counting_s], self.device, op="max")
        cal_weights = None
        if len(cal_sums) == 8:
            cal_weights = [w / c if c > 0 else None for w, c in zip(cal_sums[:4], cal_sums[4:])]
        return EpochTotals(flops, images, loss, e_sum if e_ok == self.world else None, epoch_time, counting_max,
                           sums.last_lr, cal_weights)

    def _train_step(self, batch: dict[str, torch.Tensor], ans_on: bool, sums: StepSums,
                    expected: float | None = None) -> None:
        """One SGD step at the poly learning rate (+ λ·Σ|γ| while ANS is on), and its counted FLOPs.

        ``expected``: CAL's epoch normaliser E[w] (``slimming.cal_normalize: epoch``), or None for Eq. 2's Σ wᵢ.
        """
        lr_scale = self._lr_scale()
        for g in self.optimizer.param_groups:
            g["lr"] = self.cfg.lr * g.get("lr_mult", 1.0) * lr_scale
        sums.last_lr = self.cfg.lr * lr_scale
        x = batch["image"].to(self.device, non_blocking=True)
        y = batch["label"].to(self.device, non_blocking=True)
        w = batch["weight"].to(self.device, non_blocking=True)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            logits = self.model(x)
        cal = cal_loss(logits.float(), y, w, expected_weight=expected, across_ranks=True)
        loss = cal.loss
        if self.p_quartile is not None:
            q = self.p_quartile[batch["index"].to(self.device)]
            sums.cal_weight = sums.cal_weight + torch.bincount(q, weights=cal.effective.float(), minlength=4)
            sums.cal_count = sums.cal_count + torch.bincount(q, minlength=4).float()
        if ans_on:
            loss = loss + self.slimmer.l1_penalty()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        n, h, wd = x.shape[0], x.shape[2], x.shape[3]
        # Counting is instrumentation, not training: its time (a meta-device trace per new
        # (structure, size), cached after) is kept out of epoch_time_s and reported apart.
        ta = time.perf_counter()
        sums.flops += count_flops(self.inner, h, wd, batch=1, backward=True).train * n
        sums.counting_s += time.perf_counter() - ta
        sums.images += n
        sums.loss = sums.loss + loss.detach().float() * n  # stays on the device: no per-step sync
        self.global_step += 1

    def _epoch_metrics(self, epoch: int, phase: DataPhase, t: EpochTotals) -> dict[str, Any]:
        """The epoch's training metrics (names declared in :mod:`workers.metrics`); adds its FLOPs to the run's."""
        cfg, plan = self.cfg, phase.sampler.plan
        ans = self.slimmer is not None and cfg.ans.enabled
        self.train_flops += t.flops
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "train_flops": self.train_flops,
            "epoch_train_flops": t.flops,
            "header_channels_kept": self.header_channels_kept(),
            "dropped_fraction": plan.dropped_fraction,
            "batch_fill": plan.batch_fill(cfg.batch_size),
            "moved_fraction": plan.moved / plan.trained if plan.trained else 0.0,
            "unbatched_fraction": plan.unbatched / plan.total if plan.total else 0.0,
            "images_per_s": t.images / t.time_s if t.time_s > 0 else 0.0,
            "epoch_time_s": t.time_s,
            "flop_counting_s": t.counting_s,
            "train_loss": t.loss / t.images if t.images else float("nan"),
            "train_images": t.images,
            "ans_stage": self.slimmer.stage if self.slimmer is not None else 0,
            "lr": t.last_lr,
            "ans_stage_due": self.due_stage(epoch + 1) if ans else 0,
            "data_slimming": float(phase.slimmed),
        }
        if ans:
            metrics["ans_gamma_spread"] = self.slimmer.gamma_spread()
            metrics["ans_prunes"] = len(self._epoch_prunes)
            spreads = [p.gamma_spread for p in self._epoch_prunes if p.gamma_spread is not None]
            if spreads:  # absent in epochs without a prune
                metrics["ans_prune_gamma_spread"] = spreads[-1]
        for name, value in zip(M.CAL_METRICS, t.cal_weights or []):
            if value is not None:  # a quartile without an image this epoch has no mean
                metrics[name] = value
        if t.energy_j is not None:  # every rank measured: the sum is real; otherwise absent
            metrics["energy_j"] = t.energy_j
        return metrics

    def _evaluates(self, epoch: int) -> bool:
        """Every ``train.eval_every``th epoch is scored, and always the last."""
        return (epoch + 1) % self.cfg.train.eval_every == 0 or epoch == self.cfg.train.epochs - 1

    def _evaluate(self, eval_sizes: list[tuple[int, int]]) -> dict[str, float]:
        """The val set scored at its DANCE sizes, ranks' confusion matrices summed."""
        from workers.evaluate import evaluate

        cfg = self.cfg
        res = evaluate(self.inner, self.val_ds, eval_sizes, batch_size=cfg.train.eval_batch_size,
                       device=self.device, rank=self.rank, world_size=self.world, amp=self.amp,
                       loader_workers=cfg.train.loader_workers,
                       count_scoring=bool(cfg.slimming.cad and self.val_p is not None),
                       stored=self.val_stored)
        return res.metrics()

    def _report(self, epoch: int, metrics: dict[str, Any]) -> None:
        """Record the epoch in the history and report it, rank 0 with a checkpoint."""
        self.history.append({k: v for k, v in metrics.items() if not k.startswith(PER_CLASS_PREFIX)})
        ckpt_dir = self._checkpoint_dir(epoch, metrics)
        try:
            self.rt.report(metrics, ckpt_dir, name=f"checkpoint_epoch_{epoch:04d}")
        finally:
            if ckpt_dir is not None:
                shutil.rmtree(ckpt_dir, ignore_errors=True)
        if self.rank == 0:
            log.debug("epoch %d: %s", epoch, {k: metrics[k] for k in METRIC_NAMES if k in metrics})
