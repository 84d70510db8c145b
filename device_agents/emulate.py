"""Emulated boards: recorded sysfs trees in the real layouts, a writer process that
makes the power rails follow a known waveform, and stand-ins for board tools.

The agent reads an emulated tree through exactly the code it uses on a board; only
``--fs-root`` differs.  Layouts:

* ``tx2``: JetPack 4 ``ina3221x`` iio, devices ``0-0040`` (VDD_SYS_GPU, VDD_SYS_SOC,
  VDD_4V0_WIFI) and ``0-0041`` (VDD_IN, VDD_SYS_CPU, VDD_SYS_DDR), mW;
* ``orin``: JetPack 5+ ``ina3221`` hwmon as on an AGX Orin (no input rail: the total
  is the sum), with NC channels and the sum channel, mV and mA;
* ``orin-nx``: the same driver with VDD_IN (Orin NX / Nano);
* ``rapl``: Intel powercap zones with ``energy_uj`` counters that wrap at
  ``max_energy_range_uj``.

The writer updates values by writing a temporary file and renaming it over the
attribute, so a reader never sees a torn value (as with real sysfs).  The waveform is
a function of the system-wide monotonic clock, so another process can compute the
exact energy over any window it timed itself.

Command line::

    python3 -m device_agents emulate build --root DIR --layout tx2 [--tools]
    python3 -m device_agents emulate run --root DIR --layout tx2 \\
        --waveform '{"base_w": 6, "sines": [{"amp_w": 1, "freq_hz": 0.5}]}' \\
        [--rate-hz 200] [--duration S] [--ready FILE]
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

LAYOUTS = ("tx2", "orin", "orin-nx", "rapl")

#: rail -> fraction of the waveform's power (VDD_IN is the waveform itself).  The
#: TX2 sub-rails deliberately do not add up to VDD_IN (regulator losses, other
#: loads), so a reader summing them instead of taking VDD_IN is caught.
TX2_RAILS = (
    ("0-0040", "iio:device0", (("VDD_SYS_GPU", 0.25), ("VDD_SYS_SOC", 0.15),
                               ("VDD_4V0_WIFI", 0.02))),
    ("0-0041", "iio:device1", (("VDD_IN", 1.0), ("VDD_SYS_CPU", 0.20),
                               ("VDD_SYS_DDR", 0.10))),
)

#: AGX Orin style: the connected rails add up to the waveform; NC channels carry
#: values that would spoil the total if they were not skipped.
ORIN_RAILS = (
    ("1-0040", "hwmon3", (("VDD_GPU_SOC", 0.40), ("VDD_CPU_CV", 0.20),
                          ("VIN_SYS_5V0", 0.30))),
    ("1-0041", "hwmon4", (("NC", None), ("VDDQ_VDD2_1V8AO", 0.10), ("NC", None))),
)

ORIN_NX_RAILS = (
    ("1-0040", "hwmon1", (("VDD_IN", 1.0), ("VDD_CPU_GPU_CV", 0.35), ("VDD_SOC", 0.25))),
)

#: zone path parts -> (name, fraction); the total (package + dram) is the waveform.
RAPL_ZONES = (
    ((0,), "package-0", 0.80),
    ((0, 0), "core", 0.50),
    ((0, 1), "uncore", 0.05),
    ((0, 2), "dram", 0.20),
)

NC_POWER_MV_MA = (1000, 700)

#: Binary log of every write: (monotonic time it became visible, watts, cumulative J).
PRESENTED_LOG = "writer-log.f64"  # what a not-connected channel reads in the emulation


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


def _write_board_files(root, model, l4t=None, pmode=None, zones=()):
    _mkdir(os.path.join(root, "proc", "device-tree"))
    _write(os.path.join(root, "proc", "device-tree", "model"), model + "\x00")
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


def set_zone_temp(root, index, temp_c):
    """Change an emulated thermal zone's temperature (e.g. to trigger throttling)."""
    _write(os.path.join(root, "sys", "class", "thermal", "thermal_zone%d" % index, "temp"),
           "%d\n" % int(temp_c * 1000))


class TreeWriter(object):
    """Builds a layout under root and rewrites its values for a power P (watts)."""

    def __init__(self, root, layout, max_range_uj=262143328850.0, hwmon_mv=5000):
        if layout not in LAYOUTS:
            raise ValueError("layout must be one of %s" % ", ".join(LAYOUTS))
        self.root = root
        self.layout = layout
        self.max_range_uj = float(max_range_uj)
        self.hwmon_mv = int(hwmon_mv)
        self.rails = []  # (name, fraction, kind, paths...)
        self.rapl_offset_uj = 1.0e6  # counters do not start at zero
        self._build()

    def _build(self):
        root = self.root
        if self.layout == "tx2":
            _write_board_files(root, "quill",
                               "# R32 (release), REVISION: 6.1, GCID: 27863751, "
                               "BOARD: t186ref, EABI: aarch64, DATE: Mon Jul 26 19:36:31 UTC 2021",
                               pmode=0,
                               zones=(("BCPU-therm", 36.5, 96.0), ("MCPU-therm", 36.0, 96.0),
                                      ("GPU-therm", 35.0, 96.0), ("PLL-therm", 34.5, None),
                                      ("Tboard_tegra", 33.0, None), ("Tdiode_tegra", 34.0, None),
                                      ("PMIC-Die", 100.0, None), ("thermal-fan-est", 35.0, None)))
            for addr, dev, rails in TX2_RAILS:
                d = os.path.join(root, "sys", "bus", "i2c", "drivers", "ina3221x", addr, dev)
                _mkdir(d)
                _write(os.path.join(d, "name"), "ina3221x\n")
                for k, (name, frac) in enumerate(rails):
                    _write(os.path.join(d, "rail_name_%d" % k), name + "\n")
                    _write(os.path.join(d, "in_voltage%d_input" % k), "19000\n" if name == "VDD_IN" else "5000\n")
                    _write(os.path.join(d, "crit_current_limit_%d" % k), "4000\n")
                    _write(os.path.join(d, "warn_current_limit_%d" % k), "3000\n")
                    self.rails.append((name, frac, "iio",
                                       os.path.join(d, "in_power%d_input" % k),
                                       os.path.join(d, "in_current%d_input" % k),
                                       19000 if name == "VDD_IN" else 5000))
        elif self.layout in ("orin", "orin-nx"):
            _write_board_files(root, "NVIDIA Jetson AGX Orin Developer Kit" if self.layout == "orin"
                               else "NVIDIA Orin NX Developer Kit",
                               "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, "
                               "EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023",
                               pmode=0, zones=(("CPU-therm", 40.0, 99.0), ("GPU-therm", 39.0, 99.0),
                                               ("tj-therm", 41.0, 99.0)))
            spec = ORIN_RAILS if self.layout == "orin" else ORIN_NX_RAILS
            for addr, hw, rails in spec:
                d = os.path.join(root, "sys", "bus", "i2c", "drivers", "ina3221", addr, "hwmon", hw)
                _mkdir(d)
                _write(os.path.join(d, "name"), "ina3221\n")
                for k, (name, frac) in enumerate(rails, 1):
                    _write(os.path.join(d, "in%d_label" % k), name + "\n")
                    _write(os.path.join(d, "in%d_input" % (k + 3)), "12\n")  # shunt mV
                    _write(os.path.join(d, "curr%d_crit" % k), "5000\n")
                    self.rails.append((name, frac, "hwmon", os.path.join(d, "in%d_input" % k),
                                       os.path.join(d, "curr%d_input" % k), self.hwmon_mv))
                _write(os.path.join(d, "in7_label"), "sum of shunt voltages\n")
                _write(os.path.join(d, "in7_input"), "40\n")
                self.rails.append(("sum", None, "hwmon-sum", os.path.join(d, "curr4_input")))
        elif self.layout == "rapl":
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
        """{rail: watts} for a board total p (what a correct reader should see)."""
        return dict((r[0], p * r[1]) for r in self.rails if r[1] is not None)

    def write_power(self, p, energy_j=None):
        """Write every rail for total power p (W); rapl needs the cumulative
        energy_j of the waveform instead."""
        for r in self.rails:
            name, frac, kind = r[0], r[1], r[2]
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
            elif kind == "rapl":
                if energy_j is None:
                    raise ValueError("rapl layout needs the cumulative energy")
                uj = (self.rapl_offset_uj + energy_j * frac * 1.0e6) % self.max_range_uj
                _write(r[3], "%d\n" % int(uj))


def build_tree(root, layout, power_w=5.0, tools=False, max_range_uj=262143328850.0):
    """Create a static tree (every rail at its share of power_w).  With tools, also
    the stand-in tegrastats, nvpmodel and trtexec (tx2 paths).  Returns the writer."""
    w = TreeWriter(root, layout, max_range_uj=max_range_uj)
    w.write_power(power_w, energy_j=0.0)
    if tools:
        write_fake_tools(root, layout)
    return w


# ------------------------------------------------------------------------------------
def run_writer(root, layout, waveform, rate_hz=200.0, duration=None, ready=None,
               max_range_uj=262143328850.0, priority=10):
    """Loop: rewrite the tree for P(now) every 1/rate_hz seconds.  The waveform's
    t_ref is fixed at the start when not given, and the effective waveform is saved
    as ``<root>/waveform.json``."""
    if priority:
        try:
            os.nice(-priority)  # a starved writer would lag behind its own waveform
        except (OSError, AttributeError):
            pass
    writer = TreeWriter(root, layout, max_range_uj=max_range_uj)
    if waveform.t_ref is None:
        waveform.t_ref = time.monotonic()
    t_start = waveform.t_ref
    with open(os.path.join(root, ".waveform.json.tmp"), "w") as f:
        json.dump(dict(waveform.to_dict(), layout=layout, rate_hz=rate_hz,
                       writer_pid=os.getpid()), f)
    os.replace(os.path.join(root, ".waveform.json.tmp"), os.path.join(root, "waveform.json"))
    period = 1.0 / rate_hz
    first = True
    next_tick = time.monotonic()
    end = None if duration is None else next_tick + duration
    log_fd = os.open(os.path.join(root, PRESENTED_LOG),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    rec = array.array("d", [0.0, 0.0, 0.0])
    while True:
        now = time.monotonic()
        if end is not None and now >= end:
            break
        p = waveform.power(now)
        e = waveform.energy(t_start, now)
        writer.write_power(p, energy_j=e)
        # what the tree shows from now on: (time it became visible, power, energy)
        rec[0], rec[1], rec[2] = time.monotonic(), p, e
        os.write(log_fd, rec.tobytes())
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
                 max_range_uj=None, timeout=20.0):
    """Start the writer as a separate process and wait until it has written once.
    Returns (Popen, Waveform with t_ref set).  Stop it with ``stop_writer``."""
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
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
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


def read_presented(root):
    """The writer's log: lists (times, watts, cumulative joules) of what the tree
    showed, each value visible from its time until the next one."""
    with open(os.path.join(root, PRESENTED_LOG), "rb") as f:
        data = f.read()
    arr = array.array("d")
    arr.frombytes(data[:len(data) - len(data) % 24])
    return list(arr[0::3]), list(arr[1::3]), list(arr[2::3])


def presented_energy(root, t0, t1, log=None):
    """Exact energy over [t0, t1] of the power the tree actually showed (a step
    function through the writer's updates), as a perfect reader would integrate it.
    Differs from the analytic waveform only by the writer's own delays."""
    ts, ps, _ = log or read_presented(root)
    if not ts or ts[0] > t0:
        raise ValueError("the writer log does not cover the window")
    import bisect
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
    ts, _, _ = log or read_presented(root)
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
            if name != "NC":
                out.append((name, mv * ma // 1000))
    return out
sums = {{}}
n = 0
while True:
    n += 1
    parts = []
    for name, mw in rails():
        sums[name] = sums.get(name, 0) + mw
        avg = sums[name] // n
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
        sys.stdout.write("[11/21/2023-09:52:01] [E] [TRT] ModelImporter.cpp:720: Failed to parse ONNX model from file: " + opts["onnx"] + "\n")
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


def write_fake_tools(root, layout="tx2", python=None, trtexec_latency_ms=5.0):
    """Stand-ins for tegrastats (usr/bin), nvpmodel (usr/sbin) and trtexec
    (usr/src/tensorrt/bin) under root.  tegrastats prints the tree's current rails:
    the JetPack 4 format ("VDD_IN 1649/1649") for iio trees and the JetPack 5 format
    ("VDD_IN 2171mW/2171mW") for hwmon trees."""
    py = python or sys.executable
    jp4 = layout == "tx2"
    fmt = ('"%s %d/%d" % (name, mw, avg)' if jp4 else '"%s %dmW/%dmW" % (name, mw, avg)')
    _script(os.path.join(root, "usr", "bin", "tegrastats"),
            _FAKE_TEGRASTATS.format(python=py, root=os.path.abspath(root), fmt=fmt,
                                    style="JetPack 4" if jp4 else "JetPack 5"))
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
    args = p.parse_args(argv)
    _mkdir(args.root)
    if args.cmd == "build":
        build_tree(args.root, args.layout, args.power_w, tools=args.tools)
        return 0
    try:
        run_writer(args.root, args.layout, Waveform(json.loads(args.waveform)),
                   rate_hz=args.rate_hz, duration=args.duration, ready=args.ready,
                   max_range_uj=args.max_range_uj)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
