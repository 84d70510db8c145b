"""mIoU with the Cityscapes benchmark's definition, from a streaming confusion matrix.

IoU_c = TP / (TP + FP + FN) accumulated over the whole split (not averaged per image);
pixels whose ground truth is ignore (255) count nowhere; mIoU is the mean over classes
whose IoU is defined (a class absent from both ground truth and predictions is NaN and
left out of the mean, as in cityscapesscripts). Matrices add, so ranks merge by sum.
"""
from __future__ import annotations

import numpy as np
import torch

from workers.data.datasets.base import IGNORE_INDEX


class ConfusionMatrix:
    """Rows are ground truth, columns predictions."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted and ground-truth train-id maps (same shape)."""
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
