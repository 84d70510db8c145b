"""mIoU with the Cityscapes benchmark's definition, from a streaming confusion matrix.

IoU_c = TP / (TP + FP + FN) accumulated over the whole split (not averaged per image);
pixels whose ground truth is ignore (255) count nowhere; mIoU is the mean over classes
whose IoU is defined (a class absent from both ground truth and predictions is NaN and
left out of the mean, as in cityscapesscripts). Matrices add, so ranks merge by sum.

This module also declares, once, every metric a trial reports per epoch
(:mod:`workers.train_loop` and :mod:`workers.evaluate`): whatever lists metrics elsewhere (the
sweep's objective check, a log line, a test) derives from these groups instead of keeping a
copy. ``tests/workers/test_metrics_declared.py`` runs the loop and holds it to them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from workers.data.datasets.base import IGNORE_INDEX

if TYPE_CHECKING:
    import torch

# torch is imported inside ConfusionMatrix: the names and groups below are read where nothing else needs
# torch (the MLflow run schema, `dance runs`, `dance report`), and it takes ~2 s to load.

# --------------------------------------------------------------------------- reported metrics
# Emitted by the training loop in every epoch.
EPOCH = "epoch"
TRAIN_FLOPS = "train_flops"                      # cumulative, scoring of the training set included
EPOCH_TRAIN_FLOPS = "epoch_train_flops"
HEADER_CHANNELS_KEPT = "header_channels_kept"
DROPPED_FRACTION = "dropped_fraction"
BATCH_FILL = "batch_fill"
MOVED_FRACTION = "moved_fraction"
UNBATCHED_FRACTION = "unbatched_fraction"
IMAGES_PER_S = "images_per_s"
EPOCH_TIME_S = "epoch_time_s"
FLOP_COUNTING_S = "flop_counting_s"
TRAIN_LOSS = "train_loss"
TRAIN_IMAGES = "train_images"
ANS_STAGE = "ans_stage"
ANS_STAGE_DUE = "ans_stage_due"                  # 0 with ANS off
LR = "lr"
DATA_SLIMMING = "data_slimming"                  # 1.0 in epochs where data slimming acts

# Emitted by the training loop while ``ans.enabled`` (and the model has a prunable header).
ANS_GAMMA_SPREAD = "ans_gamma_spread"
ANS_PRUNES = "ans_prunes"
ANS_PRUNE_GAMMA_SPREAD = "ans_prune_gamma_spread"  # only in epochs where a stage pruned

# Emitted by the training loop when the run has complexity scores (any data-slimming switch on): the
# mean effective CAL weight of the epoch's images in each quartile of p (1.0 = an unweighted mean's).
CAL_WEIGHT_Q1 = "cal_weight_q1"
CAL_WEIGHT_Q2 = "cal_weight_q2"
CAL_WEIGHT_Q3 = "cal_weight_q3"
CAL_WEIGHT_Q4 = "cal_weight_q4"

# Emitted in the first epoch a worker process runs (a fresh start, a resume, a retry): where the trial's start
# went, in seconds on rank 0. The first two only under a sweep, whose trial function stamps the times it hands
# on (wall clocks: on a cluster they include the skew between the trial driver's node and rank 0's).
START_TRIAL_S = "start_trial_s"                  # the trial function, from its start to calling Ray Train
START_WORKERS_S = "start_workers_s"              # that call to the loop running: controller, placement, processes
START_SETUP_S = "start_setup_s"                  # the loop's set-up: dataset, model, checkpoint restore, schedule
START_FIRST_STEP_S = "start_first_step_s"        # the first step (it is inside epoch_time_s)

# Emitted only when measured: absent, never 0, where a rank could not measure it (no NVML).
ENERGY_J = "energy_j"

# Emitted by workers.evaluate in the epochs that evaluate (every ``train.eval_every``th and the last).
MIOU = "miou"
PIXEL_ACC = "pixel_acc"
INFER_FLOPS_PER_IMAGE = "infer_flops_per_image"
INFER_NETWORK_FLOPS_PER_IMAGE = "infer_network_flops_per_image"
EVAL_TIME_S = "eval_time_s"
PER_CLASS_PREFIX = "iou_"                        # + the class name, spaces as "_"; only classes with a defined IoU

ALWAYS_METRICS: tuple[str, ...] = (
    EPOCH, TRAIN_FLOPS, EPOCH_TRAIN_FLOPS, HEADER_CHANNELS_KEPT, DROPPED_FRACTION, BATCH_FILL, MOVED_FRACTION,
    UNBATCHED_FRACTION, IMAGES_PER_S, EPOCH_TIME_S, FLOP_COUNTING_S, TRAIN_LOSS, TRAIN_IMAGES, ANS_STAGE,
    ANS_STAGE_DUE, LR, DATA_SLIMMING)
ANS_METRICS: tuple[str, ...] = (ANS_GAMMA_SPREAD, ANS_PRUNES, ANS_PRUNE_GAMMA_SPREAD)
CAL_METRICS: tuple[str, ...] = (CAL_WEIGHT_Q1, CAL_WEIGHT_Q2, CAL_WEIGHT_Q3, CAL_WEIGHT_Q4)
START_METRICS: tuple[str, ...] = (START_TRIAL_S, START_WORKERS_S, START_SETUP_S, START_FIRST_STEP_S)
MEASURED_METRICS: tuple[str, ...] = (ENERGY_J,)
EVAL_METRICS: tuple[str, ...] = (MIOU, PIXEL_ACC, INFER_FLOPS_PER_IMAGE, INFER_NETWORK_FLOPS_PER_IMAGE, EVAL_TIME_S)
# Every fixed name a trial can report (per-class IoUs aside: see is_trial_metric).
TRIAL_METRICS: tuple[str, ...] = (ALWAYS_METRICS + ANS_METRICS + CAL_METRICS + START_METRICS + MEASURED_METRICS
                                   + EVAL_METRICS)
# The headline figures: the per-epoch log line, and what the Ray tests require of every report
# (their runs evaluate every epoch, hence the evaluation figures).
SUMMARY_METRICS: tuple[str, ...] = (EPOCH, MIOU, TRAIN_FLOPS, INFER_FLOPS_PER_IMAGE, HEADER_CHANNELS_KEPT,
                                    DROPPED_FRACTION, BATCH_FILL, IMAGES_PER_S, EPOCH_TIME_S)


# --------------------------------------------------------------------------- display groups
# Where people browse these figures (MLflow's charts), they are grouped: a chart section per part before
# the last "/", sections sorted by name, unprefixed names last ("Model metrics"). So the groups are named
# to sort in reading order: what a trial reached, what it cost, how training went, the algorithm's
# diagnostics, then one IoU per class. The names above stay what a trial reports (Ray results,
# checkpoints, history.json); orchestrator.runs.schema.mlflow_metric_name applies the groups where
# metrics are logged to MLflow, and reads either form back.
GROUP_SEP = "/"
ACCURACY_GROUP = "accuracy"
COST_GROUP = "cost"
TRAIN_GROUP = "train"
DIAG_GROUP = "diag"                              # every other name a trial reports, ones added later included
PER_CLASS_GROUP = "iou"                          # iou_<class> -> iou/<class>
METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    ACCURACY_GROUP: (MIOU, PIXEL_ACC),
    COST_GROUP: (TRAIN_FLOPS, INFER_FLOPS_PER_IMAGE, ENERGY_J),
    TRAIN_GROUP: (EPOCH, TRAIN_LOSS, LR, IMAGES_PER_S, EPOCH_TIME_S, EVAL_TIME_S, TRAIN_IMAGES, EPOCH_TRAIN_FLOPS),
}
# Shown under another last part where the plain name would mislead: ``epoch`` counts from 0 (it is the
# step of every per-epoch figure) while people read "epoch 1/N" for the first.
GROUPED_AS: dict[str, str] = {EPOCH: "epoch_index"}


def per_class_metric(class_name: str) -> str:
    """The metric name of one class's IoU (``iou_<class>``, spaces as underscores)."""
    return PER_CLASS_PREFIX + class_name.replace(" ", "_")


def is_per_class_metric(name: str) -> bool:
    """Whether ``name`` is a per-class IoU (``iou_<class>``)."""
    return name.startswith(PER_CLASS_PREFIX) and len(name) > len(PER_CLASS_PREFIX)


def is_trial_metric(name: str) -> bool:
    """Whether a trial can report ``name`` in an epoch (a declared name or ``iou_<class>``)."""
    return name in TRIAL_METRICS or is_per_class_metric(name)



class ConfusionMatrix:
    """Rows are ground truth, columns predictions."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        import torch

        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted and ground-truth train-id maps (same shape)."""
        import torch

        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(target.shape)} differ in shape")
        pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        if target.numel() and (int(target.max()) >= self.num_classes or int(target.min()) < 0):
            raise ValueError(f"label values must be < {self.num_classes} or {self.ignore_index}")
        k = self.num_classes
        counts = torch.bincount(target * k + pred.clamp(0, k - 1), minlength=k * k)
        self.matrix += counts.reshape(k, k).to(self.matrix.device, torch.int64)

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        self.matrix += other.matrix
        return self

    def all_reduce(self) -> None:
        """Sum the matrix over all ranks of an initialised ``torch.distributed`` group."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix)

    def iou(self) -> np.ndarray:
        m = self.matrix.double().cpu().numpy()
        tp = np.diag(m)
        denom = m.sum(0) + m.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, tp / denom, np.nan)

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        m = self.matrix.double()
        total = float(m.sum())
        return float(m.diag().sum()) / total if total else float("nan")

    def per_class(self, class_names: list[str]) -> dict[str, float | None]:
        """IoU by class name; None where undefined (JSON-friendly)."""
        return {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, self.iou())}
