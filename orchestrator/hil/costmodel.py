"""A per-board cost model learned from the measurement cache.

For each *group* — board model, runtime, power mode, device and mode (inference or
training) — and each target (J/image, latency p50, training J/step) a small regression

    log y = w0 + w1·log FLOPs + w2·log parameter bytes + w3·log pixels + w_family

is fitted by ridge-regularised least squares on the cached measurements that carry
features (every ``dance bench`` and hardware-in-the-loop measurement records them). The
family term is one offset per model family seen (work FLOPs do not count, such as
many small upsamplings, differs by architecture); an unseen family gets none. A log
model because the figures span orders of magnitude across buckets and models and its
error is relative, which is how MAPE judges it. A group with fewer than ``min_points``
measurements predicts nothing: no prediction is better than a guess.
"""
from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

FEATURES = ("flops", "param_bytes", "pixels")
#: target name → where it sits in the agent's result JSON
TARGETS = {"energy_j_per_image": ("energy_j_per_image_gross",), "latency_ms_p50": ("latency_ms", "p50"),
           "train_energy_j_per_step": ("energy_j_per_step_gross",)}
MODE_TARGETS = {"inference": ("energy_j_per_image", "latency_ms_p50"), "train": ("train_energy_j_per_step",)}
RIDGE = 1e-3


@dataclass(frozen=True)
class Sample:
    group: tuple[str, ...]       # (board_model, runtime, power_mode, device, mode)
    model: str                   # model sha256: held-out splits keep a model's buckets together
    family: str
    x: tuple[float, ...]         # FEATURES, in order
    y: dict[str, float]


def group_of(parts: dict[str, Any]) -> tuple[str, ...]:
    mode = "train" if str(parts.get("mode", "")).startswith("train") else "inference"
    # runtime flags such as --fp16 change the figures as much as the runtime does
    return (str(parts.get("board_model")), str(parts.get("runtime")), str(parts.get("power_mode")),
            str(parts.get("device")), str(parts.get("runtime_args") or ""), mode)


def _target(result: dict[str, Any], path: tuple[str, ...]) -> float | None:
    v: Any = result
    for k in path:
        v = v.get(k) if isinstance(v, dict) else None
    return float(v) if isinstance(v, (int, float)) and v > 0 and math.isfinite(v) else None


def samples_from_cache(path: str | Path) -> list[Sample]:
    """Every cached measurement that carries features (read-only; the cache may be in use)."""
    p = Path(path)
    if not p.is_file():
        return []
    db = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT parts, result FROM measurements").fetchall()
    finally:
        db.close()
    out = []
    for parts_s, value_s in rows:
        parts, value = json.loads(parts_s), json.loads(value_s)
        feats, result = value.get("features"), value.get("result") or {}
        if not feats or not result.get("ok", True) or result.get("quality") == "fail":
            continue  # a figure that failed its quality gate teaches the model nothing
        g = group_of(parts)
        ys = {t: _target(result, TARGETS[t]) for t in MODE_TARGETS[g[-1]]}
        ys = {k: v for k, v in ys.items() if v is not None}
        if ys:
            out.append(Sample(g, parts.get("model_sha256", ""), str(feats.get("family", "?")),
                              tuple(float(feats[f]) for f in FEATURES), ys))
    return out


@dataclass
class Fit:
    w: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: int
    families: tuple[str, ...] = ()

    def predict(self, x: tuple[float, ...], family: str | None = None) -> float:
        z = (np.log(np.asarray(x, dtype=np.float64)) - self.mean) / self.std
        k = len(FEATURES) + 1
        offset = self.w[k + self.families.index(family)] if family in self.families else 0.0
        return float(math.exp(self.w[0] + z @ self.w[1:k] + offset))


def fit_one(xs: list[tuple[float, ...]], ys: list[float], families: list[str] | None = None) -> Fit:
    lx = np.log(np.asarray(xs, dtype=np.float64))
    mean, std = lx.mean(axis=0), lx.std(axis=0)
    std[std < 1e-9] = 1.0  # a feature that never varies (one bucket size) carries no information
    z = (lx - mean) / std
    fams = tuple(sorted(set(families or []))) if families and len(set(families)) > 1 else ()
    onehot = np.array([[f == g for g in fams] for f in (families or [])], dtype=np.float64).reshape(len(z), len(fams))
    a = np.hstack([np.ones((len(z), 1)), z, onehot])
    reg = RIDGE * len(z) * np.eye(a.shape[1])
    reg[0, 0] = 0.0  # never shrink the intercept
    w = np.linalg.solve(a.T @ a + reg, a.T @ np.log(np.asarray(ys, dtype=np.float64)))
    return Fit(w, mean, std, len(ys), fams)


@dataclass
class CostModel:
    """Fits per (group, target); :meth:`predict` answers only for groups with enough points."""

    min_points: int = 8
    fits: dict[tuple[tuple[str, ...], str], Fit] = field(default_factory=dict)

    @classmethod
    def fitted(cls, samples: Iterable[Sample], min_points: int = 8) -> "CostModel":
        model = cls(min_points)
        data: dict[tuple[tuple[str, ...], str], tuple[list, list, list]] = {}
        for s in samples:
            for t, y in s.y.items():
                xs, ys, fs = data.setdefault((s.group, t), ([], [], []))
                xs.append(s.x)
                ys.append(y)
                fs.append(s.family)
        for key, (xs, ys, fs) in data.items():
            if len(ys) >= min_points:
                model.fits[key] = fit_one(xs, ys, fs)
        return model

    def points(self, group: tuple[str, ...], target: str) -> int:
        f = self.fits.get((group, target))
        return f.n if f else 0

    def predict(self, group: tuple[str, ...], target: str, features: dict[str, Any]) -> float | None:
        f = self.fits.get((group, target))
        if f is None:
            return None
        return f.predict(tuple(float(features[k]) for k in FEATURES), features.get("family"))


def mape(model: CostModel, samples: Iterable[Sample]) -> dict[tuple[str, str], tuple[float, int]]:
    """Mean absolute percentage error per (family, target) on ``samples``: {key: (MAPE %, n)}."""
    errs: dict[tuple[str, str], list[float]] = {}
    for s in samples:
        for t, y in s.y.items():
            p = model.predict(s.group, t, {**dict(zip(FEATURES, s.x)), "family": s.family})
            if p is not None:
                errs.setdefault((s.family, t), []).append(abs(p - y) / y)
    return {k: (100.0 * float(np.mean(v)), len(v)) for k, v in errs.items()}


def split_by_model(samples: list[Sample], held_out: float = 0.3, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """(train, test) with whole models held out: the test predicts models the fit never saw."""
    models = sorted({s.model for s in samples})
    rng = np.random.default_rng(seed)
    rng.shuffle(models)
    test = set(models[:max(1, int(round(held_out * len(models))))])
    return [s for s in samples if s.model not in test], [s for s in samples if s.model in test]
