"""Integration against a known waveform written by a separate process."""

import os
import time

import pytest
from agent_helpers import WAVEFORM, sensor_slack

from device_agents import emulate, protocol
from device_agents.emulate import Waveform
from device_agents.sampler import Sampler
from device_agents.sources import IioInaSource, RaplSource, TegrastatsSource


def test_waveform_energy_is_the_integral_of_its_power():
    wf = Waveform(dict(WAVEFORM, t_ref=10.0))
    t0, t1 = 11.234, 14.9
    n = 200000
    h = (t1 - t0) / n
    numeric = sum(wf.power(t0 + (i + 0.5) * h) for i in range(n)) * h
    assert wf.energy(t0, t1) == pytest.approx(numeric, rel=1e-4)
    sq = Waveform({"base_w": 1.0, "square": {"amp_w": 2.0, "period_s": 1.0, "duty": 0.25},
                   "t_ref": 0.0})
    assert [sq.power(t) for t in (0.1, 0.3, 1.2, 1.8)] == [3.0, 1.0, 3.0, 1.0]
    assert sq.energy(0.0, 2.0) == pytest.approx(2.0 + 2.0 * 0.5)
    assert sq.energy(0.1, 1.1) == pytest.approx(1.0 + 2.0 * 0.25)


def _windows(src, n=3, length=0.8, interval=0.01):
    s = Sampler(src, interval).start()
    time.sleep(0.1)
    out = []
    try:
        for _ in range(n):
            t0 = time.monotonic()
            time.sleep(length)
            t1 = time.monotonic()
            s.wait_past(t1 + protocol._lag(src), 2.0)  # a sensor's value lags by its period
            out.append((t0, t1, protocol.window_energy(src, s, t0, t1)))
    finally:
        s.stop()
    return out, s


def test_iio_integration_matches_the_waveform(tx2_waveform):
    root, wf = tx2_waveform
    src = IioInaSource(root)
    wins, s = _windows(src)
    r = src.refresh_s()
    for t0, t1, w in wins:
        truth = wf.energy(t0, t1)
        shown = emulate.presented_energy(root, t0, t1)
        # against what the sensor values stand for (exact up to sampling)...
        assert abs(w["energy_j"] - shown) / shown <= 0.01, (w["energy_j"], shown)
        # ...and against the analytic waveform: a sensor averaging over 0.42 s cannot
        # tell where inside the two periods cut by t0 and t1 the power went, so the
        # bound is what those periods can misplace (plus 1 %)
        slack = sensor_slack(wf, t0, t1, r) + 0.01 * truth
        assert abs(w["energy_j"] - truth) <= slack, (w["energy_j"], truth, slack)
        assert w["samples"] >= 40
        # a sub-rail follows its share of the module power too
        assert w["rails"]["VDD_SYS_GPU"] == pytest.approx(0.25 * w["energy_j"], rel=0.01)
    assert s.cpu_fraction() is not None



def test_rapl_counter_integration_with_wraps(mem_dir):
    root = os.path.join(mem_dir, "raplw")
    # 3 J range: package-0 (0.8 x ~6-9 W) wraps about every half second
    proc, wf = emulate.start_writer(root, "rapl", dict(WAVEFORM), rate_hz=250,
                                    max_range_uj=3.0e6)
    try:
        src = RaplSource(root)
        wins, _ = _windows(src, n=2, length=1.0)
    finally:
        emulate.stop_writer(proc)
    assert src.wraps[0] >= 3
    for t0, t1, w in wins:
        # the published counter is exact at each update; the margin covers the
        # writer process's own scheduling delays
        truth = wf.energy(t0, t1)
        assert abs(w["energy_j"] - truth) / truth <= 0.02, (w["energy_j"], truth)


def test_tegrastats_integration_matches_the_waveform(mem_dir):
    root = os.path.join(mem_dir, "tx2ts")
    proc, wf = emulate.start_writer(root, "tx2", dict(WAVEFORM), rate_hz=250)
    try:
        emulate.write_fake_tools(root, "tx2")
        src = TegrastatsSource(root, interval_s=0.01)
        wins, _ = _windows(src, n=2, length=1.0)
    finally:
        emulate.stop_writer(proc)
    for t0, t1, w in wins:
        shown = emulate.presented_energy(root, t0, t1)
        # lines are stamped on arrival, a little after the tool read the rails
        assert abs(w["energy_j"] - shown) / shown <= 0.02, (w["energy_j"], shown)
