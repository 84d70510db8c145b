"""Every power reader on a recorded tree in the real layout."""

import math
import os
import shutil
import subprocess
import time

import pytest
from agent_helpers import TX2_CARRIER_RAILS, TX2_MODULE_RAILS

from device_agents import emulate, protocol
from device_agents.errors import AgentError
from device_agents.sampler import Sampler
from device_agents.sources import (
    HwmonInaSource,
    IioInaSource,
    NullSource,
    NvmlSource,
    RaplSource,
    TegrastatsSource,
    Unavailable,
    is_nc_label,
    make_source,
    parse_tegrastats_line,
)

IIO = "sys/bus/i2c/drivers/ina3221x"


def _w(path, text):
    with open(path, "w") as f:
        f.write(text)


# ---------------------------------------------------------------- TX2 / JetPack 4 iio
def test_iio_tx2_rails_by_name_and_vdd_in_total(tx2_tree):
    emulate.TreeWriter(tx2_tree, "tx2").write_power(7.5)
    src = IioInaSource(tx2_tree)
    assert set(src.rails) == TX2_MODULE_RAILS | TX2_CARRIER_RAILS
    vals = dict(zip(src.rails, src.read()))
    assert vals["VDD_IN"] == pytest.approx(7.5)
    assert vals["VDD_SYS_GPU"] == pytest.approx(7.5 * 0.25, abs=1e-3)
    assert vals["VDD_SYS_CPU"] == pytest.approx(7.5 * 0.20, abs=1e-3)
    # the total is VDD_IN, not the sum of the rails (which is smaller here)
    assert src.total_rail == "VDD_IN"
    assert src.total_of(src.read()) == pytest.approx(7.5)
    assert sum(vals.values()) > 7.5 + 1.0  # summing would count VDD_IN twice
    assert set(src.details["devices"]) == {IIO + "/0-0040/iio:device0",
                                           IIO + "/0-0041/iio:device1",
                                           IIO + "/0-0042/iio:device2",
                                           IIO + "/0-0043/iio:device3"}


def test_iio_looks_rails_up_by_name_not_channel(tx2_tree):
    # swap channel 0 and 1 of 0-0041: VDD_IN now lives on channel 1
    d = os.path.join(tx2_tree, IIO, "0-0041", "iio:device1")
    _w(os.path.join(d, "rail_name_0"), "VDD_SYS_CPU\n")
    _w(os.path.join(d, "rail_name_1"), "VDD_IN\n")
    _w(os.path.join(d, "in_power0_input"), "1234\n")
    _w(os.path.join(d, "in_power1_input"), "8765\n")
    src = IioInaSource(tx2_tree)
    vals = dict(zip(src.rails, src.read()))
    assert vals["VDD_IN"] == pytest.approx(8.765)
    assert vals["VDD_SYS_CPU"] == pytest.approx(1.234)
    assert src.total_of(src.read()) == pytest.approx(8.765)


def test_iio_missing_power_file_skips_rail_and_rails_option_errors(tx2_tree):
    os.unlink(os.path.join(tx2_tree, IIO, "0-0041", "iio:device1", "in_power1_input"))
    src = IioInaSource(tx2_tree)
    assert "VDD_SYS_CPU" not in src.rails
    assert any("VDD_SYS_CPU" in s for s in src.details["skipped"])
    with pytest.raises(AgentError) as e:
        make_source("iio", tx2_tree, rails=["VDD_IN", "VDD_SYS_CPU"])
    assert e.value.kind == "no_power_source"
    assert "VDD_SYS_CPU" in str(e.value) and "VDD_IN" in str(e.value)


def test_iio_rails_restriction_sets_total(tx2_tree):
    src, _ = make_source("iio", tx2_tree, rails=["VDD_SYS_GPU", "VDD_SYS_CPU"])
    assert src.rails == ["VDD_SYS_GPU", "VDD_SYS_CPU"]
    assert src.total_rail is None  # no input rail kept: the sum of the kept rails
    assert src.total_of(src.read()) == pytest.approx(5.0 * 0.45, abs=1e-3)


def test_iio_unreadable_value_is_nan_not_zero(tx2_tree):
    _w(os.path.join(tx2_tree, IIO, "0-0041", "iio:device1", "in_power0_input"), "garbage\n")
    src = IioInaSource(tx2_tree)
    vals = dict(zip(src.rails, src.read()))
    assert math.isnan(vals["VDD_IN"])
    assert math.isnan(src.total_of(src.read()))
    assert vals["VDD_SYS_GPU"] == pytest.approx(1.25)


def test_iio_absent_tree(tmp_path):
    with pytest.raises(Unavailable):
        IioInaSource(str(tmp_path))


# ---------------------------------------------------------------- JetPack 5+ hwmon
def test_hwmon_orin_skips_nc_and_sum_channel(tmp_path):
    root = str(tmp_path / "orin")
    emulate.build_tree(root, "orin", power_w=10.0)
    src = HwmonInaSource(root)
    assert src.rails == ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"]
    skipped = " ".join(src.details["skipped"])
    assert "NC" in skipped and "sum" in skipped
    vals = dict(zip(src.rails, src.read()))
    # mV x mA: 5000 mV x 900 mA = 4.5 W
    assert vals["VDD_GPU_SOC"] == pytest.approx(4.5)
    assert src.total_rail is None
    assert src.refresh_s() == pytest.approx(0.42)  # update_interval in ms


def test_hwmon_orin_nx_total_is_vdd_in(tmp_path):
    root = str(tmp_path / "nx")
    emulate.build_tree(root, "orin-nx", power_w=8.0)
    src = HwmonInaSource(root)
    assert src.rails == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    assert src.total_rail == "VDD_IN"
    assert src.total_of(src.read()) == pytest.approx(8.0, rel=1e-3)


def test_nc_labels():
    assert is_nc_label("NC")
    assert is_nc_label("nc")
    assert is_nc_label("VDD_NC")
    assert is_nc_label("NC2")
    assert not is_nc_label("VDD_IN")
    assert not is_nc_label("VDD_SYNC")
    assert not is_nc_label("VIN_SYS_5V0")


# ---------------------------------------------------------------- tegrastats
JP4_LINE = ("RAM 2123/7852MB (lfb 1206x4MB) SWAP 0/3926MB (cached 0MB) CPU [2%@345,off,off,"
            "1%@345,0%@345,0%@345] EMC_FREQ 0% GR3D_FREQ 0% PLL@38C MCPU@38C PMIC@100C "
            "Tboard@33C GPU@36C BCPU@38C thermal@37.1C Tdiode@35.25C VDD_SYS_GPU 152/152 "
            "VDD_SYS_SOC 685/685 VDD_4V0_WIFI 0/0 VDD_IN 1649/1649 VDD_SYS_CPU 380/380 "
            "VDD_SYS_DDR 641/641")
JP5_LINE = ("11-21-2023 09:52:01 RAM 4722/30536MB (lfb 5x4MB) SWAP 0/15268MB (cached 0MB) "
            "CPU [1%@729,0%@729,0%@729,0%@729,off,off,off,off] EMC_FREQ 0%@2133 "
            "GR3D_FREQ 0%@[305,305] VIC_FREQ 115 APE 174 CV0@-256C CPU@43.5C Tboard@32C "
            "SOC2@40.156C Tdiode@33.75C SOC0@40.343C GPU@-256C tj@43.5C SOC1@40.218C "
            "VDD_GPU_SOC 2171mW/2171mW VDD_CPU_CV 397mW/397mW VIN_SYS_5V0 2520mW/2520mW "
            "VDDQ_VDD2_1V8AO 301mW/301mW")
JP6_LINE = ("RAM 1650/7620MB (lfb 4x4MB) CPU [0%@729,0%@729] GR3D_FREQ 0% cpu@47.8C "
            "soc2@46.5C VDD_IN 5018mW/4870mW VDD_CPU_GPU_CV 795mW/780mW VDD_SOC 1425mW/1410mW")


def test_tegrastats_jp4_line():
    pairs = parse_tegrastats_line(JP4_LINE)
    assert pairs == [("VDD_SYS_GPU", 152.0), ("VDD_SYS_SOC", 685.0), ("VDD_4V0_WIFI", 0.0),
                     ("VDD_IN", 1649.0), ("VDD_SYS_CPU", 380.0), ("VDD_SYS_DDR", 641.0)]


def test_tegrastats_mw_lines():
    assert parse_tegrastats_line(JP5_LINE) == [
        ("VDD_GPU_SOC", 2171.0), ("VDD_CPU_CV", 397.0), ("VIN_SYS_5V0", 2520.0),
        ("VDDQ_VDD2_1V8AO", 301.0)]
    # current value, not the running average
    assert parse_tegrastats_line(JP6_LINE) == [
        ("VDD_IN", 5018.0), ("VDD_CPU_GPU_CV", 795.0), ("VDD_SOC", 1425.0)]


def test_tegrastats_ignores_memory_and_temperatures():
    assert parse_tegrastats_line("RAM 2123/7852MB SWAP 0/3926MB IRAM 0/252kB GPU@36C") == []


def test_tegrastats_source_runs_the_tool(tx2_tools_tree):
    src = TegrastatsSource(tx2_tools_tree, interval_s=0.02)
    assert src.total_rail == "VDD_IN"
    assert "VDD_SYS_DDR" in src.rails
    s = Sampler(src, 0.02).start()
    time.sleep(0.5)
    s.stop()
    times, values = s.snapshot()
    assert len(times) >= 5
    vin = values[src.rails.index("VDD_IN")]
    assert all(v == pytest.approx(5.0) for v in vin)
    assert src.proc is None  # the tool was stopped


def test_tegrastats_mw_format_on_hwmon_tree(tmp_path):
    root = str(tmp_path / "nx")
    emulate.build_tree(root, "orin-nx", power_w=8.0, tools=True)
    src = TegrastatsSource(root, interval_s=0.02)
    src.open()
    try:
        vals = dict(zip(src.rails, src.read()))
    finally:
        src.close()
    assert vals["VDD_IN"] == pytest.approx(8.0, rel=1e-3)


def test_tegrastats_absent(tmp_path):
    with pytest.raises(Unavailable):
        TegrastatsSource(str(tmp_path))


# ---------------------------------------------------------------- RAPL
def test_rapl_wraps_at_max_energy_range(tmp_path):
    root = str(tmp_path / "rapl")
    max_uj = 10.0e6  # 10 J: wraps quickly
    tw = emulate.TreeWriter(root, "rapl", max_range_uj=max_uj)
    tw.write_power(0, energy_j=0.0)
    src = RaplSource(root)
    assert src.rails == ["package-0", "package-0/core", "package-0/uncore", "package-0/dram"]
    assert src.total_label() == "sum(package-0,package-0/dram)"
    src.open()
    totals = []
    for e in (0.0, 4.0, 8.0, 12.0, 16.0, 25.0, 31.0):  # package-0 (0.8 E) wraps at 10 J
        tw.write_power(0, energy_j=e)
        totals.append(src.total_of(src.read()))
    deltas = [b - a for a, b in zip(totals, totals[1:])]
    assert deltas == pytest.approx([4.0, 4.0, 4.0, 4.0, 9.0, 6.0], abs=1e-5)
    assert src.wraps[0] == 2  # package-0 passed 10 J and 20 J


def test_rapl_wrap_without_known_range_stays_unknown(tmp_path):
    root = str(tmp_path / "rapl")
    tw = emulate.TreeWriter(root, "rapl", max_range_uj=10.0e6)
    tw.write_power(0, energy_j=0.0)
    src = RaplSource(root)
    src.max_ranges = [None] * len(src.max_ranges)  # as when max_energy_range_uj cannot be read
    src.open()
    totals = []
    for e in (0.0, 4.0, 8.0, 12.0, 14.0, 16.0):  # package-0 (0.8 E) wraps at 10 J between 12 and 14
        tw.write_power(0, energy_j=e)
        totals.append(src.read()[0])
    assert all(v == v for v in totals[:3])  # finite before the wrap
    assert all(v != v for v in totals[4:])  # NaN from the wrap on: never spliced across the gap


def test_rapl_unreadable_counter_means_no_energy(tmp_path):
    root = str(tmp_path / "rapl")
    emulate.build_tree(root, "rapl")
    base = os.path.join(root, "sys/devices/virtual/powercap/intel-rapl/intel-rapl:0")
    for zdir in (base, os.path.join(base, "intel-rapl:0:0"), os.path.join(base, "intel-rapl:0:1"),
                 os.path.join(base, "intel-rapl:0:2")):
        f = os.path.join(zdir, "energy_uj")
        os.unlink(f)
        os.mkdir(f)  # reading it fails as an unreadable counter does
    with pytest.raises(Unavailable) as e:
        RaplSource(root)
    assert "not readable" in str(e.value)
    with pytest.raises(AgentError) as e2:
        make_source("rapl", root)
    assert e2.value.kind == "no_power_source"
    src, notes = make_source("auto", root)
    assert isinstance(src, NullSource)
    assert any("not readable" in n for n in notes)


def test_rapl_counter_lost_mid_run_gives_null_energy(tmp_path):
    root = str(tmp_path / "rapl")
    tw = emulate.TreeWriter(root, "rapl")
    tw.write_power(0, energy_j=0.0)
    src = RaplSource(root)
    s = Sampler(src, 0.01).start()
    time.sleep(0.05)
    t0 = time.monotonic()
    time.sleep(0.15)
    f = os.path.join(root, "sys/devices/virtual/powercap/intel-rapl/intel-rapl:0/energy_uj")
    os.unlink(f)
    os.mkdir(f)
    time.sleep(0.15)
    t1 = time.monotonic()
    s.wait_past(t1, 1.0)
    s.stop()
    cfg = protocol.Config(interval_s=0.01)
    w = protocol.window_energy(src, s, t0, t1)
    assert w["energy_j"] is None  # never a zero or a partial figure
    assert w["rails"]["package-0"] is None
    assert w["rails"]["package-0/dram"] == pytest.approx(0.0)  # still readable, flat
    assert s.read_errors > 0
    assert cfg.interval_s == 0.01


# ---------------------------------------------------------------- NVML through ctypes
FAKE_NVML_C = r"""
#include <string.h>
#include <time.h>
static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
                          return ts.tv_sec + ts.tv_nsec * 1e-9; }
static int idx[2] = {0, 1};
static const double watts[2] = {50.0, 100.0};
int nvmlInit_v2(void) { return 0; }
int nvmlShutdown(void) { return 0; }
int nvmlDeviceGetCount_v2(unsigned int *n) { *n = 2; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **h) {
  if (i > 1) return 2; *h = &idx[i]; return 0; }
int nvmlDeviceGetName(void *h, char *buf, unsigned int len) {
  strncpy(buf, "Fake GPU", len); return 0; }
int nvmlDeviceGetTotalEnergyConsumption(void *h, unsigned long long *mj) {
  int i = *(int *)h; *mj = (unsigned long long)(now() * watts[i] * 1000.0); return 0; }
const char *nvmlErrorString(int rc) { return "fake error"; }
"""


@pytest.fixture(scope="module")
def fake_nvml(tmp_path_factory):
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        pytest.skip("no C compiler to build a stand-in NVML library")
    d = tmp_path_factory.mktemp("nvml")
    src = d / "nvml.c"
    src.write_text(FAKE_NVML_C)
    lib = str(d / "libnvidia-ml.so.1")
    subprocess.check_call([gcc, "-shared", "-fPIC", "-o", lib, str(src)])
    return lib


def test_nvml_energy_counter_via_ctypes(fake_nvml):
    src = NvmlSource(fake_nvml)
    assert src.rails == ["GPU0", "GPU1"]
    assert src.details["gpus"] == ["Fake GPU", "Fake GPU"]
    assert src.kind == "energy"
    s = Sampler(src, 0.01).start()
    time.sleep(0.05)
    t0 = time.monotonic()
    time.sleep(0.4)
    t1 = time.monotonic()
    s.wait_past(t1, 1.0)
    s.stop()
    w = protocol.window_energy(src, s, t0, t1)
    dur = t1 - t0
    assert w["rails"]["GPU0"] == pytest.approx(50.0 * dur, rel=0.01)
    assert w["rails"]["GPU1"] == pytest.approx(100.0 * dur, rel=0.01)
    assert w["energy_j"] == pytest.approx(150.0 * dur, rel=0.01)


def test_nvml_missing_library():
    with pytest.raises(Unavailable) as e:
        NvmlSource("/nonexistent/libnvidia-ml.so.1")
    assert "not loadable" in str(e.value)


# ---------------------------------------------------------------- selection
def test_auto_detection(tmp_path, tx2_tree):
    assert make_source("auto", tx2_tree)[0].name == "iio"
    orin = str(tmp_path / "orin")
    emulate.build_tree(orin, "orin")
    assert make_source("auto", orin)[0].name == "hwmon"
    rapl = str(tmp_path / "rapl")
    emulate.build_tree(rapl, "rapl")
    assert make_source("auto", rapl, nvml_lib="/nonexistent.so")[0].name == "rapl"
    empty = str(tmp_path / "empty")
    os.mkdir(empty)
    src, notes = make_source("auto", empty, nvml_lib="/nonexistent.so")
    assert src.name == "none" and src.kind == "none"
    assert len(notes) == 5
    with pytest.raises(AgentError) as e:
        make_source("auto", empty, nvml_lib="/nonexistent.so", require=True)
    assert e.value.kind == "no_power_source"
    with pytest.raises(AgentError) as e:
        make_source("hwmon", tx2_tree)
    assert e.value.kind == "no_power_source" and "hwmon" in str(e.value)


def test_rapl_and_nvml_combine(tmp_path, fake_nvml):
    rapl = str(tmp_path / "rapl")
    emulate.build_tree(rapl, "rapl")
    src, _ = make_source("auto", rapl, nvml_lib=fake_nvml)
    assert src.name == "rapl+nvml"
    assert src.rails[-2:] == ["GPU0", "GPU1"]
    src2, _ = make_source("rapl,nvml", rapl, nvml_lib=fake_nvml)
    assert src2.rails == src.rails
    both = str(tmp_path / "both")
    emulate.build_tree(both, "tx2")
    emulate.build_tree(both, "rapl")
    with pytest.raises(AgentError) as e:
        make_source("iio,rapl", both)
    assert e.value.kind == "usage"


def test_sampler_trim_keeps_memory_bounded_and_windows_right(tx2_tree):
    src = IioInaSource(tx2_tree)
    s = Sampler(src, 0.005).start()
    time.sleep(0.3)
    t1 = time.monotonic()
    t0 = t1 - 0.1
    s.wait_past(t1, 1.0)
    before = s.count()
    s.trim(t0)
    kept = s.count()
    w = protocol.window_energy(src, s, t0, t1)
    s.stop()
    assert kept < before and s.total >= before
    assert s.times[0] < t0  # one sample before the cut stays for interpolation
    assert w["energy_j"] == pytest.approx(5.0 * 0.1)
    assert s.achieved_rate_hz() > 50
