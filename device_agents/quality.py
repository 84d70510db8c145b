"""The quality of a measurement: ``ok``, ``warn`` or ``fail``, with the reasons as structured fields.

Every warning the agent writes is classified here, in one table, so the orchestrator (and a
person reading the JSON) can act on a code instead of parsing prose:

* ``fail``: the figure is not to be trusted as it stands: the repeats disagree (cv over the
  limit), the workload drew no measurable energy (net energy <= 0), or the sensor or energy
  counter did not move inside the windows;
* ``warn``: the figure stands but something is worth knowing: few distinct sensor updates or
  power samples, a slow sampler, thermal events, clocks changed, one repeat only (spread
  unknown), ...;
* ``info``: says what was not measured (no power source, no idle baseline) without lowering
  the quality: those figures are absent (null), not wrong.

Python 3.6, standard library only.
"""

# (code, level, a phrase the warning contains): the first match classifies it
RULES = (
    ("high_spread", "fail", "high spread across"),
    ("net_energy_nonpositive", "fail", "net energy <= 0"),
    ("sensor_stuck", "fail", "reported the same value throughout"),
    ("counter_few_moves", "fail", "the energy counter moved only"),
    ("few_sensor_updates", "warn", "distinct sensor updates"),
    ("few_samples", "warn", "power samples (<"),
    ("few_samples", "warn", "too few power samples"),
    ("window_beyond_samples", "warn", "the window reaches beyond the power samples"),
    ("window_beyond_samples", "warn", "no power sample after the window end"),
    ("sampler_slow", "warn", "sampler reached"),
    ("unreadable_rails", "warn", "had unreadable rails"),
    ("thermal", "warn", "thermal"),
    ("one_repeat", "warn", "one repeat only"),
    ("no_power_source", "info", "no power source"),
    ("no_idle_baseline", "info", "no idle baseline"),
)
LEVELS = ("ok", "info", "warn", "fail")


def classify(warning):
    """(code, level) of one warning text; an unknown warning is ``("other", "warn")``."""
    for code, level, phrase in RULES:
        if phrase in warning:
            return code, level
    return "other", "warn"


def assess(warnings):
    """``{"quality": worst level, "reasons": [{"code", "level", "detail"}, ...]}`` for a list of warnings.

    ``info`` reasons are listed but leave the quality ``ok``.
    """
    reasons = []
    worst = "ok"
    for w in warnings or []:
        code, level = classify(w)
        reasons.append({"code": code, "level": level, "detail": w})
        if level != "info" and LEVELS.index(level) > LEVELS.index(worst):
            worst = level
    return {"quality": worst, "reasons": reasons}
