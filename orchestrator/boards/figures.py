"""From per-bucket agent results to a board group's figures, and how far to trust them.

Expected energy per image on a group = Σ_k fraction_k · J_k over the export's resolution
buckets (the dataset's bucket distribution) + the cost of scoring Eq. 1 at the stored sizes.
Latency quantiles are those of the mixture of the buckets' latency distributions. A figure
nothing measured is absent, never 0; a net energy that came out ≤ 0 (the workload drew
nothing measurable above active idle) is flagged and left out, not logged as a number.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

QUALITY_ORDER = ("ok", "warn", "fail")


@dataclass
class Measurement:
    """One (board group, purpose, bucket) of a bench: what the agent answered, or why not."""

    kind: str             # the board group's name
    purpose: str          # infer | train | score
    height: int
    width: int
    fraction: float
    result: dict[str, Any] | None = None
    board: str | None = None
    cached: bool = False
    error: dict[str, Any] | None = None
    features: dict[str, Any] | None = None   # what the cost model sees (FLOPs, parameter bytes, pixels)
    remeasured: bool = False                 # the quality gate asked for more repeats

    @property
    def quality(self) -> str | None:
        return (self.result or {}).get("quality")


def _mix_quantile(parts: list[tuple[float, dict[str, Any]]], q: float) -> float | None:
    """Quantile q of a mixture of per-bucket latency distributions, each known by its min, p50, p90,
    p99 and max (piecewise-linear CDF through them); solved by bisection. None if any is missing."""
    cdfs = []
    for frac, lat in parts:
        pts = [(lat.get("min"), 0.0), (lat.get("p50"), 0.5), (lat.get("p90"), 0.9), (lat.get("p99"), 0.99),
               (lat.get("max"), 1.0)]
        pts = [(x, p) for x, p in pts if x is not None]
        if len(pts) < 2:
            return None
        pts.sort()
        cdfs.append((frac, pts))

    def cdf(x: float) -> float:
        total = 0.0
        for frac, pts in cdfs:
            if x <= pts[0][0]:
                v = 0.0
            elif x >= pts[-1][0]:
                v = 1.0
            else:
                v = 0.0
                for (x0, p0), (x1, p1) in zip(pts, pts[1:]):
                    if x0 <= x <= x1:
                        v = p0 if x1 == x0 else p0 + (p1 - p0) * (x - x0) / (x1 - x0)
                        break
            total += frac * v
        return total

    lo = min(p[0][0] for _, p in cdfs)
    hi = max(p[-1][0] for _, p in cdfs)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
    return 0.5 * (lo + hi)


def _value(m: Measurement, key: str) -> Any:
    v: Any = m.result or {}
    for k in key.split("/"):
        v = v.get(k) if isinstance(v, dict) else None
    return v


def _weighted(ms: list[Measurement], key: str) -> float | None:
    """Σ fraction · value over buckets (fractions normalised); None unless every bucket has a value.

    ``key`` may name a nested value (``ci95/energy_j_per_image_gross/half_width``).
    """
    vals = [(m.fraction, _value(m, key)) for m in ms]
    if not vals or any(not isinstance(v, (int, float)) for _, v in vals):
        return None
    total = sum(f for f, _ in vals)
    return sum(f * v for f, v in vals) / total if total > 0 else None


def _nonpositive_net(ms: list[Measurement]) -> list[str]:
    """The buckets whose net energy per image came out <= 0."""
    out = []
    for m in ms:
        v = _value(m, "energy_j_per_image_net")
        if isinstance(v, (int, float)) and v <= 0:
            out.append(f"{m.purpose} {m.height}x{m.width}")
    return out


def figures(kind: str, ms: list[Measurement]) -> dict[str, float]:
    """The metrics of one board group; a figure nothing measured is left out."""
    infer = [m for m in ms if m.purpose == "infer"]
    train = [m for m in ms if m.purpose == "train"]
    score = [m for m in ms if m.purpose == "score"]
    out: dict[str, float | None] = {}
    p = f"device.{kind}."
    j_net = _weighted(infer, "energy_j_per_image_gross")
    j_score = _weighted(score, "energy_j_per_image_gross") if score else 0.0
    out[p + "energy_j_per_image"] = None if j_net is None or j_score is None else j_net + j_score
    out[p + "network_energy_j_per_image"] = j_net
    if score:
        out[p + "scoring_energy_j_per_image"] = j_score
    if not _nonpositive_net(infer + score):  # a net energy <= 0 is a flag (see quality), not a figure
        jn = _weighted(infer, "energy_j_per_image_net")
        jsn = _weighted(score, "energy_j_per_image_net") if score else 0.0
        out[p + "energy_j_per_image_net"] = None if jn is None or jsn is None else jn + jsn
    if infer and all(m.result for m in infer):
        parts = [(m.fraction, m.result.get("latency_ms") or {}) for m in infer]
        for q, name in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
            out[p + f"latency_ms_{name}"] = _mix_quantile(parts, q)
        out.update(_spread(p, infer))
    if train:
        out[p + "train_energy_j_per_step"] = _weighted(train, "energy_j_per_step_gross")
    for m in infer:
        lat = (m.result or {}).get("latency_ms") or {}
        b = f"{p}b{m.height}x{m.width}."
        out[b + "energy_j_per_image"] = (m.result or {}).get("energy_j_per_image_gross")
        out[b + "latency_ms_p50"] = lat.get("p50")
        out[b + "latency_ms_p90"] = lat.get("p90")
    return {k: float(v) for k, v in out.items() if v is not None and not isinstance(v, bool)}


def _spread(p: str, infer: list[Measurement]) -> dict[str, float | None]:
    """Throughput, power and how much the figures vary, for the network's inference buckets."""
    out: dict[str, float | None] = {}
    secs = [(m.fraction, _value(m, "throughput_ips")) for m in infer]
    if secs and all(isinstance(v, (int, float)) and v > 0 for _, v in secs):
        total = sum(f for f, _ in secs)
        # images of the mixture per second: the share-weighted time per image, inverted
        out[p + "throughput_ips"] = total / sum(f / v for f, v in secs) if total > 0 else None
    cvs = [_value(m, "cv") for m in infer]
    out[p + "cv"] = max(cvs) if cvs and all(isinstance(v, (int, float)) for v in cvs) else None  # of: tag cv_of
    out[p + "energy_j_per_image_ci95"] = _weighted(infer, "ci95/energy_j_per_image_gross/half_width")
    out[p + "power_w_mean"] = _weighted(infer, "power_w_mean")
    out[p + "idle_power_w"] = _weighted(infer, "idle_power_w")
    out[p + "active_idle_power_w"] = _weighted(infer, "active_idle_power_w")
    return out


def group_quality(ms: list[Measurement]) -> tuple[str | None, list[str]]:
    """(worst quality over the measured buckets, its reasons as ``bucket: code: detail``), plus a flag for
    a net energy <= 0. None when nothing was measured or the agent said nothing (an older agent)."""
    worst: str | None = None
    reasons: list[str] = []
    for m in ms:
        q = m.quality
        if q is None:
            continue
        if worst is None or QUALITY_ORDER.index(q) > QUALITY_ORDER.index(worst):
            worst = q
        for r in (m.result or {}).get("reasons") or []:
            if r.get("level") in ("warn", "fail"):
                reasons.append(f"{m.purpose} {m.height}x{m.width}: {r.get('code')}: {r.get('detail')}")
    for where in _nonpositive_net(ms):
        reasons.append(f"{where}: net_energy_nonpositive: net J/image <= 0 (left out, not logged)")
        worst = "fail"
    return worst, reasons
