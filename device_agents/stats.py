"""Integration over a time window and small statistics, standard library only.

Two kinds of series come out of the sampler:

* power series (watts at sample times): the energy over ``[t0, t1]`` is the
  trapezoid integral of the piecewise-linear interpolation of the samples, cut at
  exactly ``t0`` and ``t1`` (the values there are interpolated between the
  neighbouring samples);
* cumulative energy series (joules at sample times, already unwrapped): the energy
  over ``[t0, t1]`` is ``E(t1) - E(t0)`` with ``E`` interpolated linearly between
  counter reads.  (This is the same thing: the derivative of a piecewise-linear
  ``E`` is the piecewise-constant power between reads.)

NaN values are "not read" and are skipped.  When the window reaches beyond the
first or last valid sample the edge value is held constant and the result says so.
"""

import bisect
import math


def _valid(times, values):
    """Pairs (t, v) of the samples whose value is a number."""
    ts = []
    vs = []
    for t, v in zip(times, values):
        if v is None or v != v:  # None or NaN
            continue
        ts.append(t)
        vs.append(v)
    return ts, vs


def interp(ts, vs, t):
    """Value at t of the piecewise-linear curve through (ts, vs) (sorted ts).

    Returns (value, held): held is True when t lies outside [ts[0], ts[-1]] and the
    nearest end value was used instead of an interpolation.
    """
    n = len(ts)
    if n == 0:
        raise ValueError("no samples")
    if t <= ts[0]:
        return vs[0], t < ts[0]
    if t >= ts[-1]:
        return vs[-1], t > ts[-1]
    i = bisect.bisect_right(ts, t)  # ts[i-1] <= t < ts[i]
    ta, tb = ts[i - 1], ts[i]
    va, vb = vs[i - 1], vs[i]
    if tb == ta:
        return vb, False
    return va + (vb - va) * (t - ta) / (tb - ta), False


def integrate_power(times, watts, t0, t1):
    """Energy (J) of a power series over exactly [t0, t1].

    Returns a dict: energy_j (None when there is no valid sample), samples (valid
    samples with t0 <= t <= t1), held (the window reached beyond the samples).
    """
    ts, vs = _valid(times, watts)
    if t1 < t0:
        raise ValueError("window ends before it starts")
    if not ts:
        return {"energy_j": None, "samples": 0, "held": False}
    p0, held0 = interp(ts, vs, t0)
    p1, held1 = interp(ts, vs, t1)
    lo = bisect.bisect_right(ts, t0)
    hi = bisect.bisect_left(ts, t1)
    inside_t = [t0] + ts[lo:hi] + [t1]
    inside_v = [p0] + vs[lo:hi] + [p1]
    energy = 0.0
    for i in range(1, len(inside_t)):
        energy += 0.5 * (inside_v[i] + inside_v[i - 1]) * (inside_t[i] - inside_t[i - 1])
    count = bisect.bisect_right(ts, t1) - bisect.bisect_left(ts, t0)
    return {"energy_j": energy, "samples": count, "held": held0 or held1}


def integrate_counter(times, joules, t0, t1):
    """Energy (J) of a cumulative (unwrapped) energy series over [t0, t1].

    Same return shape as integrate_power.  A window reaching beyond the reads is
    "held": the counter cannot tell what happened there, so the energy is None.
    """
    ts, vs = _valid(times, joules)
    if t1 < t0:
        raise ValueError("window ends before it starts")
    count = bisect.bisect_right(ts, t1) - bisect.bisect_left(ts, t0)
    if len(ts) < 2:
        return {"energy_j": None, "samples": count, "held": True}
    e0, held0 = interp(ts, vs, t0)
    e1, held1 = interp(ts, vs, t1)
    if held0 or held1:
        return {"energy_j": None, "samples": count, "held": True}
    return {"energy_j": e1 - e0, "samples": count, "held": False}


def mean(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return float(sum(xs)) / len(xs)


def stdev(xs):
    """Sample standard deviation (n - 1); None for fewer than two values."""
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return None
    m = float(sum(xs)) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def cv(xs):
    """Coefficient of variation stdev/|mean|; None when undefined."""
    xs = [x for x in xs if x is not None]
    s = stdev(xs)
    m = mean(xs)
    if s is None or m is None or m == 0:
        return None
    return s / abs(m)


def percentile(xs, q):
    """q-th percentile (0..100) with linear interpolation between order statistics
    (the "linear" method of numpy).  None for an empty list."""
    xs = sorted(xs)
    n = len(xs)
    if n == 0:
        return None
    if n == 1:
        return float(xs[0])
    pos = (n - 1) * (q / 100.0)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(xs[lo] + (xs[hi] - xs[lo]) * frac)


def weighted_percentile(groups, q):
    """q-th percentile of a mixture: groups is [(weight, values), ...]; each group's
    samples share its weight equally (weight / len(values)).  The percentile is the
    smallest value whose cumulative weight reaches q% (inverse of the mixture CDF).
    """
    pairs = []
    total = 0.0
    for w, values in groups:
        if not values or w is None or w <= 0:
            continue
        each = float(w) / len(values)
        for v in values:
            pairs.append((v, each))
        total += w
    if not pairs:
        return None
    pairs.sort()
    target = total * q / 100.0
    acc = 0.0
    for v, w in pairs:
        acc += w
        if acc >= target - 1e-12 * total:
            return float(v)
    return float(pairs[-1][0])


def latency_summary(latencies_ms):
    """p50/p90/p99/mean/min/max of a list of latencies in ms (None when empty)."""
    if not latencies_ms:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "min": None,
                "max": None, "count": 0}
    return {
        "p50": percentile(latencies_ms, 50),
        "p90": percentile(latencies_ms, 90),
        "p99": percentile(latencies_ms, 99),
        "mean": mean(latencies_ms),
        "min": float(min(latencies_ms)),
        "max": float(max(latencies_ms)),
        "count": len(latencies_ms),
    }


#: Student t quantiles t(0.975, df) for df = 1..30 (beyond: the normal 1.96).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201,
         2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074,
         2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df):
    """Two-sided 95 % Student t quantile for df degrees of freedom."""
    if df < 1:
        raise ValueError("df must be >= 1")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def ci95(xs):
    """95 % confidence interval of the mean of independent repeats (Student t):
    {"mean", "half_width", "low", "high", "n"}; half_width and the bounds are None
    for fewer than two values, and the whole is None when there is no value."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    m = mean(xs)
    s = stdev(xs)
    if s is None:
        return {"mean": m, "half_width": None, "low": None, "high": None, "n": len(xs)}
    h = t975(len(xs) - 1) * s / math.sqrt(len(xs))
    return {"mean": m, "half_width": h, "low": m - h, "high": m + h, "n": len(xs)}
