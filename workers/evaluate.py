"""Complexity-adaptive inference and its scoring (paper §3.2, DESIGN §3).

Each test image is resized by its CAD ratio ``lo + (hi − lo)·p`` (p from the CDF fitted
on the *training* set), quantised to the network's size quantum, run through the network,
and its logits are upsampled (bilinear) back to the label's full resolution for scoring.
Without CAD (or without a CDF) images run at their stored size rounded to the quantum.

mIoU and per-class IoU come from one confusion matrix summed over ranks; the inference
cost is the counted forward FLOPs of the current structure at each image's size, plus,
when CAD is on, the cost of scoring the image's spatial complexity (inference needs p).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from workers.dance.sampler import eval_batches
from workers.dance.slimming import SlimmingConfig, dance_sizes
from workers.metrics import (
    EVAL_TIME_S,
    INFER_FLOPS_PER_IMAGE,
    INFER_NETWORK_FLOPS_PER_IMAGE,
    MIOU,
    PIXEL_ACC,
    ConfusionMatrix,
    per_class_metric,
)

Size = tuple[int, int]

# FLOPs of Eq. 1 per pixel, as implemented in workers.dance.complexity (element-wise ops, which
# FlopCounterMode does not count): luma 5 (3 mul + 2 add); per direction a central difference
# (1) and the [1, 2, 1] smoothing (3: add, mul-add); magnitude 4 (2 mul, add, sqrt); mean 1.
SCORING_FLOPS_PER_PIXEL = 5 + 2 * (1 + 3) + 4 + 1


def scoring_flops(height: int, width: int) -> int:
    """FLOPs of computing SC_mean (Eq. 1) of one image at its stored resolution."""
    return SCORING_FLOPS_PER_PIXEL * int(height) * int(width)


def stored_sizes(dataset) -> list[Size]:
    """(height, width) of every image of a SegDataset, from file headers."""
    out = []
    for i in range(len(dataset)):
        w, h = dataset.image_size(i)
        out.append((int(h), int(w)))
    return out


def inference_sizes(stored: Sequence[Size], p: np.ndarray | None, slimming: SlimmingConfig,
                    quantum: int, min_size: int) -> list[Size]:
    """Per-image network input size at inference: CAD-scaled when CAD is on and p is known."""
    if p is None or not slimming.cad:
        ratio = np.ones(len(stored))
        off = slimming.model_copy(update={"cad": False})
        return dance_sizes(list(stored), ratio, off, quantum, min_size)
    return dance_sizes(list(stored), np.asarray(p), slimming, quantum, min_size)


def inference_flops(model: nn.Module, sizes: Sequence[Size]) -> int:
    """Counted forward FLOPs of ``model`` summed over images at ``sizes`` (cached per size)."""
    from workers.cost import count_flops

    return sum(n * count_flops(model, h, w, batch=1).forward for (h, w), n in Counter(map(tuple, sizes)).items())


@dataclass
class EvalResult:
    confusion: ConfusionMatrix
    class_names: list[str]
    images: int
    seconds: float
    network_flops: int = 0          # summed over the whole split (all ranks)
    scoring_flops: int = 0          # summed over the whole split, 0 without CAD
    extra: dict = field(default_factory=dict)

    @property
    def miou(self) -> float:
        return self.confusion.miou()

    @property
    def per_class(self) -> dict[str, float | None]:
        return self.confusion.per_class(self.class_names)

    @property
    def infer_flops_per_image(self) -> float:
        return (self.network_flops + self.scoring_flops) / max(self.images, 1)

    def metrics(self) -> dict[str, float]:
        """The evaluation metrics a trial reports (``workers.metrics.EVAL_METRICS`` and ``iou_<class>``)."""
        out = {MIOU: self.miou, PIXEL_ACC: self.confusion.pixel_accuracy(),
               INFER_FLOPS_PER_IMAGE: self.infer_flops_per_image,
               INFER_NETWORK_FLOPS_PER_IMAGE: self.network_flops / max(self.images, 1),
               EVAL_TIME_S: self.seconds}
        for name, v in self.per_class.items():
            if v is not None:
                out[per_class_metric(name)] = v
        return out


def _loader(dataset, sizes: Sequence[Size], batches: list[list[int]], workers: int) -> DataLoader:
    from workers.data.slimmed import SlimmedEvalSet, collate_eval

    return DataLoader(SlimmedEvalSet(dataset, sizes), batch_sampler=batches, collate_fn=collate_eval,
                      num_workers=workers)


def predict_batches(model: nn.Module, dataset, sizes: Sequence[Size], *, batch_size: int, device: torch.device,
                    rank: int = 0, world_size: int = 1, amp: bool = False,
                    loader_workers: int = 0) -> Iterator[tuple[list[int], list[torch.Tensor], list[torch.Tensor]]]:
    """Yield ``(indices, predictions, labels)``: train-id maps at each label's full resolution (CPU)."""
    batches = eval_batches(sizes, batch_size, rank, world_size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in _loader(dataset, sizes, batches, loader_workers):
                x = batch["image"].to(device, non_blocking=True)
                with torch.autocast(device_type=device.type, dtype=torch.float16,
                                    enabled=amp and device.type == "cuda"):
                    logits = model(x)
                preds = []
                for k, label in enumerate(batch["label"]):
                    up = F.interpolate(logits[k:k + 1].float(), size=tuple(label.shape[-2:]), mode="bilinear",
                                       align_corners=False)
                    preds.append(up.argmax(1)[0].cpu())
                yield batch["index"], preds, batch["label"]
    finally:
        model.train(was_training)


def _all_reduce_confusion(cm: ConfusionMatrix, device: torch.device) -> None:
    """Sum the matrix over ranks (on ``device``: NCCL cannot reduce CPU tensors)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        m = cm.matrix.to(device)
        dist.all_reduce(m)
        cm.matrix = m.cpu()


def evaluate(model: nn.Module, dataset, sizes: Sequence[Size], *, batch_size: int, device: torch.device,
             rank: int = 0, world_size: int = 1, amp: bool = False, loader_workers: int = 0,
             count_scoring: bool = False, stored: Sequence[Size] | None = None,
             progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """mIoU of ``model`` on ``dataset`` at ``sizes``; ranks each score their share, matrices are summed."""
    from workers.dance.ans import unwrap_model

    net = unwrap_model(model)
    cm = ConfusionMatrix(dataset.num_classes)
    t0 = time.perf_counter()
    done = 0
    for idx, preds, labels in predict_batches(net, dataset, sizes, batch_size=batch_size, device=device, rank=rank,
                                              world_size=world_size, amp=amp, loader_workers=loader_workers):
        for pred, label in zip(preds, labels):
            cm.update(pred, label)
        done += len(idx)
        if progress:
            progress(done, len(dataset))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    _all_reduce_confusion(cm, device)
    net_flops = inference_flops(net, sizes)
    score = 0
    if count_scoring:
        stored = stored if stored is not None else stored_sizes(dataset)
        score = sum(scoring_flops(h, w) for h, w in stored)
    return EvalResult(cm, list(dataset.class_names), len(dataset), seconds, net_flops, score)
