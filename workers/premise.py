"""The premise check (issue 20): are images with higher spatial complexity harder on this data?

DANCE rests on two facts about a dataset: images with a higher Eq. 1 score (SC) are harder
for the model, and downsampling costs complex images more than simple ones. Both are
measured here on a trained model over one split:

* the Spearman rank correlation between SC and each image's loss (mean pixel cross-entropy
  over labelled pixels, logits upsampled to the label), with a percentile-bootstrap interval;
* the mIoU lost at a 0.5× input per SC tercile (images split into thirds by SC rank), each
  tercile's mIoU from its own confusion matrix, as ``dance eval`` scores a split.

:func:`verdict` turns the two into one of three words by :data:`VERDICT_RULE`. The figures'
statistics are pure functions over arrays; :func:`run_model` is the one that runs the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata, spearmanr
from torch import nn
from torch.utils.data import DataLoader

from workers.dance.loss import per_image_ce
from workers.dance.sampler import eval_batches
from workers.dance.slimming import quantize_size
from workers.data.datasets.base import IGNORE_INDEX

Size = tuple[int, int]

# -- the figures a premise check reports (MLflow run-level metrics, JSON keys)
PREMISE_SPEARMAN = "premise_spearman"
PREMISE_SPEARMAN_LO = "premise_spearman_lo"
PREMISE_SPEARMAN_HI = "premise_spearman_hi"
PREMISE_MIOU_DROP = ("premise_miou_drop_t1", "premise_miou_drop_t2", "premise_miou_drop_t3")
PREMISE_DROP_TREND = "premise_drop_trend"  # drop of tercile 3 minus drop of tercile 1
PREMISE_DROP_TREND_LO = "premise_drop_trend_lo"
PREMISE_DROP_TREND_HI = "premise_drop_trend_hi"

HOLDS, DOES_NOT_HOLD, UNCLEAR = "holds", "does not hold", "unclear"
VERDICTS = (HOLDS, DOES_NOT_HOLD, UNCLEAR)
VERDICT_RULE = (
    "holds when the Spearman interval lies above 0 and the mIoU lost at 0.5x grows from the lowest to the highest "
    "SC tercile (trend = drop(t3) - drop(t1) > 0); does not hold when the Spearman interval lies at or below 0, "
    "or the trend's interval lies below 0 (the loss falls by more than the noise); otherwise it is unclear"
)
MIN_IMAGES = 6  # two per tercile: fewer cannot show a trend, and a bootstrap of 2 pairs is meaningless


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval (NaN where undefined)."""

    value: float
    lo: float
    hi: float


@dataclass
class ImageFigures:
    """Per-image results of one model over one split: loss at full size and confusion matrices at both sizes."""

    loss: np.ndarray  # (N,) mean pixel CE at full size; NaN for an image without a labelled pixel
    confusion_full: np.ndarray  # (N, C, C) int64, rows ground truth
    confusion_scaled: np.ndarray  # (N, C, C) int64 at the scaled input
    sizes_full: list[Size] = field(default_factory=list)
    sizes_scaled: list[Size] = field(default_factory=list)


@dataclass
class PremiseResult:
    """The premise check's figures over one split."""

    spearman: Interval
    terciles: np.ndarray  # (N,) 0, 1, 2 by SC rank
    miou_full: np.ndarray  # (3,)
    miou_scaled: np.ndarray  # (3,)
    trend: Interval  # drop(t3) - drop(t1)
    verdict: str
    images: int
    resamples: int
    level: float

    @property
    def drops(self) -> np.ndarray:
        """mIoU(full) − mIoU(scaled) per tercile."""
        return self.miou_full - self.miou_scaled

    def metrics(self) -> dict[str, float]:
        """The run-level metrics of a premise check, by their declared names."""
        out = {PREMISE_SPEARMAN: self.spearman.value, PREMISE_SPEARMAN_LO: self.spearman.lo,
               PREMISE_SPEARMAN_HI: self.spearman.hi, PREMISE_DROP_TREND: self.trend.value,
               PREMISE_DROP_TREND_LO: self.trend.lo, PREMISE_DROP_TREND_HI: self.trend.hi}
        out.update({name: float(d) for name, d in zip(PREMISE_MIOU_DROP, self.drops)})
        return out


def terciles_of(sc: np.ndarray) -> np.ndarray:
    """Tercile (0 lowest SC … 2 highest) of every image by SC rank; sizes differ by at most one."""
    sc = np.asarray(sc, dtype=np.float64)
    order = np.argsort(sc, kind="stable")
    out = np.empty(len(sc), dtype=np.int64)
    for t, part in enumerate(np.array_split(order, 3)):
        out[part] = t
    return out


def miou_of(confusion: np.ndarray) -> np.ndarray:
    """mIoU of (..., C, C) confusion matrices, as :class:`workers.metrics.ConfusionMatrix` defines it."""
    m = np.asarray(confusion, dtype=np.float64)
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    denom = m.sum(-1) + m.sum(-2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / np.where(denom > 0, denom, 1.0), np.nan)
    seen = np.isfinite(iou).any(-1)
    # a matrix without one labelled pixel has no mIoU; nanmean would warn on it
    return np.where(seen, np.nansum(iou, -1) / np.maximum(np.isfinite(iou).sum(-1), 1), np.nan)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1.0), np.nan)


def spearman_interval(x: np.ndarray, y: np.ndarray, *, resamples: int = 1000, level: float = 0.95,
                      seed: int = 0) -> Interval:
    """Spearman's ρ between ``x`` and ``y`` and its percentile-bootstrap interval (pairs resampled, seeded).

    Pairs with a NaN are left out. A resample whose ranks are constant has no ρ and is skipped.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3:
        return Interval(float("nan"), float("nan"), float("nan"))
    rho = float(spearmanr(x, y).statistic)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    # ranks with ties averaged, then Pearson on the ranks: what spearmanr computes, for all resamples at once
    boot = _rowwise_pearson(rankdata(x[idx], axis=1), rankdata(y[idx], axis=1))
    lo, hi = _percentiles(boot, level)
    return Interval(rho if np.isfinite(rho) else float("nan"), lo, hi)


def tercile_mious(confusion: np.ndarray, terciles: np.ndarray) -> np.ndarray:
    """mIoU of each tercile from its images' summed confusion matrices → (3,)."""
    return np.array([miou_of(confusion[terciles == t].sum(0)) for t in range(3)])


def _resampled_miou(confusion: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """mIoU of every bootstrap resample, given how often each image is drawn (``counts`` (B, n))."""
    n, c = confusion.shape[0], confusion.shape[-1]
    summed = counts.astype(np.float64) @ confusion.reshape(n, c * c).astype(np.float64)
    return miou_of(summed.reshape(-1, c, c))


def trend_interval(conf_full: np.ndarray, conf_scaled: np.ndarray, terciles: np.ndarray, *,
                   resamples: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """drop(t3) − drop(t1), drop = mIoU(full) − mIoU(scaled), with a bootstrap interval.

    Images are resampled within each tercile (stratified: a tercile keeps its size), the same
    draw for both input sizes, so the interval reflects which images happen to be in the split.
    """
    rng = np.random.default_rng(seed)
    drops = []
    for t in (0, 2):
        members = np.flatnonzero(terciles == t)
        n = len(members)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)
        drops.append(_resampled_miou(conf_full[members], counts) - _resampled_miou(conf_scaled[members], counts))
    full, scaled = tercile_mious(conf_full, terciles), tercile_mious(conf_scaled, terciles)
    value = float((full[2] - scaled[2]) - (full[0] - scaled[0]))
    lo, hi = _percentiles(drops[1] - drops[0], level)
    return Interval(value, lo, hi)


def verdict_phrase(word: str) -> str:
    """How a verdict reads after "the premise": "holds", "does not hold", "is unclear"."""
    return "is unclear" if word == UNCLEAR else word


def verdict(spearman: Interval, trend: Interval) -> str:
    """:data:`HOLDS`, :data:`DOES_NOT_HOLD` or :data:`UNCLEAR` by :data:`VERDICT_RULE`."""
    if spearman.hi <= 0 or trend.hi < 0:
        return DOES_NOT_HOLD
    if spearman.lo > 0 and trend.value > 0:
        return HOLDS
    return UNCLEAR  # also where a figure is NaN: nothing was shown either way


def premise_figures(sc: np.ndarray, figures: ImageFigures, *, resamples: int = 1000, level: float = 0.95,
                    seed: int = 0) -> PremiseResult:
    """The premise check's figures and verdict from per-image SC and a model's per-image results."""
    sc = np.asarray(sc, dtype=np.float64)
    if len(sc) != len(figures.loss):
        raise ValueError(f"{len(sc)} scores but {len(figures.loss)} images with results")
    if len(sc) < MIN_IMAGES:
        raise ValueError(f"the premise check needs at least {MIN_IMAGES} images (two per SC tercile), got {len(sc)}")
    if resamples < 10:
        raise ValueError(f"resamples must be at least 10, got {resamples}")
    terc = terciles_of(sc)
    rho = spearman_interval(sc, figures.loss, resamples=resamples, level=level, seed=seed)
    # a different stream for the second bootstrap, so the two intervals' noise is not the same draw
    trend = trend_interval(figures.confusion_full, figures.confusion_scaled, terc, resamples=resamples, level=level,
                           seed=seed + 1)
    return PremiseResult(spearman=rho, terciles=terc, miou_full=tercile_mious(figures.confusion_full, terc),
                         miou_scaled=tercile_mious(figures.confusion_scaled, terc), trend=trend,
                         verdict=verdict(rho, trend), images=len(sc), resamples=resamples, level=level)


def scaled_sizes(stored: Sequence[Size], scale: float, quantum: int, min_size: int) -> list[Size]:
    """Network input sizes at ``scale`` of each stored (height, width), on the model's size grid."""
    return [quantize_size(h, w, scale, quantum, min_size) for h, w in stored]


def _confusion(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> np.ndarray:
    keep = label != IGNORE_INDEX
    t, p = label[keep].long(), pred[keep].long().clamp(0, num_classes - 1)
    return torch.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes).numpy()


def _pass(model: nn.Module, dataset, sizes: Sequence[Size], *, batch_size: int, device: torch.device,
          with_loss: bool, progress: Callable[[], None] | None) -> tuple[np.ndarray, np.ndarray]:
    """(per-image loss or NaN, per-image confusion) of one pass over ``dataset`` at ``sizes``."""
    from workers.data.slimmed import SlimmedEvalSet, collate_eval

    n, k = len(dataset), dataset.num_classes
    loss = np.full(n, np.nan)
    conf = np.zeros((n, k, k), dtype=np.int64)
    loader = DataLoader(SlimmedEvalSet(dataset, sizes), batch_sampler=eval_batches(sizes, batch_size),
                        collate_fn=collate_eval)
    with torch.no_grad():
        for batch in loader:
            logits = model(batch["image"].to(device))
            for j, (i, label) in enumerate(zip(batch["index"], batch["label"])):
                # scored at the label's resolution, as workers.evaluate does for CAD inference
                up = F.interpolate(logits[j:j + 1].float(), size=tuple(label.shape[-2:]), mode="bilinear",
                                   align_corners=False).cpu()
                if with_loss:
                    li, has = per_image_ce(up, label[None])
                    loss[i] = float(li[0]) if bool(has[0]) else float("nan")
                conf[i] = _confusion(up.argmax(1)[0], label, k)
                if progress:
                    progress()
    return loss, conf


def run_model(model: nn.Module, dataset, stored: Sequence[Size], *, quantum: int, min_size: int,
              scale: float = 0.5, batch_size: int = 4, device: str | torch.device = "cpu",
              progress: Callable[[int, int], None] | None = None) -> ImageFigures:
    """Run ``model`` over ``dataset`` at full input size (loss and confusion) and at ``scale`` (confusion)."""
    from workers.dance.ans import unwrap_model

    device = torch.device(device)
    net = unwrap_model(model)
    full = scaled_sizes(stored, 1.0, quantum, min_size)
    small = scaled_sizes(stored, scale, quantum, min_size)
    done, total = 0, 2 * len(dataset)

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    was_training = net.training
    net.eval()
    try:
        loss, conf_full = _pass(net, dataset, full, batch_size=batch_size, device=device, with_loss=True,
                                progress=tick)
        _, conf_small = _pass(net, dataset, small, batch_size=batch_size, device=device, with_loss=False,
                              progress=tick)
    finally:
        net.train(was_training)
    return ImageFigures(loss, conf_full, conf_small, full, small)
