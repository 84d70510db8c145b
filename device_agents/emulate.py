"""Emulated boards: recorded sysfs trees in the real layouts, a writer process that
makes the power rails follow a known waveform, and stand-ins for board tools.

The agent reads an emulated tree through exactly the code it uses on a board; only
``--fs-root`` differs.  Layouts:

* ``tx2``: JetPack 4 ``ina3221x`` iio, devices ``0-0040`` (VDD_SYS_GPU, VDD_SYS_SOC,
  VDD_4V0_WIFI) and ``0-0041`` (VDD_IN, VDD_SYS_CPU, VDD_SYS_DDR), mW, and the
  developer kit's carrier monitors ``0-0042`` (VDD_MUX...) and ``0-0043``;
* ``orin``: JetPack 5+ ``ina3221`` hwmon as on an AGX Orin (no input rail: the module
  total is VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0; VDDQ_VDD2_1V8AO is nested in
  VIN_SYS_5V0), with NC channels and the sum channel, mV and mA;
* ``orin-nx``: the same driver with VDD_IN (Orin NX / Nano);
* ``nano``: iio with POM_5V_IN; ``agx-xavier``: iio with the six parallel rails and no
  input rail; ``thor``: an INA238 (``drivers/ina238``, uW) giving VIN;
* ``rapl``: Intel powercap zones with ``energy_uj`` counters that wrap at
  ``max_energy_range_uj``.

INA3221 trees refresh like the sensor: every 0.42 s (declared in
``polling_delay_<k>`` / ``update_interval``) the writer publishes the mean power of
the period that just ended.

The writer updates values by writing a temporary file and renaming it over the
attribute, so a reader never sees a torn value (as with real sysfs).  The waveform is
a function of the system-wide monotonic clock, so another process can compute the
exact energy over any window it timed itself.

Command line::

    python3 -m device_agents emulate build --root DIR --layout tx2 [--tools]
    python3 -m device_agents emulate run --root DIR --layout tx2 \\
        --waveform '{"base_w": 6, "sines": [{"amp_w": 1, "freq_hz": 0.5}]}' \\
        [--rate-hz 200] [--refresh-s 0.42] [--duration S] [--ready FILE]
"""

import argparse
import array
import json
import math
import os
import stat
import subprocess
import sys
import time

LAYOUTS = ("tx2", "orin", "orin-nx", "nano", "agx-xavier", "thor", "rapl")

#: How often an INA3221 refreshes its registers in continuous mode with the L4T
#: settings (3 channels x shunt+bus x 1.1 ms x 64 averages ~ 0.42 s).  The writer
#: publishes, every period, the mean power over the period that just ended, as the
#: sensor's averaging does; the tree says so in polling_delay_<k> / update_interval.
INA3221_REFRESH_S = 0.42

#: rail -> fraction of the module's power P (the waveform).  The TX2 sub-rails
#: deliberately do not add up to VDD_IN (regulator losses, other loads), so a reader
#: summing them instead of taking VDD_IN is caught.
TX2_RAILS = (
    ("0-0040", "iio:device0", (("VDD_SYS_GPU", 0.25), ("VDD_SYS_SOC", 0.15),
                               ("VDD_4V0_WIFI", 0.02))),
    ("0-0041", "iio:device1", (("VDD_IN", 1.0), ("VDD_SYS_CPU", 0.20),
                               ("VDD_SYS_DDR", 0.10))),
)

#: The TX2 developer kit's carrier board (P2597): its own INA3221s at 0x42 and 0x43,
#: VDD_MUX feeding the carrier in parallel with the module's VDD_IN.  Fractions of
#: the module's P, so the carrier's known power is 0.35 P, never part of P.
TX2_CARRIER_RAILS = (
    ("0-0042", "iio:device2", (("VDD_MUX", 0.35), ("VDD_5V0_IO_SYS", 0.12),
                               ("VDD_3V3_SYS", 0.08))),
    ("0-0043", "iio:device3", (("VDD_3V3_IO_SLP", 0.03), ("VDD_1V8_IO", 0.02),
                               ("VDD_3V3_SYS_M2", 0.01))),
)
TX2_CARRIER_FRACTION = 0.35

#: AGX Orin: the module total is VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0 = P, and
#: VDDQ_VDD2_1V8AO is fed by VIN_SYS_5V0 (nested: 0.12 P inside its 0.30 P), so a
#: reader adding all four rails over-reports by 12 %.  NC channels carry values that
#: would spoil the total if they were not skipped.
ORIN_RAILS = (
    ("1-0040", "hwmon3", (("VDD_GPU_SOC", 0.45), ("VDD_CPU_CV", 0.25),
                          ("VIN_SYS_5V0", 0.30))),
    ("1-0041", "hwmon4", (("NC", None), ("VDDQ_VDD2_1V8AO", 0.12), ("NC", None))),
)

ORIN_NX_RAILS = (
    ("1-0040", "hwmon1", (("VDD_IN", 1.0), ("VDD_CPU_GPU_CV", 0.35), ("VDD_SOC", 0.25))),
)

NANO_RAILS = (
    ("6-0040", "iio:device0", (("POM_5V_IN", 1.0), ("POM_5V_GPU", 0.30),
                               ("POM_5V_CPU", 0.35))),
)

#: AGX Xavier (JetPack 4 names): no input rail, the six parallel rails add up to P.
AGX_XAVIER_RAILS = (
    ("1-0040", "iio:device0", (("GPU", 0.30), ("CPU", 0.25), ("SOC", 0.20))),
    ("1-0041", "iio:device1", (("CV", 0.05), ("VDDRQ", 0.08), ("SYS5V", 0.12))),
)

#: Thor: the input VIN from an INA238 (hwmon driver ina238, power1_input in uW),
#: and an INA3221 with module sub-rails (names illustrative for the emulation).
THOR_INA238 = ("2-0044", "hwmon5", 1.0)
THOR_RAILS = (
    ("2-0040", "hwmon2", (("VDD_GPU", 0.40), ("VDD_CPU_SOC_MSS", 0.30), ("VIN_SYS_5V0", 0.15))),
)

#: zone path parts -> (name, fraction); the total (package + dram) is the waveform.
RAPL_ZONES = (
    ((0,), "package-0", 0.80),
    ((0, 0), "core", 0.50),
    ((0, 1), "uncore", 0.05),
    ((0, 2), "dram", 0.20),
)

NC_POWER_MV_MA = (1000, 700)

R32 = ("# R32 (release), REVISION: 6.1, GCID: 27863751, BOARD: t186ref, EABI: aarch64, "
       "DATE: Mon Jul 26 19:36:31 UTC 2021")
R35 = ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
       "DATE: Tue Aug  1 19:57:35 UTC 2023")
R38 = ("# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic, EABI: aarch64, "
       "DATE: Fri Aug 22 00:55:42 UTC 2025")
TX2_ZONES = (("BCPU-therm", 36.5, 96.0), ("MCPU-therm", 36.0, 96.0), ("GPU-therm", 35.0, 96.0),
             ("PLL-therm", 34.5, None), ("Tboard_tegra", 33.0, None),
             ("Tdiode_tegra", 34.0, None), ("PMIC-Die", 100.0, None),
             ("thermal-fan-est", 35.0, None))
ORIN_ZONES = (("CPU-therm", 40.0, 99.0), ("GPU-therm", 39.0, 99.0), ("tj-therm", 41.0, 99.0))

#: layout -> board files: model, compatible, L4T, zones, CPUs, GPU devfreq name,
#: EMC clock file, and its sensors (driver, devices) and default refresh (s).
BOARD_FILES = {
    "tx2": dict(model="quill", compatible=("nvidia,p2771-0000", "nvidia,p3310-1000",
                                           "nvidia,tegra186"),
                l4t=R32, zones=TX2_ZONES, cpus=6, gpu="17000000.gp10b",
                emc="sys/kernel/debug/clk/emc/clk_rate", driver="iio",
                devices=TX2_RAILS + TX2_CARRIER_RAILS, refresh=INA3221_REFRESH_S),
    "orin": dict(model="NVIDIA Jetson AGX Orin Developer Kit",
                 compatible=("nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005",
                             "nvidia,tegra234"),
                 l4t=R35, zones=ORIN_ZONES, cpus=12, gpu="17000000.ga10b",
                 emc="sys/kernel/debug/bpmp/debug/clk/emc/rate", driver="hwmon",
                 devices=ORIN_RAILS, refresh=INA3221_REFRESH_S),
    "orin-nx": dict(model="NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
                    compatible=("nvidia,p3768-0000+p3767-0000", "nvidia,p3767-0000",
                                "nvidia,tegra234"),
                    l4t=R35, zones=ORIN_ZONES, cpus=8, gpu="17000000.ga10b",
                    emc="sys/kernel/debug/bpmp/debug/clk/emc/rate", driver="hwmon",
                    devices=ORIN_NX_RAILS, refresh=INA3221_REFRESH_S),
    "nano": dict(model="NVIDIA Jetson Nano Developer Kit",
                 compatible=("nvidia,p3450-0000", "nvidia,jetson-nano", "nvidia,tegra210"),
                 l4t=R32.replace("REVISION: 6.1", "REVISION: 7.1"),
                 zones=(("CPU-therm", 35.0, 97.0), ("GPU-therm", 34.0, 97.0),
                        ("PLL-therm", 33.0, None), ("PMIC-Die", 100.0, None)),
                 cpus=4, gpu="57000000.gpu", emc="sys/kernel/debug/clk/emc/clk_rate",
                 driver="iio", devices=NANO_RAILS, refresh=INA3221_REFRESH_S),
    "agx-xavier": dict(model="Jetson-AGX",
                       compatible=("nvidia,p2972-0000", "nvidia,galen", "nvidia,tegra194"),
                       l4t=R32, zones=(("CPU-therm", 38.0, 96.0), ("GPU-therm", 37.0, 96.0)),
                       cpus=8, gpu="17000000.gv11b",
                       emc="sys/kernel/debug/bpmp/debug/clk/emc/rate", driver="iio",
                       devices=AGX_XAVIER_RAILS, refresh=INA3221_REFRESH_S),
    "thor": dict(model="NVIDIA Jetson AGX Thor Developer Kit",
                 compatible=("nvidia,p4071-0000+p3834-0008", "nvidia,p3834-0008",
                             "nvidia,tegra264"),
                 l4t=R38, zones=(("cpu-therm", 42.0, 99.0), ("gpu-therm", 41.0, 99.0)),
                 cpus=14, gpu=None, emc=None, driver="hwmon", devices=THOR_RAILS,
                 refresh=None),
}

#: Binary log of every write: (monotonic time it became visible, watts, cumulative J,
#: start of the period the value stands for).
PRESENTED_LOG = "writer-log.f64"


# ------------------------------------------------------------------------------------
class Waveform(object):
    """P(t) = base + sum of sines + a square wave, t on the monotonic clock.

    spec keys: base_w, sines [{amp_w, freq_hz, phase}], square {amp_w, period_s, duty,
    phase_s}, t_ref (monotonic seconds; the time origin)."""

    def __init__(self, spec=None, **kw):
        spec = dict(spec or {}, **kw)
        self.base_w = float(spec.get("base_w", 5.0))
        self.sines = [dict(amp_w=float(s.get("amp_w", 0.0)),
                           freq_hz=float(s.get("freq_hz", 1.0)),
                           phase=float(s.get("phase", 0.0)))
                      for s in spec.get("sines", [])]
        sq = spec.get("square")
        self.square = None
        if sq:
            self.square = dict(amp_w=float(sq.get("amp_w", 0.0)),
                               period_s=float(sq.get("period_s", 1.0)),
                               duty=float(sq.get("duty", 0.5)),
                               phase_s=float(sq.get("phase_s", 0.0)))
        self.t_ref = float(spec["t_ref"]) if spec.get("t_ref") is not None else None

    def to_dict(self):
        return {"base_w": self.base_w, "sines": self.sines, "square": self.square,
                "t_ref": self.t_ref}

    def _ref(self):
        return self.t_ref if self.t_ref is not None else 0.0

    def power(self, t):
        x = t - self._ref()
        p = self.base_w
        for s in self.sines:
            p += s["amp_w"] * math.sin(2 * math.pi * s["freq_hz"] * x + s["phase"])
        if self.square:
            q = self.square
            y = (x - q["phase_s"]) % q["period_s"]
            if y < q["duty"] * q["period_s"]:
                p += q["amp_w"]
        return p

    def _square_integral(self, x):
        q = self.square
        y = x - q["phase_s"]
        per = q["period_s"]
        on = q["duty"] * per
        n = math.floor(y / per)
        r = y - n * per
        return q["amp_w"] * (n * on + min(r, on))

    def energy(self, t0, t1):
        """Exact integral of P over [t0, t1] in joules."""
        x0 = t0 - self._ref()
        x1 = t1 - self._ref()
        e = self.base_w * (x1 - x0)
        for s in self.sines:
            w = 2 * math.pi * s["freq_hz"]
            e += s["amp_w"] / w * (math.cos(w * x0 + s["phase"]) - math.cos(w * x1 + s["phase"]))
        if self.square:
            e += self._square_integral(x1) - self._square_integral(x0)
        return e


# ------------------------------------------------------------------------------------
def _write(path, text):
    """Atomic replace: a reader sees the old or the new value, never half of one."""
    d, base = os.path.split(path)
    tmp = os.path.join(d, "." + base + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode("ascii") if not isinstance(text, bytes) else text)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _mkdir(path):
    if not os.path.isdir(path):
        os.makedirs(path)


def _write_board_files(root, model, l4t=None, pmode=None, zones=(), compatible=(), cpus=0,
                       gpu=None, emc=None):
    _mkdir(os.path.join(root, "proc", "device-tree"))
    _write(os.path.join(root, "proc", "device-tree", "model"), model + "\x00")
    if compatible:
        _write(os.path.join(root, "proc", "device-tree", "compatible"),
               "".join(c + "\x00" for c in compatible))
    if l4t:
        _mkdir(os.path.join(root, "etc"))
        _write(os.path.join(root, "etc", "nv_tegra_release"), l4t + "\n")
    if pmode is not None:
        _mkdir(os.path.join(root, "var", "lib", "nvpmodel"))
        _write(os.path.join(root, "var", "lib", "nvpmodel", "status"), "pmode:%04d\n" % pmode)
    for i, (ztype, temp_c, passive_c) in enumerate(zones):
        z = os.path.join(root, "sys", "class", "thermal", "thermal_zone%d" % i)
        _mkdir(z)
        _write(os.path.join(z, "type"), ztype + "\n")
        _write(os.path.join(z, "temp"), "%d\n" % int(temp_c * 1000))
        if passive_c is not None:
            _write(os.path.join(z, "trip_point_0_type"), "passive\n")
            _write(os.path.join(z, "trip_point_0_temp"), "%d\n" % int(passive_c * 1000))
            _write(os.path.join(z, "trip_point_1_type"), "critical\n")
            _write(os.path.join(z, "trip_point_1_temp"), "%d\n" % int((passive_c + 5) * 1000))
    set_clocks(root, cpus=cpus, gpu=gpu, emc=emc)


def set_clocks(root, cpus=0, gpu=None, emc=None, cpu_khz=(345600, 2035200, 2035200),
               gpu_hz=(114750000, 1300500000, 1300500000), emc_hz=1866000000,
               locked=False):
    """Write cpufreq (kHz: min, max, cur), GPU devfreq (Hz) and the EMC clock files.
    locked: min = max = cur, as ``jetson_clocks`` leaves them."""
    lo, hi, cur = cpu_khz
    if locked:
        lo = hi = cur
    for c in range(cpus):
        d = os.path.join(root, "sys", "devices", "system", "cpu", "cpu%d" % c, "cpufreq")
        _mkdir(d)
        _write(os.path.join(d, "scaling_min_freq"), "%d\n" % lo)
        _write(os.path.join(d, "scaling_max_freq"), "%d\n" % hi)
        _write(os.path.join(d, "scaling_cur_freq"), "%d\n" % cur)
    if gpu:
        g_lo, g_hi, g_cur = gpu_hz
        if locked:
            g_lo = g_hi = g_cur
        d = os.path.join(root, "sys", "class", "devfreq", gpu)
        _mkdir(d)
        _write(os.path.join(d, "min_freq"), "%d\n" % g_lo)
        _write(os.path.join(d, "max_freq"), "%d\n" % g_hi)
        _write(os.path.join(d, "cur_freq"), "%d\n" % g_cur)
    if emc:
        f = os.path.join(root, emc)
        _mkdir(os.path.dirname(f))
        _write(f, "%d\n" % emc_hz)


def set_zone_temp(root, index, temp_c):
    """Change an emulated thermal zone's temperature (e.g. to trigger throttling)."""
    _write(os.path.join(root, "sys", "class", "thermal", "thermal_zone%d" % index, "temp"),
           "%d\n" % int(temp_c * 1000))


class TreeWriter(object):
    """Builds a layout under root and rewrites its values for a power P (watts).

    refresh_s: the sensor refresh period the tree declares (polling_delay_<k> on
    iio, update_interval on hwmon); None: the layout's default (0.42 s for INA3221
    trees); 0: declare none (values are instantaneous).  carrier: the TX2 developer
    kit's carrier INA3221s (0x42, 0x43) are present (default True)."""

    def __init__(self, root, layout, max_range_uj=262143328850.0, hwmon_mv=5000,
                 refresh_s=None, carrier=True):
        if layout not in LAYOUTS:
            raise ValueError("layout must be one of %s" % ", ".join(LAYOUTS))
        self.root = root
        self.layout = layout
        self.max_range_uj = float(max_range_uj)
        self.hwmon_mv = int(hwmon_mv)
        spec = BOARD_FILES.get(layout, {})
        self.refresh_s = spec.get("refresh") if refresh_s is None else (refresh_s or None)
        self.carrier = carrier
        self.rails = []  # (name, fraction, kind, paths...)
        self.rapl_offset_uj = 1.0e6  # counters do not start at zero
        self._build()

    def _devices(self):
        spec = BOARD_FILES[self.layout]
        devs = spec["devices"]
        if self.layout == "tx2" and not self.carrier:
            devs = TX2_RAILS
        return devs

    def _build(self):
        root = self.root
        if self.layout == "rapl":
            self._build_rapl()
            return
        spec = BOARD_FILES[self.layout]
        _write_board_files(root, spec["model"], spec["l4t"], pmode=0, zones=spec["zones"],
                           compatible=spec["compatible"], cpus=spec["cpus"], gpu=spec["gpu"],
                           emc=spec["emc"])
        ms = "%d\n" % int(round(self.refresh_s * 1000)) if self.refresh_s else None
        if spec["driver"] == "iio":
            for addr, dev, rails in self._devices():
                d = os.path.join(root, "sys", "bus", "i2c", "drivers", "ina3221x", addr, dev)
                _mkdir(d)
                _write(os.path.join(d, "name"), "ina3221x\n")
                for k, (name, frac) in enumerate(rails):
                    mv = 19000 if name == "VDD_IN" else 5000
                    _write(os.path.join(d, "rail_name_%d" % k), name + "\n")
                    _write(os.path.join(d, "in_voltage%d_input" % k), "%d\n" % mv)
                    _write(os.path.join(d, "crit_current_limit_%d" % k), "4000\n")
                    _write(os.path.join(d, "warn_current_limit_%d" % k), "3000\n")
                    if ms:
                        _write(os.path.join(d, "polling_delay_%d" % k), ms)
                    self.rails.append((name, frac, "iio",
                                       os.path.join(d, "in_power%d_input" % k),
                                       os.path.join(d, "in_current%d_input" % k), mv))
            return
        for addr, hw, rails in self._devices():
            d = os.path.join(root, "sys", "bus", "i2c", "drivers", "ina3221", addr, "hwmon", hw)
            _mkdir(d)
            _write(os.path.join(d, "name"), "ina3221\n")
            if ms:
                _write(os.path.join(d, "update_interval"), ms)
            for k, (name, frac) in enumerate(rails, 1):
                _write(os.path.join(d, "in%d_label" % k), name + "\n")
                _write(os.path.join(d, "in%d_input" % (k + 3)), "12\n")  # shunt mV
                _write(os.path.join(d, "curr%d_crit" % k), "5000\n")
                self.rails.append((name, frac, "hwmon", os.path.join(d, "in%d_input" % k),
                                   os.path.join(d, "curr%d_input" % k), self.hwmon_mv))
            _write(os.path.join(d, "in7_label"), "sum of shunt voltages\n")
            _write(os.path.join(d, "in7_input"), "40\n")
            self.rails.append(("sum", None, "hwmon-sum", os.path.join(d, "curr4_input")))
        if self.layout == "thor":
            addr, hw, frac = THOR_INA238
            d = os.path.join(root, "sys", "bus", "i2c", "drivers", "ina238", addr, "hwmon", hw)
            _mkdir(d)
            _write(os.path.join(d, "name"), "ina238\n")
            self.rails.append(("VIN", frac, "ina238", os.path.join(d, "power1_input"),
                               os.path.join(d, "in1_input"), os.path.join(d, "curr1_input"),
                               19000))

    def _build_rapl(self):
        root = self.root
        _write_board_files(root, "Emulated x86 host")
        base = os.path.join(root, "sys", "devices", "virtual", "powercap", "intel-rapl")
        cls = os.path.join(root, "sys", "class", "powercap")
        _mkdir(base)
        _mkdir(cls)
        _write(os.path.join(base, "enabled"), "1\n")
        if not os.path.lexists(os.path.join(cls, "intel-rapl")):
            os.symlink(os.path.relpath(base, cls), os.path.join(cls, "intel-rapl"))
        for key, name, frac in RAPL_ZONES:
            zid = "intel-rapl:" + ":".join(str(k) for k in key)
            if len(key) == 1:
                d = os.path.join(base, zid)
            else:
                d = os.path.join(base, "intel-rapl:%d" % key[0], zid)
            _mkdir(d)
            _write(os.path.join(d, "name"), name + "\n")
            _write(os.path.join(d, "max_energy_range_uj"), "%d\n" % int(self.max_range_uj))
            link = os.path.join(cls, zid)
            if not os.path.lexists(link):
                os.symlink(os.path.relpath(d, cls), link)
            self.rails.append((name, frac, "rapl", os.path.join(d, "energy_uj")))

    def rail_powers(self, p):
        """{rail: watts} for a module power p (what a correct reader should see)."""
        return dict((r[0], p * r[1]) for r in self.rails if r[1] is not None)

    def write_power(self, p, energy_j=None):
        """Write every rail for module power p (W); rapl needs the cumulative
        energy_j of the waveform instead."""
        for r in self.rails:
            frac, kind = r[1], r[2]
            if kind == "iio":
                mw = p * frac * 1000.0
                _write(r[3], "%d\n" % int(round(mw)))
                _write(r[4], "%d\n" % int(round(mw * 1000.0 / r[5])))
            elif kind == "hwmon":
                if frac is None:
                    mv, ma = NC_POWER_MV_MA
                else:
                    mv = r[5]
                    ma = p * frac * 1.0e6 / mv
                _write(r[3], "%d\n" % int(round(mv)))
                _write(r[4], "%d\n" % int(round(ma)))
            elif kind == "hwmon-sum":
                _write(r[3], "%d\n" % int(round(p * 1.0e6 / self.hwmon_mv)))
            elif kind == "ina238":
                _write(r[3], "%d\n" % int(round(p * frac * 1.0e6)))
                _write(r[4], "%d\n" % r[6])
                _write(r[5], "%d\n" % int(round(p * frac * 1.0e6 / r[6])))
            elif kind == "rapl":
                if energy_j is None:
                    raise ValueError("rapl layout needs the cumulative energy")
                uj = (self.rapl_offset_uj + energy_j * frac * 1.0e6) % self.max_range_uj
                _write(r[3], "%d\n" % int(uj))


def build_tree(root, layout, power_w=5.0, tools=False, max_range_uj=262143328850.0,
               refresh_s=None, carrier=True, tegrastats_style=None):
    """Create a static tree (every rail at its share of power_w).  With tools, also
    the stand-in tegrastats, nvpmodel and trtexec.  Returns the writer."""
    w = TreeWriter(root, layout, max_range_uj=max_range_uj, refresh_s=refresh_s,
                   carrier=carrier)
    w.write_power(power_w, energy_j=0.0)
    if tools:
        write_fake_tools(root, layout, style=tegrastats_style)
    return w


# ------------------------------------------------------------------------------------
def run_writer(root, layout, waveform, rate_hz=200.0, duration=None, ready=None,
               max_range_uj=262143328850.0, priority=10, refresh_s=None, carrier=True):
    """Loop: rewrite the tree, and save the effective waveform (t_ref fixed at the
    start when not given) as ``<root>/waveform.json``.

    Sensor trees (INA3221 layouts; refresh_s None = the layout's 0.42 s, or a given
    period) publish every refresh_s the **mean** power over the period that just
    ended, as the INA3221's averaging does; refresh_s=0, RAPL and Thor write P(now)
    every 1/rate_hz seconds."""
    if priority:
        try:
            os.nice(-priority)  # a starved writer would lag behind its own waveform
        except (OSError, AttributeError):
            pass
    writer = TreeWriter(root, layout, max_range_uj=max_range_uj, refresh_s=refresh_s,
                        carrier=carrier)
    sensor = writer.refresh_s if layout != "rapl" else None
    if waveform.t_ref is None:
        waveform.t_ref = time.monotonic()
    t_start = waveform.t_ref
    with open(os.path.join(root, ".waveform.json.tmp"), "w") as f:
        json.dump(dict(waveform.to_dict(), layout=layout, rate_hz=rate_hz,
                       refresh_s=sensor, writer_pid=os.getpid()), f)
    os.replace(os.path.join(root, ".waveform.json.tmp"), os.path.join(root, "waveform.json"))
    period = sensor or 1.0 / rate_hz
    first = True
    next_tick = time.monotonic()
    end = None if duration is None else next_tick + duration
    log_fd = os.open(os.path.join(root, PRESENTED_LOG),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    rec = array.array("d", [0.0, 0.0, 0.0, 0.0])
    last = None
    while True:
        now = time.monotonic()
        if end is not None and now >= end:
            break
        e = waveform.energy(t_start, now)
        if sensor and last is not None and now > last:
            p = waveform.energy(last, now) / (now - last)  # the sensor's average
            start = last
        else:
            p = waveform.power(now)
            start = now if sensor else (last if last is not None else now)
        writer.write_power(p, energy_j=e)
        # what the tree shows from now on: (time visible, power, energy, period start)
        rec[0], rec[1], rec[2], rec[3] = time.monotonic(), p, e, start
        os.write(log_fd, rec.tobytes())
        last = now
        if first and ready:
            _write(ready, "%f\n" % now)
            first = False
        next_tick += period
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_tick = time.monotonic()


def start_writer(root, layout, waveform, rate_hz=200.0, duration=None, python=None,
                 max_range_uj=None, timeout=20.0, refresh_s=None, carrier=True, detach=False):
    """Start the writer as a separate process and wait until it has written once.
    Returns (Popen, Waveform with t_ref set).  Stop it with ``stop_writer``.
    refresh_s: see run_writer (None: the layout's real sensor rate).  detach: in its own
    session (process group = its PID), output to ``<root>/writer.log``, so it outlives
    the caller and its terminal."""
    if isinstance(waveform, dict):
        waveform = Waveform(waveform)
    if waveform.t_ref is None:
        waveform.t_ref = time.monotonic()
    ready = os.path.join(root, ".writer-ready")
    if os.path.exists(ready):
        os.unlink(ready)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [python or sys.executable, "-m", "device_agents.emulate", "run", "--root", root,
           "--layout", layout, "--waveform", json.dumps(waveform.to_dict()),
           "--rate-hz", str(rate_hz), "--ready", ready]
    if duration is not None:
        cmd += ["--duration", str(duration)]
    if max_range_uj is not None:
        cmd += ["--max-range-uj", str(max_range_uj)]
    if refresh_s is not None:
        cmd += ["--refresh-s", str(refresh_s)]
    if not carrier:
        cmd += ["--no-carrier"]
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if detach:
        _mkdir(root)
        with open(os.path.join(root, "writer.log"), "ab") as log:
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    else:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not os.path.exists(ready):
        if proc.poll() is not None:
            raise RuntimeError("waveform writer exited with %s" % proc.returncode)
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError("waveform writer not ready after %.0f s" % timeout)
        time.sleep(0.01)
    return proc, waveform


def stop_writer(proc):
    from .sources import stop_process

    stop_process(proc, 5)


def read_presented(root, periods=False):
    """The writer's log: lists (times, watts, cumulative joules) of what the tree
    showed, each value visible from its time until the next one; with periods, also
    the start of the period each value stands for (a sensor's average)."""
    with open(os.path.join(root, PRESENTED_LOG), "rb") as f:
        data = f.read()
    arr = array.array("d")
    arr.frombytes(data[:len(data) - len(data) % 32])
    out = (list(arr[0::4]), list(arr[1::4]), list(arr[2::4]))
    return out + (list(arr[3::4]),) if periods else out


def _sensor_tree(root):
    try:
        with open(os.path.join(root, "waveform.json")) as f:
            return bool(json.load(f).get("refresh_s"))
    except (OSError, IOError, ValueError):
        return False


def presented_energy(root, t0, t1, log=None):
    """Exact energy over [t0, t1] of what the tree's values stand for, as a perfect
    reader would integrate it: on a sensor tree each value is the mean power over the
    period before it appeared; otherwise a step function through the updates.
    Differs from the analytic waveform by the writer's own delays and, on a sensor
    tree, by how the power moved inside the periods cut by t0 and t1."""
    import bisect
    if log is None or len(log) < 4:
        log = read_presented(root, periods=True)
    ts, ps, _, starts = log
    if _sensor_tree(root):
        # value i stands for [starts[i], starts[i + 1]] (the sensor's averaging period)
        if not ts or ts[0] > t0 or ts[-1] < t1:
            raise ValueError("the writer log does not cover the window")
        e = 0.0
        i = max(0, bisect.bisect_left(ts, t0) - 1)
        while i < len(ts) and starts[i] < t1:
            end = starts[i + 1] if i + 1 < len(ts) else ts[i]
            a, b = max(starts[i], t0), min(end, t1)
            if b > a:
                e += ps[i] * (b - a)
            i += 1
        return e
    if not ts or ts[0] > t0:
        raise ValueError("the writer log does not cover the window")
    i = bisect.bisect_right(ts, t0) - 1
    e = 0.0
    t = t0
    while t < t1:
        nxt = ts[i + 1] if i + 1 < len(ts) else t1
        seg_end = min(nxt, t1)
        e += ps[i] * (seg_end - t)
        t = seg_end
        i += 1
    return e


def writer_lag(root, waveform=None, log=None):
    """How late the writer published its values: (p50, p99, max) of the gaps
    between consecutive updates, in seconds (the reader sees a value at most that
    old)."""
    ts = (log or read_presented(root))[0]
    gaps = sorted(b - a for a, b in zip(ts, ts[1:]))
    if not gaps:
        return None
    return (gaps[len(gaps) // 2], gaps[min(len(gaps) - 1, int(0.99 * len(gaps)))], gaps[-1])


# ------------------------------------------------------------------------------------
_FAKE_TEGRASTATS = r'''#!{python}
# Stand-in for tegrastats: prints the emulated tree's rails in the {style} format.
import glob, os, sys, time
root = {root!r}
interval = 1.0
args = sys.argv[1:]
for i, a in enumerate(args):
    if a == "--interval" and i + 1 < len(args):
        interval = float(args[i + 1]) / 1000.0
def rails():
    out = []
    for dev in sorted(glob.glob(os.path.join(root, "sys/bus/i2c/drivers/ina3221x/*/iio:device*"))):
        if dev.split(os.sep)[-2][-4:] in ("0042", "0043"):
            continue  # the devkit's carrier monitors: tegrastats does not print them
        ks = sorted(int(p.rsplit("_", 1)[1]) for p in glob.glob(os.path.join(dev, "rail_name_*")))
        for k in ks:
            name = open(os.path.join(dev, "rail_name_%d" % k)).read().strip()
            try:
                mw = int(open(os.path.join(dev, "in_power%d_input" % k)).read())
            except (OSError, ValueError):
                continue
            out.append((name, mw))
    for dev in sorted(glob.glob(os.path.join(root, "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"))):
        for k in (1, 2, 3):
            try:
                name = open(os.path.join(dev, "in%d_label" % k)).read().strip()
                mv = int(open(os.path.join(dev, "in%d_input" % k)).read())
                ma = int(open(os.path.join(dev, "curr%d_input" % k)).read())
            except (OSError, ValueError):
                continue
            out.append((name, 0 if name == "NC" else mv * ma // 1000))
    for dev in sorted(glob.glob(os.path.join(root, "sys/bus/i2c/drivers/ina238/*/hwmon/hwmon*"))):
        try:
            out.insert(0, ("VIN", int(open(os.path.join(dev, "power1_input")).read()) // 1000))
        except (OSError, ValueError):
            continue
    return out
sums = {{}}
peaks = {{}}
n = 0
while True:
    n += 1
    parts = []
    for name, mw in rails():
        sums[name] = sums.get(name, 0) + mw
        peaks[name] = max(peaks.get(name, 0), mw)
        avg = sums[name] // n
        peak = peaks[name]
        parts.append({fmt})
    line = ("RAM 2123/7852MB (lfb 1206x4MB) SWAP 0/3926MB (cached 0MB) "
            "CPU [2%@345,off,off,1%@345,0%@345,0%@345] EMC_FREQ 0% GR3D_FREQ 0% "
            "PLL@38C MCPU@38C PMIC@100C Tboard@33C GPU@36C BCPU@38C thermal@37.1C "
            + " ".join(parts))
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        break
    time.sleep(interval)
'''

_FAKE_NVPMODEL = r'''#!{python}
import sys
if "-q" in sys.argv:
    print("NV Fan Mode:quiet")
    print("NV Power Mode: MAXN")
    print("0")
'''

_FAKE_TRTEXEC = r'''#!{python}
# Stand-in for TensorRT 8.2's trtexec: builds a dummy "engine" and prints timing like
# trtexec does, sleeping for the asked duration ({latency_ms} ms per query).
import json, os, sys, time
opts = {{}}
for a in sys.argv[1:]:
    if a.startswith("--") and "=" in a:
        k, v = a[2:].split("=", 1)
        opts[k] = v
    elif a.startswith("--"):
        opts[a[2:]] = ""
def log(msg):
    sys.stdout.write("[11/21/2023-09:52:01] [I] " + msg + "\n")
    sys.stdout.flush()
print("&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # " + " ".join(sys.argv))
if "help" in opts:
    print("=== Model Options ===")
    sys.exit(0)
lat = {latency_ms}
if "onnx" in opts:
    data = open(opts["onnx"], "rb").read()
    if not data.startswith(b"\x08"):
        sys.stdout.write("[11/21/2023-09:52:01] [E] [TRT] ModelImporter.cpp:720: "
                         "Failed to parse ONNX model from file: " + opts["onnx"] + "\n")
        sys.stdout.write("[11/21/2023-09:52:01] [E] Failed to parse onnx file\n")
        print("&&&& FAILED TensorRT.trtexec [TensorRT v8201] # " + " ".join(sys.argv))
        sys.exit(1)
    log("Engine built in 1.2 sec.")
    if "saveEngine" in opts:
        open(opts["saveEngine"], "wb").write(b"ENGINE" + data[:64])
    sys.exit(0)
if "loadEngine" in opts:
    if not open(opts["loadEngine"], "rb").read().startswith(b"ENGINE"):
        sys.stdout.write("[11/21/2023-09:52:01] [E] Error opening engine file\n")
        print("&&&& FAILED TensorRT.trtexec [TensorRT v8201] # " + " ".join(sys.argv))
        sys.exit(1)
warm = float(opts.get("warmUp", "200"))
dur = float(opts.get("duration", "3"))
log("Engine loaded in 0.1 sec.")
log("Starting inference")
t0 = time.monotonic()
trace = []
while True:
    s = (time.monotonic() - t0) * 1000.0
    time.sleep(lat / 1000.0)
    e = (time.monotonic() - t0) * 1000.0
    if s >= warm:
        trace.append({{"startEnqMs": s, "endEnqMs": s + 0.1, "startH2dMs": s, "endH2dMs": s + 0.05,
                      "startComputeMs": s + 0.05, "endComputeMs": e - 0.02,
                      "startD2hMs": e - 0.02, "endD2hMs": e, "h2dMs": 0.05,
                      "computeMs": e - s - 0.07, "d2hMs": 0.02, "latencyMs": e - s,
                      "endToEndMs": e - s}})
    if e >= warm + dur * 1000.0:
        break
nw = int(warm / lat)
wall = (trace[-1]["endD2hMs"] - trace[0]["startEnqMs"]) / 1000.0
log("Warmup completed %d queries over %d ms" % (nw, int(warm)))
log("Timing trace has %d queries over %.5f s" % (len(trace), wall))
log("")
log("=== Trace details ===")
lats = sorted(t["latencyMs"] for t in trace)
comp = sorted(t["computeMs"] for t in trace)
def st(v):
    return "min = %g ms, max = %g ms, mean = %g ms, median = %g ms, percentile(99%%) = %g ms" % (
        v[0], v[-1], sum(v) / len(v), v[len(v) // 2], v[min(len(v) - 1, int(0.99 * len(v)))])
log("=== Performance summary ===")
log("Throughput: %g qps" % (len(trace) / wall))
log("Latency: " + st(lats))
log("End-to-End Host Latency: " + st(lats))
log("Enqueue Time: min = 0.1 ms, max = 0.1 ms, mean = 0.1 ms, median = 0.1 ms, percentile(99%) = 0.1 ms")
log("H2D Latency: min = 0.05 ms, max = 0.05 ms, mean = 0.05 ms, median = 0.05 ms, percentile(99%) = 0.05 ms")
log("GPU Compute Time: " + st(comp))
log("D2H Latency: min = 0.02 ms, max = 0.02 ms, mean = 0.02 ms, median = 0.02 ms, percentile(99%) = 0.02 ms")
log("Total Host Walltime: %g s" % wall)
log("Total GPU Compute Time: %g s" % (sum(comp) / 1000.0))
log("Explanations of the performance metrics are printed in the verbose logs.")
if "exportTimes" in opts:
    with open(opts["exportTimes"], "w") as f:
        json.dump(trace, f)
print("&&&& PASSED TensorRT.trtexec [TensorRT v8201] # " + " ".join(sys.argv))
'''


def _script(path, text):
    _mkdir(os.path.dirname(path))
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


#: tegrastats rail formats, as printed by the releases (see tests/device_agents/fixtures/):
#: jp4 "VDD_IN 1649/1649" (L4T 32), jp5 "VDD_IN 2171mW/2171mW" (L4T 34/35),
#: jp6 "VDD_GPU_SOC 5139mW/5139mW/5139mW" (three values, newer releases and
#: Thor, whose input is "VIN").
TEGRASTATS_FORMATS = {
    "jp4": '"%s %d/%d" % (name, mw, avg)',
    "jp5": '"%s %dmW/%dmW" % (name, mw, avg)',
    "jp6": '"%s %dmW/%dmW/%dmW" % (name, mw, avg, peak)',
}
DEFAULT_TEGRASTATS_STYLE = {"tx2": "jp4", "nano": "jp4", "agx-xavier": "jp4", "orin": "jp5",
                            "orin-nx": "jp5", "thor": "jp6"}


def write_fake_tools(root, layout="tx2", python=None, trtexec_latency_ms=5.0, style=None):
    """Stand-ins for tegrastats (usr/bin), nvpmodel (usr/sbin) and trtexec
    (usr/src/tensorrt/bin) under root.  tegrastats prints the tree's current rails
    in ``style`` (TEGRASTATS_FORMATS; default: the layout's release)."""
    py = python or sys.executable
    style = style or DEFAULT_TEGRASTATS_STYLE.get(layout, "jp5")
    if style not in TEGRASTATS_FORMATS:
        raise ValueError("tegrastats style must be one of %s" % ", ".join(TEGRASTATS_FORMATS))
    _script(os.path.join(root, "usr", "bin", "tegrastats"),
            _FAKE_TEGRASTATS.format(python=py, root=os.path.abspath(root),
                                    fmt=TEGRASTATS_FORMATS[style], style=style))
    _script(os.path.join(root, "usr", "sbin", "nvpmodel"), _FAKE_NVPMODEL.format(python=py))
    _script(os.path.join(root, "usr", "src", "tensorrt", "bin", "trtexec"),
            _FAKE_TRTEXEC.format(python=py, latency_ms=float(trtexec_latency_ms)))


# ------------------------------------------------------------------------------------
def main(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m device_agents emulate",
                                description="Emulated board trees for testing the agent.")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True
    b = sub.add_parser("build", help="create a static tree")
    b.add_argument("--root", required=True)
    b.add_argument("--layout", required=True, choices=LAYOUTS)
    b.add_argument("--power-w", type=float, default=5.0)
    b.add_argument("--tools", action="store_true",
                   help="also write stand-in tegrastats, nvpmodel and trtexec")
    r = sub.add_parser("run", help="make the rails follow a waveform")
    r.add_argument("--root", required=True)
    r.add_argument("--layout", required=True, choices=LAYOUTS)
    r.add_argument("--waveform", default="{}",
                   help="JSON: base_w, sines [{amp_w,freq_hz,phase}], square "
                        "{amp_w,period_s,duty,phase_s}, t_ref")
    r.add_argument("--rate-hz", type=float, default=200.0)
    r.add_argument("--duration", type=float, default=None)
    r.add_argument("--ready", default=None, help="file created after the first write")
    r.add_argument("--max-range-uj", type=float, default=262143328850.0)
    for q in (b, r):
        q.add_argument("--refresh-s", type=float, default=None,
                       help="sensor refresh period the tree declares and (run) follows; "
                            "default the layout's (0.42 s for INA3221); 0 = instantaneous")
        q.add_argument("--no-carrier", action="store_true",
                       help="tx2: leave out the developer kit's carrier INA3221s")
    b.add_argument("--tegrastats-style", default=None, choices=sorted(TEGRASTATS_FORMATS))
    args = p.parse_args(argv)
    _mkdir(args.root)
    if args.cmd == "build":
        build_tree(args.root, args.layout, args.power_w, tools=args.tools,
                   refresh_s=args.refresh_s, carrier=not args.no_carrier,
                   tegrastats_style=args.tegrastats_style)
        return 0
    try:
        run_writer(args.root, args.layout, Waveform(json.loads(args.waveform)),
                   rate_hz=args.rate_hz, duration=args.duration, ready=args.ready,
                   max_range_uj=args.max_range_uj, refresh_s=args.refresh_s,
                   carrier=not args.no_carrier)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
