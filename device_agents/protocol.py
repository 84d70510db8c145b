"""The measurement protocol (after MLPerf Power and Zeus).

1. cold idle baseline: the sampler runs with nothing else going on, before the model
   is loaded, for ``idle_s`` and enough sensor updates (or samples);
2. the model is loaded and warmed up (``warmup_s`` and at least ``warmup_iters``
   steps), and that time is discarded;
3. active idle baseline: model loaded and runtime initialised, nothing running;
4. ``repeats`` timed windows, each behind a thermal gate (zones stable and under a
   threshold, with a timeout): steps run back to back from ``t0`` until at least
   ``duration_s`` have passed, the window holds ``min_updates`` sensor updates (or
   ``min_samples`` samples when the sensor's refresh is unknown) and ``min_steps``
   steps ran; the window ends at ``t1`` after the last step;
5. each window's energy is integrated over exactly ``[t0, t1]`` (trapezoid over
   power samples, or the counter difference), gross, net of the cold idle and net
   of the active idle;
6. figures are means over the repeats, with their coefficient of variation and a
   95 % confidence interval.

A sensor that refreshes every R seconds (an INA3221: ~0.42 s) publishes at each
refresh the mean power of the period that just ended: a sample taken at time s
stands for [s - R, s].  Samples are integrated at s - R, so each value covers the
period it was averaged over, and a window needs samples up to t1 + R.
"""

import time

from . import stats, thermal
from .errors import AgentError


class Config(object):
    """Protocol settings (see the CLI for their meaning and defaults).

    refresh_s: the sensor's refresh period (None: unknown, samples are taken as
    instantaneous values); min_updates: sensor updates a window must span when the
    refresh is known (the sample rule then is min_samples, default 2)."""

    def __init__(self, duration_s=5.0, repeats=3, warmup_s=1.0, warmup_iters=3,
                 idle_s=3.0, min_samples=50, interval_s=0.01, min_steps=1,
                 cv_warn=0.05, cooldown_s=0.0, fs_root="/", log=None, refresh_s=None,
                 min_updates=10, active_idle_s=None, thermal_max_c=70.0,
                 thermal_timeout_s=30.0, thermal_stable_c=0.5, progress=None,
                 size_by_updates=True):
        if duration_s <= 0:
            raise AgentError("usage", "--duration must be positive")
        if repeats < 1:
            raise AgentError("usage", "--repeats must be at least 1")
        if idle_s < 0 or warmup_s < 0 or cooldown_s < 0:
            raise AgentError("usage", "--idle, --warmup and --cooldown must be >= 0")
        if min_samples < 2:
            raise AgentError("usage", "--min-samples must be at least 2")
        if min_updates < 1:
            raise AgentError("usage", "--min-updates must be at least 1")
        if active_idle_s is not None and active_idle_s < 0:
            raise AgentError("usage", "--active-idle must be >= 0")
        if thermal_timeout_s < 0:
            raise AgentError("usage", "--thermal-timeout must be >= 0")
        self.duration_s = float(duration_s)
        self.repeats = int(repeats)
        self.warmup_s = float(warmup_s)
        self.warmup_iters = int(warmup_iters)
        self.idle_s = float(idle_s)
        self.active_idle_s = self.idle_s if active_idle_s is None else float(active_idle_s)
        self.min_samples = int(min_samples)
        self.interval_s = float(interval_s)
        self.min_steps = int(min_steps)
        self.cv_warn = float(cv_warn)
        self.cooldown_s = float(cooldown_s)
        self.fs_root = fs_root
        self.log = log or (lambda msg: None)
        self.refresh_s = refresh_s or None
        self.min_updates = int(min_updates)
        #: False: windows follow min_samples only (an explicit --min-samples of earlier
        #: callers); too few sensor updates are still warned about
        self.size_by_updates = bool(size_by_updates)
        self.thermal_max_c = thermal_max_c
        self.thermal_timeout_s = float(thermal_timeout_s)
        self.thermal_stable_c = float(thermal_stable_c)
        #: what is finished so far (idle, repeats, buckets): written on SIGTERM
        self.progress = progress if progress is not None else {}

    def min_window_s(self, base=None):
        """Shortest window the sample rules allow: ``base`` (default duration_s) and,
        with a known sensor refresh, min_updates refresh periods."""
        need = self.duration_s if base is None else base
        if self.refresh_s and self.size_by_updates:
            need = max(need, self.min_updates * self.refresh_s)
        return need

    def max_window_s(self):
        """Hard cap on one window (a dead or very slow source must not hang us)."""
        need = max(self.min_samples * self.interval_s * 4.0, self.min_window_s() * 2.0)
        return max(self.duration_s * 4.0, self.duration_s + 30.0, need + 30.0)

    def enough(self, sampler, t0, now):
        """True when the window [t0, now] satisfies the sample rules."""
        if sampler is None:
            return True
        if self.refresh_s and self.size_by_updates and now - t0 < self.min_window_s(0.0):
            return False
        return sampler.count_between(t0, now) >= self.min_samples


def _lag(source):
    """How far a sample's value lies in the past: the sensor's refresh period for a
    power sensor that averages (see the module docstring), else 0."""
    if source.kind != "power":
        return 0.0
    r = source.refresh_s() if hasattr(source, "refresh_s") else None
    return r or 0.0


def wall_clock(t_mono):
    """(unix seconds, ISO 8601 UTC with microseconds) of a monotonic time."""
    import datetime
    unix = t_mono + (time.time() - time.monotonic())
    iso = datetime.datetime.fromtimestamp(unix, datetime.timezone.utc).isoformat()
    return unix, iso


def _stamp(d, t0, t1):
    """Wall-clock timestamps of a window (to line up with an external meter)."""
    d["t_start_unix"], d["t_start_utc"] = wall_clock(t0)
    d["t_end_unix"], d["t_end_utc"] = wall_clock(t1)


# ------------------------------------------------------------------------------------
def window_energy(source, sampler, t0, t1):
    """Total and per-rail energy over exactly [t0, t1] from what the sampler holds.

    Returns {"energy_j", "samples", "held", "rails": {name: energy_j},
    "sensor_updates", "carrier_energy_j"}; energies are None when the source
    measures nothing or the samples do not cover the window.  sensor_updates counts
    the samples whose values differ from the previous one (distinct sensor
    refreshes seen), carrier_energy_j is the carrier board's (own boundary), or None.
    """
    if source.kind == "none":
        return {"energy_j": None, "samples": 0, "held": False,
                "rails": {}, "sensor_updates": None, "carrier_energy_j": None}
    lag = _lag(source)
    times, values = sampler.window(t0 + lag, t1 + lag)
    if lag:
        times = [t - lag for t in times]
    cols = list(zip(*values)) if values else []
    totals = [source.total_of(list(vs)) for vs in cols]
    integ = stats.integrate_power if source.kind == "power" else stats.integrate_counter
    total = integ(times, totals, t0, t1)
    rails = {}
    for name, series in zip(source.rails, values):
        rails[name] = integ(times, series, t0, t1)["energy_j"]
    out = {"energy_j": total["energy_j"], "samples": total["samples"],
           "held": total["held"], "rails": rails}
    carrier = None
    if getattr(source, "carrier_rail", None):
        carrier = rails.get(source.carrier_rail)
    out["carrier_energy_j"] = carrier
    inside = [c for t, c in zip(times, cols) if t0 <= t <= t1]
    out["sensor_updates"] = sum(1 for a, b in zip(inside, inside[1:]) if a != b)
    if source.kind == "energy":
        # how often the counter itself moved inside the window: its resolution
        ins = [e for t, e in zip(times, totals) if t0 <= t <= t1 and e == e]
        out["counter_updates"] = sum(1 for a, b in zip(ins, ins[1:]) if b != a)
    return out


def _wait_window_end(sampler, source, t1, cfg, warnings):
    """Make sure a sample after t1 (plus the sensor's lag) exists so the window's
    end is interpolated."""
    if source.kind == "none":
        return
    lag = _lag(source)
    timeout = max(2.0, cfg.interval_s * 20) + lag
    if not sampler.wait_past(t1 + lag, timeout):
        warnings.append("no power sample after the window end within %.1f s: the last "
                        "value was held" % timeout)


def _quiet_window(sampler, t0, min_s, cfg, cap, tick, source_kind="power"):
    """Wait with no workload until the window from t0 lasts min_s and satisfies the
    sample rules (or cap passes)."""
    while True:
        time.sleep(tick)
        now = time.monotonic()
        _check_sampler(sampler)
        if now - t0 >= min_s and (source_kind == "none" or cfg.enough(sampler, t0, now)):
            return
        if now > cap:
            return


def _update_warning(what, w, cfg, warnings):
    """Too few distinct sensor updates in a window (a known refresh only)."""
    n = w.get("sensor_updates")
    if not cfg.refresh_s or n is None:
        return
    if n == 0:
        warnings.append("%s: the sensor reported the same value throughout (%.0f updates "
                        "expected at %.2f s): a static or stuck sensor"
                        % (what, w.get("_dur", 0.0) / cfg.refresh_s, cfg.refresh_s))
    elif n < cfg.min_updates:
        warnings.append("%s: only %d distinct sensor updates (< %d; the sensor refreshes "
                        "every %.2f s): use a longer --duration"
                        % (what, n, cfg.min_updates, cfg.refresh_s))


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
def measure_idle(source, sampler, cfg, seconds=None, what="idle baseline"):
    """Idle baseline: mean power per rail and total over a quiet window (cold: before
    the model is loaded; active: model loaded, runtime initialised, nothing running)."""
    seconds = cfg.idle_s if seconds is None else seconds
    if source.kind == "none" or seconds <= 0:
        return None
    cfg.log("%s: %.1f s" % (what, seconds))
    t0 = time.monotonic()
    _quiet_window(sampler, t0, seconds, cfg, t0 + cfg.max_window_s(),
                  min(0.05, max(seconds / 20.0, 0.005)))
    t1 = time.monotonic()
    warnings = []
    _wait_window_end(sampler, source, t1, cfg, warnings)
    w = window_energy(source, sampler, t0, t1)
    dur = t1 - t0
    out = {
        "duration_s": dur,
        "samples": w["samples"],
        "sensor_updates": w["sensor_updates"],
        "power_w": _ratio(w["energy_j"], dur),
        "rails_w": dict((k, _ratio(v, dur)) for k, v in w["rails"].items()),
        "carrier_power_w": _ratio(w["carrier_energy_j"], dur),
        "t_start_monotonic": t0,
        "t_end_monotonic": t1,
        "warnings": warnings,
    }
    _stamp(out, t0, t1)
    if (not cfg.refresh_s or not cfg.size_by_updates) and w["samples"] < cfg.min_samples:
        warnings.append("%s has %d power samples (< %d)" % (what, w["samples"],
                                                              cfg.min_samples))
    w["_dur"] = dur
    _update_warning(what, w, cfg, warnings)
    return out


def thermal_gate(cfg, warnings, what):
    """Before a window: wait until the zones (those that mean something) are below
    cfg.thermal_max_c and stable (two readings 0.2 s apart within
    cfg.thermal_stable_c), at most cfg.thermal_timeout_s; then start anyway with a
    warning.  Returns what was seen."""
    if cfg.thermal_timeout_s <= 0:
        return {"enabled": False}
    t0 = time.monotonic()
    prev = thermal.max_temperature(thermal.snapshot(cfg.fs_root))
    out = {"enabled": True, "threshold_c": cfg.thermal_max_c, "passed": True,
           "waited_s": 0.0, "max_temp_c": prev}
    if prev is None:
        out["note"] = "no readable thermal zone"
        return out
    tick = min(0.2, cfg.thermal_timeout_s)
    while True:
        time.sleep(tick)
        cur = thermal.max_temperature(thermal.snapshot(cfg.fs_root))
        waited = time.monotonic() - t0
        out["max_temp_c"] = cur
        out["waited_s"] = waited
        cool = cfg.thermal_max_c is None or cur is None or cur < cfg.thermal_max_c
        stable = cur is None or abs(cur - prev) <= cfg.thermal_stable_c
        if cool and stable:
            return out
        if waited >= cfg.thermal_timeout_s:
            out["passed"] = False
            warnings.append("thermal gate before %s: %s after %.0f s (max %.1f C, threshold "
                            "%.1f C, stable within %.1f C); the window started anyway"
                            % (what, "still too hot" if not cool else "not stable", waited,
                               cur, cfg.thermal_max_c if cfg.thermal_max_c is not None
                               else float("nan"), cfg.thermal_stable_c))
            return out
        prev = cur


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
            if not check_samples or cfg.enough(sampler, t0, now):
                break
            _check_sampler(sampler)
        if now > cap:
            _check_sampler(sampler)
            break
    t1 = mono()
    return {"t0": t0, "t1": t1, "latencies_ms": lat, "steps": steps,
            "images": steps * workload.images_per_step}


def _net(e, p, dur):
    return e - p * dur if (e is not None and p is not None) else None


def _repeat_figures(source, sampler, win, idle, cfg, warnings, index, active=None):
    t0, t1 = win["t0"], win["t1"]
    _wait_window_end(sampler, source, t1, cfg, warnings)
    w = window_energy(source, sampler, t0, t1)
    dur = t1 - t0
    images = win["images"]
    steps = win["steps"]
    gross = w["energy_j"]
    idle_w = idle["power_w"] if idle else None
    act_w = active["power_w"] if active else None
    net = _net(gross, idle_w, dur)
    net_a = _net(gross, act_w, dur)
    rails = {}
    for name, e in w["rails"].items():
        rid = idle["rails_w"].get(name) if idle else None
        rac = active["rails_w"].get(name) if active else None
        rails[name] = {"energy_j": e, "energy_j_net": _net(e, rid, dur),
                       "energy_j_net_active": _net(e, rac, dur)}
    if (source.kind != "none" and (not cfg.refresh_s or not cfg.size_by_updates)
            and w["samples"] < cfg.min_samples):
        warnings.append("too few power samples in repeat %d: %d < %d"
                        % (index + 1, w["samples"], cfg.min_samples))
    w["_dur"] = dur
    _update_warning("repeat %d" % (index + 1), w, cfg, warnings)
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
        "sensor_updates": w["sensor_updates"],
        "energy_j_gross": gross,
        "energy_j_net": net,
        "energy_j_net_active": net_a,
        "energy_j_per_image_gross": _ratio(gross, images),
        "energy_j_per_image_net": _ratio(net, images),
        "energy_j_per_image_net_active": _ratio(net_a, images),
        "energy_j_per_step_gross": _ratio(gross, steps),
        "energy_j_per_step_net": _ratio(net, steps),
        "energy_j_per_step_net_active": _ratio(net_a, steps),
        "power_w_mean": _ratio(gross, dur),
        "throughput_ips": _ratio(images, dur),
        "latency_ms": stats.latency_summary(win["latencies_ms"]),
        "rails": rails,
    }
    _stamp(rep, t0, t1)
    if w.get("carrier_energy_j") is not None or getattr(source, "carrier_rail", None):
        rep["carrier_energy_j"] = w.get("carrier_energy_j")
    for k in ("queries", "walltime_s", "trtexec"):
        if k in win:
            rep[k] = win[k]
    if w.get("counter_updates") is not None:
        rep["counter_updates"] = w["counter_updates"]
    return rep


def measure_workload(workload, source, sampler, cfg, idle):
    """Warm up, take the active idle baseline, then run ``cfg.repeats`` timed windows
    (each behind the thermal gate); return the result dict (figures, per-repeat
    details, warnings).  Finished repeats are kept in cfg.progress as they come."""
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
    active = measure_idle(source, sampler, cfg, cfg.active_idle_s, "active idle")
    repeats = []
    cfg.progress["active_idle"] = active
    cfg.progress["repeats"] = repeats
    all_lat = []
    th_before = thermal.snapshot(cfg.fs_root)
    th_max = thermal.max_temperature(th_before)
    for r in range(cfg.repeats):
        if r and cfg.cooldown_s:
            time.sleep(cfg.cooldown_s)
        gate = thermal_gate(cfg, warnings, "repeat %d" % (r + 1))
        cfg.log("repeat %d/%d: %.1f s window" % (r + 1, cfg.repeats, cfg.min_window_s()))
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
        rep = _repeat_figures(source, sampler, win, idle, cfg, warnings, r, active)
        rep["thermal_gate"] = gate
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
    result = summarise(repeats, source, idle, cfg, warnings, workload.mode, active)
    result["latency_ms"] = stats.latency_summary(all_lat)
    result["latencies_ms_all"] = all_lat
    result["warmup"] = wu
    result["max_temp_c"] = th_max
    return result


def _ci(repeats, keys):
    """95 % confidence intervals over the repeats of the figures in keys."""
    out = {}
    for k in keys:
        vals = [r.get(k) for r in repeats]
        if any(v is None for v in vals):
            out[k] = None
        else:
            out[k] = stats.ci95(vals)
    return out


def _carrier_summary(source, repeats, idle):
    if not getattr(source, "carrier_rail", None):
        return None
    e = [r.get("carrier_energy_j") for r in repeats]
    ok = all(x is not None for x in e)
    pw = [_ratio(x, r["duration_s"]) for x, r in zip(e, repeats)]
    return {"total": source.carrier_rail,
            "rails": [source.rails[i] for i in source.carrier_members or []],
            "energy_j_gross": stats.mean(e) if ok else None,
            "power_w_mean": stats.mean(pw) if ok else None,
            "idle_power_w": idle.get("carrier_power_w") if idle else None,
            "note": "the developer kit's carrier board: its own boundary, never part of "
                    "the module figures"}


def _figures_known(repeats):
    """Whether every repeat measured its gross, net and net-of-active-idle energy: a
    mean over repeats with one figure missing would not be the run's figure."""
    return (all(r["energy_j_gross"] is not None for r in repeats),
            all(r["energy_j_net"] is not None for r in repeats),
            all(r.get("energy_j_net_active") is not None for r in repeats))


def _spread_of(repeats, source, total_images):
    """(cv_of, cv, energy_measured): the spread is that of energy per image where
    energy and images were measured, of mean power without images, else of latency."""
    per_image = [r["energy_j_per_image_gross"] for r in repeats]
    energy_measured = source.kind != "none" and all(x is not None for x in per_image)
    if energy_measured:
        cv_of = "energy_j_per_image_gross" if total_images else "power_w_mean"
        cv_vals = [r[cv_of] for r in repeats]
    else:
        cv_of = "latency_ms_mean"
        cv_vals = [r["latency_ms"]["mean"] for r in repeats]
    return cv_of, stats.cv(cv_vals), energy_measured


def _cv_detail(repeats, energy_measured, gross_ok):
    """Every candidate spread, so a reader can judge the one chosen as cv."""
    return {
        "energy_j_per_image_gross": stats.cv([r["energy_j_per_image_gross"]
                                              for r in repeats]) if energy_measured else None,
        "power_w_mean": stats.cv([r["power_w_mean"] for r in repeats]) if gross_ok else None,
        "latency_ms_mean": stats.cv([r["latency_ms"]["mean"] for r in repeats]
                                    if repeats[0].get("latency_ms") else []),
    }


def _rail_summary(name, repeats, idle, active, total_images):
    """One rail's figures over the repeats (null where a repeat lacks them)."""
    e = [r["rails"][name]["energy_j"] for r in repeats]
    en = [r["rails"][name]["energy_j_net"] for r in repeats]
    ea = [r["rails"][name].get("energy_j_net_active") for r in repeats]
    ok, okn, oka = [all(x is not None for x in xs) for xs in (e, en, ea)]

    def per_image(xs, known):
        if not (known and total_images):
            return None
        return stats.mean([_ratio(x, r["images"]) for x, r in zip(xs, repeats)])

    return {
        "power_w_mean": stats.mean([_ratio(x, r["duration_s"]) for x, r in zip(e, repeats)])
        if ok else None,
        "idle_power_w": idle["rails_w"].get(name) if idle else None,
        "active_idle_power_w": active["rails_w"].get(name) if active else None,
        "energy_j": stats.mean(e) if ok else None,
        "energy_j_net": stats.mean(en) if okn else None,
        "energy_j_net_active": stats.mean(ea) if oka else None,
        "energy_j_per_image": per_image(e, ok),
        "energy_j_per_image_net": per_image(en, okn),
        "energy_j_per_image_net_active": per_image(ea, oka),
    }


def _rails_summary(source, repeats, idle, active, total_images):
    """Per-rail figures, each tagged with its boundary (module or carrier board)."""
    carrier = set(source.rails[i] for i in (getattr(source, "carrier_members", None) or []))
    rails = {}
    for name in source.rails:
        rails[name] = _rail_summary(name, repeats, idle, active, total_images)
        rails[name]["boundary"] = "carrier" if name in carrier else "module"
    return rails


def _energy_summary(repeats, idle, active, known, total_images):
    """Mean duration, power and energy (gross, net of each idle baseline)."""
    gross_ok, net_ok, neta_ok = known

    def m(key, ok, per_image=False):
        if not ok or (per_image and not total_images):
            return None
        return stats.mean([r.get(key) for r in repeats])

    return {
        "duration_s": m("duration_s", True),
        "power_w_mean": m("power_w_mean", gross_ok),
        "idle_power_w": idle["power_w"] if idle else None,
        "energy_j_gross": m("energy_j_gross", gross_ok),
        "energy_j_net": m("energy_j_net", net_ok),
        "energy_j_per_image_gross": m("energy_j_per_image_gross", gross_ok, True),
        "energy_j_per_image_net": m("energy_j_per_image_net", net_ok, True),
        "active_idle_power_w": active["power_w"] if active else None,
        "energy_j_net_active": m("energy_j_net_active", neta_ok),
        "energy_j_per_image_net_active": m("energy_j_per_image_net_active", neta_ok, True),
    }


def _count_summary(repeats, total_images):
    """Images, steps, throughput and how many power samples were taken."""
    total_time = sum(r["duration_s"] for r in repeats)
    return {
        "images": total_images,
        "steps": sum(r["steps"] or 0 for r in repeats),
        "throughput_ips": _ratio(total_images, total_time) if total_images else None,
        "samples": sum(r["samples"] for r in repeats),
        "samples_min_per_repeat": min(r["samples"] for r in repeats),
    }


def _update_counts(repeats, source):
    """Distinct sensor updates seen (null without a power source)."""
    if source.kind == "none":
        return {"sensor_updates": None, "sensor_updates_min_per_repeat": None}
    return {"sensor_updates": sum(r["sensor_updates"] or 0 for r in repeats),
            "sensor_updates_min_per_repeat": min(r["sensor_updates"] or 0 for r in repeats)}


def _train_summary(out, repeats, known):
    """Training runs also report energy per SGD step."""
    gross_ok, net_ok, neta_ok = known

    def m(key, ok):
        return stats.mean([r.get(key) for r in repeats]) if ok else None

    out["energy_j_per_step_gross"] = m("energy_j_per_step_gross", gross_ok)
    out["energy_j_per_step_net"] = m("energy_j_per_step_net", net_ok)
    out["energy_j_per_step_net_active"] = m("energy_j_per_step_net_active", neta_ok)
    out["ci95"]["energy_j_per_step_gross"] = stats.ci95(
        [r["energy_j_per_step_gross"] for r in repeats]) if gross_ok else None


def _summary_warnings(repeats, source, idle, active, cfg, warnings, spread, cv_of,
                      net_ok, total_images):
    """Append what the run's figures need read with care; the baselines' own
    warnings are carried over once."""
    if source.kind == "none":
        warnings.append("no power source: energy not measured (null), latency only")
    _spread_warning(len(repeats), spread, "repeats: cv of %s" % cv_of, cfg, warnings)
    if idle is None and source.kind != "none":
        warnings.append("no idle baseline (--idle 0): net energy not measured (null)")
    for base in (idle, active):
        for w in (base or {}).get("warnings", []):
            if w not in warnings:
                warnings.append(w)
    if net_ok and total_images and any(r["energy_j_net"] <= 0 for r in repeats):
        warnings.append("net energy <= 0 in some repeat: the workload did not draw "
                        "measurably more than the idle baseline")


def summarise(repeats, source, idle, cfg, warnings, mode, active=None):
    """Mean figures over repeats, spread, 95 % confidence intervals, per-rail
    breakdown and warnings."""
    total_images = sum(r["images"] or 0 for r in repeats)
    known = _figures_known(repeats)
    cv_of, spread, energy_measured = _spread_of(repeats, source, total_images)
    # the update order is the JSON's key order
    out = _energy_summary(repeats, idle, active, known, total_images)
    out.update(_count_summary(repeats, total_images))
    out.update({"cv": spread, "cv_of": cv_of,
                "cv_detail": _cv_detail(repeats, energy_measured, known[0]),
                "rails": _rails_summary(source, repeats, idle, active, total_images),
                "repeats": repeats})
    out.update(_update_counts(repeats, source))
    out["ci95"] = _ci(repeats, ("energy_j_per_image_gross", "energy_j_per_image_net",
                                "energy_j_per_image_net_active", "energy_j_gross",
                                "power_w_mean", "throughput_ips"))
    out["active_idle"] = active
    out["ci95"]["latency_ms_mean"] = stats.ci95([r["latency_ms"]["mean"] for r in repeats])
    carrier_sum = _carrier_summary(source, repeats, idle)
    if carrier_sum is not None:
        out["carrier"] = carrier_sum
    if mode == "train":
        _train_summary(out, repeats, known)
    _summary_warnings(repeats, source, idle, active, cfg, warnings, spread, cv_of,
                      known[1], total_images)
    out["warnings"] = warnings
    return out


# ------------------------------------------------------------------------------------
def measure_power(source, sampler, cfg):
    """``power`` command: back-to-back windows of duration_s with no workload."""
    warnings = []
    repeats = []
    cfg.progress["repeats"] = repeats
    th_before = thermal.snapshot(cfg.fs_root)
    for r in range(cfg.repeats):
        cfg.log("power window %d/%d: %.1f s" % (r + 1, cfg.repeats, cfg.min_window_s()))
        t0 = time.monotonic()
        _quiet_window(sampler, t0, cfg.duration_s, cfg, t0 + cfg.max_window_s(),
                      min(0.05, max(cfg.duration_s / 50.0, 0.002)), source.kind)
        win = {"t0": t0, "t1": time.monotonic(), "latencies_ms": [], "steps": 0,
               "images": 0}
        rep = _repeat_figures(source, sampler, win, None, cfg, warnings, r)
        if sampler is not None:
            sampler.trim(win["t1"] - 1.0)
        for k in ("steps", "images", "energy_j_net", "energy_j_per_image_gross",
                  "energy_j_per_image_net", "energy_j_per_step_gross",
                  "energy_j_per_step_net", "throughput_ips", "latency_ms",
                  "energy_j_net_active", "energy_j_per_image_net_active",
                  "energy_j_per_step_net_active"):
            rep.pop(k, None)
        for v in rep["rails"].values():
            v.pop("energy_j_net", None)
            v.pop("energy_j_net_active", None)
        repeats.append(rep)
    th = thermal.snapshot(cfg.fs_root)
    for wtxt in thermal.throttle_warnings(th_before, th):
        warnings.append(wtxt)
    gross_ok = all(r["energy_j_gross"] is not None for r in repeats)
    rails = {}
    carrier = set(source.rails[i] for i in (getattr(source, "carrier_members", None) or []))
    for name in source.rails:
        e = [r["rails"][name]["energy_j"] for r in repeats]
        ok = all(x is not None for x in e)
        rails[name] = {
            "power_w_mean": stats.mean([_ratio(x, r["duration_s"])
                                        for x, r in zip(e, repeats)]) if ok else None,
            "energy_j": stats.mean(e) if ok else None,
            "boundary": "carrier" if name in carrier else "module",
        }
    spread = stats.cv([r["power_w_mean"] for r in repeats]) if gross_ok else None
    if source.kind == "none":
        warnings.append("no power source: nothing measured (null)")
    _spread_warning(len(repeats), spread, "windows: cv of power_w_mean", cfg, warnings)
    out = {
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
        "sensor_updates": sum(r["sensor_updates"] or 0 for r in repeats)
        if source.kind != "none" else None,
        "sensor_updates_min_per_repeat": min(r["sensor_updates"] or 0 for r in repeats)
        if source.kind != "none" else None,
        "ci95": _ci(repeats, ("power_w_mean", "energy_j_gross")),
        "max_temp_c": thermal.max_temperature(th),
        "warnings": warnings,
    }
    carrier_sum = _carrier_summary(source, repeats, None)
    if carrier_sum is not None:
        out["carrier"] = carrier_sum
    return out


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
                "throughput_ips", "energy_j_per_step_gross", "energy_j_per_step_net",
                "active_idle_power_w", "energy_j_net_active",
                "energy_j_per_image_net_active", "energy_j_per_step_net_active"):
        if any(key in b for b in buckets):
            out[key] = wmean(key)
    groups = [(w, b.get("latencies_ms_all") or []) for b, w in zip(buckets, weights)]
    lat = {}
    for q, name in ((50, "p50"), (90, "p90"), (99, "p99")):
        lat[name] = stats.weighted_percentile(groups, q)
    lat["mean"] = wmean(None, lambda b: (b.get("latency_ms") or {}).get("mean"))
    out["latency_ms"] = lat
    out["samples"] = sum(b.get("samples") or 0 for b in buckets)
    ups = [b.get("sensor_updates") for b in buckets]
    out["sensor_updates"] = None if any(u is None for u in ups) else sum(ups)
    mins = [b.get("sensor_updates_min_per_repeat") for b in buckets]
    out["sensor_updates_min_per_repeat"] = None if any(u is None for u in mins) else min(mins)
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
                    "energy_j_per_image", "energy_j_per_image_net", "active_idle_power_w",
                    "energy_j_net_active", "energy_j_per_image_net_active"):
            rails[n][key] = wmean(None, lambda b, n=n, key=key:
                                  (b.get("rails", {}).get(n) or {}).get(key))
    for n in rails:
        rails[n]["boundary"] = next((b["rails"][n].get("boundary") for b in buckets
                                     if n in b.get("rails", {})), None)
    out["rails"] = rails
    out["fraction_sum"] = total_w
    return out
