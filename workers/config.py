"""The typed experiment schema (pydantic); YAML files under configs/ are instances of it.

It lives in ``workers`` because the training loop inside Ray workers consumes it; the
orchestrator loads YAML into it and reports errors with their YAML paths.

Every ablation of the paper is a switch of this one schema:

* baseline            ``ans.enabled: false`` and ``slimming.{cad,casd,cal}: false``
* ANS only            ``slimming.{cad,casd,cal}: false``
* data slimming only  ``ans.enabled: false``
* any subset of CAD / CAL / CASD / RD: ``slimming.<switch>``
* separate optimisation (paper Table 4): ``train.mode: network_then_data | data_then_network``
* adaptation (paper §4.2.3): ``train.init_checkpoint: PATH`` (pruned or not) on another ``data``
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workers.dance.ans import ANSConfig
from workers.dance.slimming import SlimmingConfig
from workers.models import list_models, list_variants, model_options

# Paper §4.1: minibatch 8 for DeepLabv3+ / PSPNet, 16 for BiSeNet / ICNet; lr 1e-3, 1e-2 for ICNet.
PAPER_BATCH = {"deeplabv3plus": 8, "deeplabv3": 8, "pspnet": 8, "bisenet": 16, "icnet": 16}
PAPER_LR = {"icnet": 1e-2}
DEFAULT_LR = 1e-3


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Strict):
    kind: str = Field(default="cityscapes", description="cityscapes | camvid | bdd100k | voc")
    root: Path = Path("data/synth")
    train_split: str = "train"
    val_split: str = "val"
    cache_dir: Path | None = Field(default=None,
                                   description="complexity-score cache; default $DANCE_CACHE_DIR or ~/.cache/dance")
    score_batch: int = Field(default=4, ge=1,
                             description="images per Eq. 1 batch on a GPU; the CPU scores image by image")
    augment: bool = Field(default=False, description=(
        "training augmentation, the same for every arm: random scale in augment_scale with a crop back to the "
        "image's CAD size (so counted FLOPs stay exact), and a horizontal flip"))
    augment_scale: tuple[float, float] = Field(default=(0.75, 1.25), description="random scale range of augment")

    @model_validator(mode="after")
    def _scale_range(self) -> "DataConfig":
        lo, hi = self.augment_scale
        if not 0 < lo <= hi:
            raise ValueError(f"data.augment_scale must be 0 < lo <= hi, got {list(self.augment_scale)}")
        return self


class ModelConfig(Strict):
    """Which network: a registry name, its variant and option overrides (see ``workers.models``)."""

    name: str = Field(default="deeplabv3plus", description="deeplabv3plus | deeplabv3 | pspnet | icnet | bisenet")
    variant: str = Field(default="paper", description="paper | small")
    options: dict[str, Any] = Field(default_factory=dict, description="overrides of the variant's options")
    pretrained_backbone: Path | None = Field(default=None, description="torchvision-format ResNet weights file")

    @model_validator(mode="after")
    def _known(self) -> "ModelConfig":
        if self.name.lower() not in list_models():
            raise ValueError(f"unknown model {self.name!r}; choose one of {list_models()}")
        if self.variant not in list_variants(self.name):
            raise ValueError(f"{self.name} has no variant {self.variant!r}; choose one of {list_variants(self.name)}")
        unknown = sorted(set(self.options) - set(model_options(self.name, self.variant)))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for {self.name}; "
                             f"valid: {sorted(model_options(self.name, self.variant))}")
        return self


class OptimConfig(Strict):
    """SGD with momentum and the poly schedule ``lr·(1 − it/max_it)^power`` (paper §4.1)."""

    lr: float | None = Field(default=None, gt=0, description="default: 1e-3, 1e-2 for ICNet (paper §4.1)")
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=1e-4, ge=0.0)
    nesterov: bool = False
    poly_power: float = Field(default=0.9, ge=0.0)
    backbone_lr_mult: float = Field(default=1.0, ge=0.0, description="backbone lr = lr × this (header/classifier: lr)")


class FaultInjection(Strict):
    """Testing knob: at ``step`` of ``epoch``, rank ``rank`` dies (``kind: exit``, ``os._exit(1)``: what a lost
    worker looks like) or raises (``kind: raise``: a bug in the training code), once per marker file."""

    kind: Literal["exit", "raise"] = "exit"

    epoch: int = Field(ge=0)
    rank: int = Field(default=0, ge=0)
    step: int = Field(default=0, ge=0)
    marker: Path = Field(description="created when the fault fires; no fault while it exists")
    delay_s: float = Field(default=5.0, ge=0.0, description="wait before exiting, so Ray Train has collected "
                                                             "the previous report (it polls workers every 2 s)")


class TrainConfig(Strict):
    epochs: int = Field(default=50, ge=1)
    batch_size: int | None = Field(default=None, ge=2,
                                   description="per worker; default 8 (DeepLabv3+, PSPNet) or 16 (BiSeNet, ICNet)")
    eval_batch_size: int = Field(default=4, ge=1)
    min_batch: int = Field(default=2, ge=2, description="smallest per-worker batch (BatchNorm needs >= 2)")
    mode: Literal["co", "network_then_data", "data_then_network"] = Field(
        default="co", description="co-optimization, or separate optimisation (paper Table 4)")
    init_checkpoint: Path | None = Field(default=None,
                                         description="adaptation: start from this checkpoint (pruned or not)")
    size_quantum: int | None = Field(default=None, ge=1, description=(
        "round CAD sizes to multiples of this (a multiple of the model's size quantum; default: the model's). "
        "Coarser means fewer size buckets and fuller batches on small datasets"))
    fill_batches: bool = Field(default=False, description=(
        "also move a size bucket's partial last batch down to the next smaller bucket, so only the smallest bucket "
        "ends in a partial batch (fuller batches on small datasets, at the price of some images trained one CAD "
        "level smaller; reported as moved_fraction)"))
    eval_every: int = Field(default=1, ge=1, description="evaluate every N epochs (and always after the last)")
    loader_workers: int = Field(default=0, ge=0, description="DataLoader worker processes per training worker")
    cache_samples: bool = Field(default=False, description="keep decoded, resized samples in memory (small datasets)")
    max_failures: int = Field(default=3, ge=-1,
                              description="worker failures Ray Train recovers from (from the last checkpoint)")
    keep_checkpoints: int | None = Field(default=2, ge=1, description="checkpoints kept by Ray Train (None = all)")
    storage_path: str = Field(default=".dance/ray_results", description=(
        "Ray Train/Tune results and checkpoints: a folder (shared by every node on a cluster) or a URI such as "
        "s3://bucket/prefix?endpoint_override=host:port&scheme=http for an S3-compatible server"))
    fault_injection: FaultInjection | None = None

    def resolved_batch(self, model: str) -> int:
        return self.batch_size if self.batch_size is not None else PAPER_BATCH.get(model.lower(), 8)


class ScalingSection(Strict):
    num_workers: int = Field(default=2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=1.0, gt=0, description="with use_gpu")
    amp: bool = Field(default=True, description="mixed precision; takes effect on GPU only")
    backend: Literal["auto", "gloo", "nccl"] = Field(default="auto", description="auto: nccl on GPU, gloo on CPU")
    torch_threads: int | None = Field(default=None, ge=1,
                                      description="intra-op threads per worker; default max(1, cpus_per_worker)")


class TrackingConfig(Strict):
    enabled: bool = True
    experiment: str = "dance"
    tracking_uri: str | None = Field(default=None, description="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    run_name: str | None = None


class ExperimentConfig(Strict):
    name: str = "dance"
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    slimming: SlimmingConfig = SlimmingConfig()
    ans: ANSConfig = ANSConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    scaling: ScalingSection = ScalingSection()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _cross(self) -> "ExperimentConfig":
        t = self.train
        batch = t.resolved_batch(self.model.name)
        if batch < t.min_batch:
            raise ValueError(f"train.batch_size ({batch}) must be at least train.min_batch ({t.min_batch})")
        if t.mode != "co":
            if not self.ans.enabled:
                raise ValueError(f"train.mode {t.mode} separates ANS from data slimming, but ans.enabled is false")
            if not (self.slimming.cad or self.slimming.casd or self.slimming.cal or self.slimming.rd):
                raise ValueError(f"train.mode {t.mode} separates ANS from data slimming, "
                                 "but every slimming switch is off")
            if t.epochs < 2:
                raise ValueError(f"train.mode {t.mode} needs at least 2 epochs (one half each)")
        fi = t.fault_injection
        if fi is not None:
            if fi.epoch >= t.epochs:
                raise ValueError(f"train.fault_injection.epoch ({fi.epoch}) must be < train.epochs ({t.epochs})")
            if fi.rank >= self.scaling.num_workers:
                raise ValueError(f"train.fault_injection.rank ({fi.rank}) must be < scaling.num_workers")
        if self.scaling.backend == "nccl" and not self.scaling.use_gpu:
            raise ValueError("scaling.backend nccl needs scaling.use_gpu: true")
        return self

    @property
    def lr(self) -> float:
        return self.optim.lr if self.optim.lr is not None else PAPER_LR.get(self.model.name.lower(), DEFAULT_LR)

    @property
    def batch_size(self) -> int:
        return self.train.resolved_batch(self.model.name)
