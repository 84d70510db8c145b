"""The measurement protocol.

1. idle baseline: the sampler runs with nothing else going on, for ``idle_s`` and at
   least ``min_samples`` samples;
2. the model is loaded and warmed up (``warmup_s`` and at least ``warmup_iters``
   steps), and that time is discarded;
3. ``repeats`` timed windows: steps run back to back from ``t0`` until at least
   ``duration_s`` have passed, ``min_samples`` power samples fall in the window and
   ``min_steps`` steps ran; the window ends at ``t1`` after the last step;
4. each window's energy is integrated over exactly ``[t0, t1]`` (trapezoid over
   power samples, or the counter difference), gross and net of the idle power;
5. figures are means over the repeats, with their coefficient of variation.
"""

import time

from . import stats, thermal
from .errors import AgentError


class Config(object):
    """Protocol settings (see the CLI for their meaning and defaults)."""

    def __init__(self, duration_s=5.0, repeats=3, warmup_s=1.0, warmup_iters=3,
                 idle_s=3.0, min_samples=50, interval_s=0.01, min_steps=1,
                 cv_warn=0.05, cooldown_s=0.0, fs_root="/", log=None):
        if duration_s <= 0:
            raise AgentError("usage", "--duration must be positive")
        if repeats < 1:
            raise AgentError("usage", "--repeats must be at least 1")
        if idle_s < 0 or warmup_s < 0 or cooldown_s < 0:
            raise AgentError("usage", "--idle, --warmup and --cooldown must be >= 0")
        if min_samples < 2:
            raise AgentError("usage", "--min-samples must be at least 2")
        self.duration_s = float(duration_s)
        self.repeats = int(repeats)
        self.warmup_s = float(warmup_s)
        self.warmup_iters = int(warmup_iters)
        self.idle_s = float(idle_s)
        self.min_samples = int(min_samples)
        self.interval_s = float(interval_s)
        self.min_steps = int(min_steps)
        self.cv_warn = float(cv_warn)
        self.cooldown_s = float(cooldown_s)
        self.fs_root = fs_root
        self.log = log or (lambda msg: None)

    def max_window_s(self):
        """Hard cap on one window (a dead or very slow source must not hang us)."""
        need = self.min_samples * self.interval_s * 4.0
        return max(self.duration_s * 4.0, self.duration_s + 30.0, need + 30.0)


# ------------------------------------------------------------------------------------
def window_energy(source, sampler, t0, t1):
    """Total and per-rail energy over exactly [t0, t1] from what the sampler holds.

    Returns {"energy_j", "samples", "held", "rails": {name: energy_j}}; energies are
    None when the source measures nothing or the samples do not cover the window.
    """
    if source.kind == "none":
        return {"energy_j": None, "samples": 0, "held": False,
                "rails": {}}
    times, values = sampler.window(t0, t1)
    totals = [source.total_of(list(vs)) for vs in zip(*values)] if values else []
    integ = stats.integrate_power if source.kind == "power" else stats.integrate_counter
    total = integ(times, totals, t0, t1)
    rails = {}
    for name, series in zip(source.rails, values):
        rails[name] = integ(times, series, t0, t1)["energy_j"]
    out = {"energy_j": total["energy_j"], "samples": total["samples"],
           "held": total["held"], "rails": rails}
    if source.kind == "energy":
        # how often the counter itself moved inside the window: its resolution
        inside = [e for t, e in zip(times, totals) if t0 <= t <= t1 and e == e]
        out["counter_updates"] = sum(1 for a, b in zip(inside, inside[1:]) if b != a)
    return out


def _wait_window_end(sampler, source, t1, cfg, warnings):
    """Make sure a sample after t1 exists so the window's end is interpolated."""
    if source.kind == "none":
        return
    timeout = max(2.0, cfg.interval_s * 20)
    if not sampler.wait_past(t1, timeout):
        warnings.append("no power sample after the window end within %.1f s: the last "
                        "value was held" % timeout)


def _quiet_window(sampler, t0, min_s, min_samples, cap, tick):
    """Wait with no workload until the window from t0 lasts min_s and holds min_samples (or cap passes)."""
    while True:
        time.sleep(tick)
        now = time.monotonic()
        _check_sampler(sampler)
        if now - t0 >= min_s and (min_samples <= 0 or sampler.count_between(t0, now) >= min_samples):
            return
        if now > cap:
            return


def _spread_warning(n_repeats, spread, what, cfg, warnings):
    """Warn when the spread across repeats is unknown (one repeat) or above cfg.cv_warn."""
    if n_repeats == 1:
        warnings.append("one repeat only: the spread (cv) is unknown")
    elif spread is not None and spread > cfg.cv_warn:
        warnings.append("high spread across %s = %.3f > %.3f" % (what, spread, cfg.cv_warn))


def _check_sampler(sampler):
    if sampler is None:
        return
    if sampler.error:
        raise AgentError("no_power_source", "power sampler failed: %s" % sampler.error)
    if sampler.ended_early():
        raise AgentError("no_power_source", "power source %r stopped delivering samples"
                         % sampler.source.name)


def _ratio(num, den):
    if num is None or den is None or den == 0:
        return None
    return num / den


# ------------------------------------------------------------------------------------
def measure_idle(source, sampler, cfg):
    """Idle baseline: mean power per rail and total over a quiet window."""
    if source.kind == "none" or cfg.idle_s <= 0:
        return None
    cfg.log("idle baseline: %.1f s" % cfg.idle_s)
    t0 = time.monotonic()
    _quiet_window(sampler, t0, cfg.idle_s, cfg.min_samples, t0 + cfg.max_window_s(),
                  min(0.05, max(cfg.idle_s / 20.0, 0.005)))
    t1 = time.monotonic()
    warnings = []
    _wait_window_end(sampler, source, t1, cfg, warnings)
    w = window_energy(source, sampler, t0, t1)
    dur = t1 - t0
    out = {
        "duration_s": dur,
        "samples": w["samples"],
        "power_w": _ratio(w["energy_j"], dur),
        "rails_w": dict((k, _ratio(v, dur)) for k, v in w["rails"].items()),
        "t_start_monotonic": t0,
        "t_end_monotonic": t1,
        "warnings": warnings,
    }
    if w["samples"] < cfg.min_samples:
        warnings.append("idle baseline has %d power samples (< %d)"
                        % (w["samples"], cfg.min_samples))
    return out


def warm_up(workload, cfg):
    """Run and discard steps for warmup_s and at least warmup_iters steps."""
    t0 = time.monotonic()
    n = 0
    while n < cfg.warmup_iters or time.monotonic() - t0 < cfg.warmup_s:
        workload.step()
        n += 1
    return {"steps": n, "duration_s": time.monotonic() - t0}


def _timed_window(workload, source, sampler, cfg, min_steps):
    lat = []
    steps = 0
    perf = time.perf_counter
    mono = time.monotonic
    t0 = mono()
    cap = t0 + cfg.max_window_s()
    check_samples = source.kind != "none"
    while True:
        a = perf()
        workload.step()
        lat.append((perf() - a) * 1000.0)
        steps += 1
        now = mono()
        if now - t0 >= cfg.duration_s and steps >= min_steps:
            if not check_samples or sampler.count_between(t0, now) >= cfg.min_samples:
                break
            _check_sampler(sampler)
        if now > cap:
            _check_sampler(sampler)
            break
    t1 = mono()
    return {"t0": t0, "t1": t1, "latencies_ms": lat, "steps": steps,
            "images": steps * workload.images_per_step}


def _repeat_figures(source, sampler, win, idle, cfg, warnings, index):
    t0, t1 = win["t0"], win["t1"]
    _wait_window_end(sampler, source, t1, cfg, warnings)
    w = window_energy(source, sampler, t0, t1)
    dur = t1 - t0
    images = win["images"]
    steps = win["steps"]
    gross = w["energy_j"]
    idle_w = idle["power_w"] if idle else None
    net = gross - idle_w * dur if (gross is not None and idle_w is not None) else None
    rails = {}
    for name, e in w["rails"].items():
        rid = idle["rails_w"].get(name) if idle else None
        rnet = e - rid * dur if (e is not None and rid is not None) else None
        rails[name] = {"energy_j": e, "energy_j_net": rnet}
    if source.kind != "none" and w["samples"] < cfg.min_samples:
        warnings.append("too few power samples in repeat %d: %d < %d"
                        % (index + 1, w["samples"], cfg.min_samples))
    if w["held"]:
        warnings.append("repeat %d: the window reaches beyond the power samples; the "
                        "edge value was held" % (index + 1))
    if w.get("counter_updates") is not None and w["counter_updates"] < 10:
        warnings.append("repeat %d: the energy counter moved only %d times in the window: "
                        "its own update rate limits the resolution (use a longer "
                        "--duration)" % (index + 1, w["counter_updates"]))
    rep = {
        "index": index,
        "t_start_monotonic": t0,
        "t_end_monotonic": t1,
        "duration_s": dur,
        "steps": steps,
        "images": images,
        "samples": w["samples"],
        "energy_j_gross": gross,
        "energy_j_net": net,
        "energy_j_per_image_gross": _ratio(gross, images),
        "energy_j_per_image_net": _ratio(net, images),
        "energy_j_per_step_gross": _ratio(gross, steps),
        "energy_j_per_step_net": _ratio(net, steps),
        "power_w_mean": _ratio(gross, dur),
        "throughput_ips": _ratio(images, dur),
        "latency_ms": stats.latency_summary(win["latencies_ms"]),
        "rails": rails,
    }
    for k in ("queries", "walltime_s", "trtexec"):
        if k in win:
            rep[k] = win[k]
    if w.get("counter_updates") is not None:
        rep["counter_updates"] = w["counter_updates"]
    return rep


def measure_workload(workload, source, sampler, cfg, idle):
    """Warm up, then run ``cfg.repeats`` timed windows; return the result dict
    (figures, per-repeat details, warnings)."""
    warnings = []
    min_steps = max(1, cfg.min_steps)
    if not workload.external:
        cfg.log("warm-up: %.1f s / %d steps" % (cfg.warmup_s, cfg.warmup_iters))
        try:
            wu = warm_up(workload, cfg)
        except AgentError:
            raise
        except Exception as e:  # noqa: BLE001
            raise AgentError("workload_failed", "warm-up step failed: %s: %s"
                             % (e.__class__.__name__, e))
    else:
        wu = {"steps": None, "duration_s": cfg.warmup_s}
    repeats = []
    all_lat = []
    th_before = thermal.snapshot(cfg.fs_root)
    th_max = thermal.max_temperature(th_before)
    for r in range(cfg.repeats):
        if r and cfg.cooldown_s:
            time.sleep(cfg.cooldown_s)
        cfg.log("repeat %d/%d: %.1f s window" % (r + 1, cfg.repeats, cfg.duration_s))
        try:
            if workload.external:
                win = workload.run_window(cfg, sampler, source)
            else:
                win = _timed_window(workload, source, sampler, cfg, min_steps)
        except AgentError:
            raise
        except Exception as e:  # noqa: BLE001
            raise AgentError("workload_failed", "step failed in repeat %d: %s: %s"
                             % (r + 1, e.__class__.__name__, e))
        _check_sampler(sampler)
        rep = _repeat_figures(source, sampler, win, idle, cfg, warnings, r)
        if sampler is not None:
            sampler.trim(win["t1"] - 1.0)
        th = thermal.snapshot(cfg.fs_root)
        rep["max_temp_c"] = thermal.max_temperature(th)
        if rep["max_temp_c"] is not None:
            th_max = rep["max_temp_c"] if th_max is None else max(th_max, rep["max_temp_c"])
        for wtxt in thermal.throttle_warnings(th_before, th):
            if wtxt not in warnings:
                warnings.append(wtxt)
        repeats.append(rep)
        all_lat.extend(win["latencies_ms"])
    result = summarise(repeats, source, idle, cfg, warnings, workload.mode)
    result["latency_ms"] = stats.latency_summary(all_lat)
    result["latencies_ms_all"] = all_lat
    result["warmup"] = wu
    result["max_temp_c"] = th_max
    return result


def summarise(repeats, source, idle, cfg, warnings, mode):
    """Mean figures over repeats, spread, per-rail breakdown and warnings."""
    def m(key):
        return stats.mean([r.get(key) for r in repeats])

    total_images = sum(r["images"] or 0 for r in repeats)
    total_time = sum(r["duration_s"] for r in repeats)
    per_image = [r["energy_j_per_image_gross"] for r in repeats]
    energy_measured = source.kind != "none" and all(x is not None for x in per_image)
    if energy_measured:
        cv_of = "energy_j_per_image_gross" if total_images else "power_w_mean"
        cv_vals = [r[cv_of] for r in repeats]
    else:
        cv_of = "latency_ms_mean"
        cv_vals = [r["latency_ms"]["mean"] for r in repeats]
    spread = stats.cv(cv_vals)
    rails = {}
    for name in source.rails:
        e = [r["rails"][name]["energy_j"] for r in repeats]
        en = [r["rails"][name]["energy_j_net"] for r in repeats]
        pw = [_ratio(x, r["duration_s"]) for x, r in zip(e, repeats)]
        pi = [_ratio(x, r["images"]) for x, r in zip(e, repeats)]
        pin = [_ratio(x, r["images"]) for x, r in zip(en, repeats)]
        ok = all(x is not None for x in e)
        okn = all(x is not None for x in en)
        rails[name] = {
            "power_w_mean": stats.mean(pw) if ok else None,
            "idle_power_w": idle["rails_w"].get(name) if idle else None,
            "energy_j": stats.mean(e) if ok else None,
            "energy_j_net": stats.mean(en) if okn else None,
            "energy_j_per_image": stats.mean(pi) if (ok and total_images) else None,
            "energy_j_per_image_net": stats.mean(pin) if (okn and total_images) else None,
        }
    gross_ok = all(r["energy_j_gross"] is not None for r in repeats)
    net_ok = all(r["energy_j_net"] is not None for r in repeats)
    out = {
        "duration_s": m("duration_s"),
        "power_w_mean": m("power_w_mean") if gross_ok else None,
        "idle_power_w": idle["power_w"] if idle else None,
        "energy_j_gross": m("energy_j_gross") if gross_ok else None,
        "energy_j_net": m("energy_j_net") if net_ok else None,
        "energy_j_per_image_gross": m("energy_j_per_image_gross")
        if (gross_ok and total_images) else None,
        "energy_j_per_image_net": m("energy_j_per_image_net")
        if (net_ok and total_images) else None,
        "images": total_images,
        "steps": sum(r["steps"] or 0 for r in repeats),
        "throughput_ips": _ratio(total_images, total_time) if total_images else None,
        "samples": sum(r["samples"] for r in repeats),
        "samples_min_per_repeat": min(r["samples"] for r in repeats),
        "cv": spread,
        "cv_of": cv_of,
        "cv_detail": {
            "energy_j_per_image_gross": stats.cv(per_image) if energy_measured else None,
            "power_w_mean": stats.cv([r["power_w_mean"] for r in repeats])
            if gross_ok else None,
            "latency_ms_mean": stats.cv([r["latency_ms"]["mean"] for r in repeats]
                                        if repeats[0].get("latency_ms") else []),
        },
        "rails": rails,
        "repeats": repeats,
    }
    if mode == "train":
        out["energy_j_per_step_gross"] = m("energy_j_per_step_gross") if gross_ok else None
        out["energy_j_per_step_net"] = m("energy_j_per_step_net") if net_ok else None
    if source.kind == "none":
        warnings.append("no power source: energy not measured (null), latency only")
    _spread_warning(len(repeats), spread, "repeats: cv of %s" % cv_of, cfg, warnings)
    if idle is None and source.kind != "none":
        warnings.append("no idle baseline (--idle 0): net energy not measured (null)")
    if idle:
        for w in idle.get("warnings", []):
            if w not in warnings:
                warnings.append(w)
    if net_ok and total_images and any(r["energy_j_net"] <= 0 for r in repeats):
        warnings.append("net energy <= 0 in some repeat: the workload did not draw "
                        "measurably more than the idle baseline")
    out["warnings"] = warnings
    return out


# ------------------------------------------------------------------------------------
def measure_power(source, sampler, cfg):
    """``power`` command: back-to-back windows of duration_s with no workload."""
    warnings = []
    repeats = []
    th_before = thermal.snapshot(cfg.fs_root)
    for r in range(cfg.repeats):
        cfg.log("power window %d/%d: %.1f s" % (r + 1, cfg.repeats, cfg.duration_s))
        t0 = time.monotonic()
        _quiet_window(sampler, t0, cfg.duration_s, 0 if source.kind == "none" else cfg.min_samples,
                      t0 + cfg.max_window_s(), min(0.05, max(cfg.duration_s / 50.0, 0.002)))
        win = {"t0": t0, "t1": time.monotonic(), "latencies_ms": [], "steps": 0,
               "images": 0}
        rep = _repeat_figures(source, sampler, win, None, cfg, warnings, r)
        if sampler is not None:
            sampler.trim(win["t1"] - 1.0)
        for k in ("steps", "images", "energy_j_net", "energy_j_per_image_gross",
                  "energy_j_per_image_net", "energy_j_per_step_gross",
                  "energy_j_per_step_net", "throughput_ips", "latency_ms"):
            rep.pop(k, None)
        for v in rep["rails"].values():
            v.pop("energy_j_net", None)
        repeats.append(rep)
    th = thermal.snapshot(cfg.fs_root)
    for wtxt in thermal.throttle_warnings(th_before, th):
        warnings.append(wtxt)
    gross_ok = all(r["energy_j_gross"] is not None for r in repeats)
    rails = {}
    for name in source.rails:
        e = [r["rails"][name]["energy_j"] for r in repeats]
        ok = all(x is not None for x in e)
        rails[name] = {
            "power_w_mean": stats.mean([_ratio(x, r["duration_s"])
                                        for x, r in zip(e, repeats)]) if ok else None,
            "energy_j": stats.mean(e) if ok else None,
        }
    spread = stats.cv([r["power_w_mean"] for r in repeats]) if gross_ok else None
    if source.kind == "none":
        warnings.append("no power source: nothing measured (null)")
    _spread_warning(len(repeats), spread, "windows: cv of power_w_mean", cfg, warnings)
    return {
        "duration_s": stats.mean([r["duration_s"] for r in repeats]),
        "power_w_mean": stats.mean([r["power_w_mean"] for r in repeats]) if gross_ok
        else None,
        "energy_j_gross": stats.mean([r["energy_j_gross"] for r in repeats]) if gross_ok
        else None,
        "energy_j_net": None,
        "energy_j_per_image_gross": None,
        "energy_j_per_image_net": None,
        "latency_ms": None,
        "samples": sum(r["samples"] for r in repeats),
        "samples_min_per_repeat": min(r["samples"] for r in repeats),
        "cv": spread,
        "cv_of": "power_w_mean",
        "rails": rails,
        "repeats": repeats,
        "max_temp_c": thermal.max_temperature(th),
        "warnings": warnings,
    }


# ------------------------------------------------------------------------------------
def aggregate_buckets(buckets):
    """Fraction-weighted summary over manifest buckets.

    Energy and power figures are fraction-weighted means over buckets (the expected
    value for an input drawn with those fractions); latency percentiles are those of
    the fraction-weighted mixture of the buckets' latency samples; samples are summed
    and cv is the largest bucket's.  A figure missing in any bucket is null.
    """
    weights = [b.get("fraction") for b in buckets]
    if any(w is None for w in weights):
        weights = [1.0] * len(buckets)
    total_w = float(sum(weights))
    if total_w <= 0:
        raise AgentError("bad_model", "manifest bucket fractions sum to 0")

    def wmean(key, src=None):
        vals = []
        for b, w in zip(buckets, weights):
            v = (src(b) if src else b.get(key))
            if v is None:
                return None
            vals.append(v * w)
        return sum(vals) / total_w

    out = {}
    for key in ("duration_s", "power_w_mean", "idle_power_w", "energy_j_gross",
                "energy_j_net", "energy_j_per_image_gross", "energy_j_per_image_net",
                "throughput_ips", "energy_j_per_step_gross", "energy_j_per_step_net"):
        if any(key in b for b in buckets):
            out[key] = wmean(key)
    groups = [(w, b.get("latencies_ms_all") or []) for b, w in zip(buckets, weights)]
    lat = {}
    for q, name in ((50, "p50"), (90, "p90"), (99, "p99")):
        lat[name] = stats.weighted_percentile(groups, q)
    lat["mean"] = wmean(None, lambda b: (b.get("latency_ms") or {}).get("mean"))
    out["latency_ms"] = lat
    out["samples"] = sum(b.get("samples") or 0 for b in buckets)
    cvs = [b.get("cv") for b in buckets if b.get("cv") is not None]
    out["cv"] = max(cvs) if cvs else None
    out["cv_of"] = "max over buckets of " + (buckets[0].get("cv_of") or "")
    rail_names = []
    for b in buckets:
        for n in b.get("rails", {}):
            if n not in rail_names:
                rail_names.append(n)
    rails = {}
    for n in rail_names:
        rails[n] = {}
        for key in ("power_w_mean", "idle_power_w", "energy_j", "energy_j_net",
                    "energy_j_per_image", "energy_j_per_image_net"):
            rails[n][key] = wmean(None, lambda b, n=n, key=key:
                                  (b.get("rails", {}).get(n) or {}).get(key))
    out["rails"] = rails
    out["fraction_sum"] = total_w
    return out
