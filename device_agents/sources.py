"""Power sources: each one reads rails by name from a filesystem rooted at fs_root.

Every path is built under ``fs_root`` (``/`` on a board), so each reader runs
unchanged on a recorded or emulated tree.  Two kinds of source exist:

* ``kind == "power"``: ``read()`` returns instantaneous power per rail in watts
  (INA3221 iio and hwmon, tegrastats);
* ``kind == "energy"``: ``read()`` returns a cumulative, unwrapped energy counter per
  rail in joules (Intel RAPL, NVML).

A rail that cannot be read in a sample is NaN in that sample: "not measured", never
zero.  ``total_of(values)`` gives the board total: the input rail (``VDD_IN``, or
``POM_5V_IN`` on a Nano) where present, else the sum of the rails that make the total.
"""

import ctypes
import glob
import os
import re
import select
import subprocess
import time

from .errors import AgentError

NAN = float("nan")

#: Rail names that measure the whole board's input: used as the total when present.
TOTAL_RAIL_NAMES = ("VDD_IN", "POM_5V_IN")

#: Input-rail names used when the board model is not in boards.TABLES.
GENERIC_INPUTS = ("VDD_IN", "POM_5V_IN", "VIN", "5V_IN")

#: Sources whose total follows the board's rail table (boards.py).
JETSON_SOURCES = ("iio", "hwmon", "tegrastats")

#: Order in which ``--power auto`` tries the sources.
SOURCE_NAMES = ("iio", "hwmon", "tegrastats", "rapl", "nvml", "none")

IIO_GLOB = "sys/bus/i2c/drivers/ina3221x/*/iio:device*"
HWMON_GLOB = "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"
INA238_GLOB = "sys/bus/i2c/drivers/ina238/*/hwmon/hwmon*"
RAPL_GLOB = "sys/class/powercap/intel-rapl:*"
TEGRASTATS_PATHS = ("usr/bin/tegrastats",)


class Unavailable(Exception):
    """A source that is not present or not readable here (the message says why)."""


def under(fs_root, rel):
    """Path of ``/rel`` when ``fs_root`` stands in for ``/``."""
    return os.path.join(fs_root or "/", rel.lstrip("/"))


def read_text(path):
    with open(path, "r") as f:
        return f.read().strip().strip("\x00").strip()


def read_number(path):
    """One number from a sysfs-style file, opened afresh each time.

    Opening per read is what a real sysfs attribute needs to give a fresh value and
    what an emulated tree written by rename needs too.  Raises OSError/ValueError.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, 64)
    finally:
        os.close(fd)
    return float(data)


def _ms_file(path):
    """A period in milliseconds from a sysfs file (``polling_delay_<k>``,
    ``update_interval``), in seconds; None when absent, unreadable or not positive."""
    try:
        v = read_number(path)
    except (OSError, IOError, ValueError):
        return None
    return v / 1000.0 if v > 0 else None


def _suffix_int(path, prefix, suffix=""):
    base = os.path.basename(path)
    core = base[len(prefix):len(base) - len(suffix)] if suffix else base[len(prefix):]
    try:
        return int(core)
    except ValueError:
        return None


def _unique(names):
    """Make rail names unique by suffixing repeats with #2, #3..."""
    seen = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            out.append("%s#%d" % (n, seen[n]))
        else:
            seen[n] = 1
            out.append(n)
    return out


def is_nc_label(label):
    """True for not-connected channels ("NC", "NC1", "VDD_NC"...)."""
    tokens = [t for t in re.split(r"[^A-Za-z0-9]+", label.upper()) if t]
    return any(t == "NC" or re.match(r"^NC\d*$", t) for t in tokens)


def stop_process(proc, timeout):
    """Terminate a child process, killing it if it does not exit within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Total(object):
    """The total chosen from a rail table: one rail (by name) or a sum of rails (by
    index), the boundary it covers in words, and the warning when it is incomplete."""

    def __init__(self, boundary, rail=None, members=None, complete=True, warning=None):
        self.boundary = boundary
        self.rail = rail
        self.members = members
        self.complete = complete
        self.warning = warning


class PowerSource(object):
    """Base class.  Subclasses fill ``rails`` (names, in read() order)."""

    name = "base"
    kind = "power"
    blocking = False  # read() blocks until its own next sample (stream sources)

    def __init__(self):
        self.rails = []
        self.total_rail = None  # rail used as total, or None: sum of total_members
        self.total_members = None  # indices summed when total_rail is None (None: all)
        self.details = {}
        self.devices = []  # per rail: the i2c device ("0-0041") it is read from, or None
        self.rail_refresh = []  # per rail: the sensor's own refresh period (s), or None
        self.board = None  # boards.BoardTable applied, or None
        self.boundary = None  # what the total measures, in words
        self.total_complete = True  # False: the total misses part of the boundary
        self.carrier_members = None  # indices of the carrier rails (own boundary)
        self.carrier_rail = None  # the carrier's input rail (its total)
        self.warnings = []  # found while choosing the total
        self.refresh_override = None  # --sensor-refresh-ms (s; 0 = treat as instantaneous)

    # --- life cycle -----------------------------------------------------------------
    def open(self):
        """Prepare for reads (start a process, check readability)."""

    def read(self):
        """One sample: list of floats aligned with rails (NaN where unreadable), or
        None when a stream source has ended."""
        raise NotImplementedError

    def close(self):
        """Release what open() took."""

    def interrupt(self):
        """Make a blocked read() return None soon (stream sources)."""

    # --- totals ---------------------------------------------------------------------
    def _finish_totals(self):
        self.total_rail = None
        self.total_members = None
        for cand in TOTAL_RAIL_NAMES:
            if cand in self.rails:
                self.total_rail = cand
                return

    def apply_board(self, table, selected=None):
        """Choose the total from the board's rail table (see boards.py): the module
        input rail, or the documented sum of parallel rails; carrier rails form their
        own boundary.  A missing input rail gives the sum of the module rails found,
        flagged incomplete with a warning naming the boundary used.  ``selected``:
        the rails kept by --rails (their sum, unless the input rail is among them)."""
        carrier = self._carrier_indices(table)
        module = [i for i in range(len(self.rails)) if i not in carrier]
        names = dict((self.rails[i], i) for i in module)
        if selected is not None:
            total = self._selected_total(table, module, names)
        elif table is None:
            total = self._generic_total(module, names)
        else:
            total = self._table_total(table, module, names)
        self.board = table
        self.total_rail = total.rail
        self.total_members = total.members
        self.boundary = total.boundary
        self.total_complete = total.complete
        self.warnings = [total.warning] if total.warning else []
        self.carrier_members = carrier or None
        self.carrier_rail = (table.carrier_total if carrier and table.carrier_total
                             and table.carrier_total in self.rails else None)

    def _carrier_indices(self, table):
        """Indices of the rails on the developer kit's carrier board, known by name or
        by the i2c address of their sensor (the same labels appear on both boards)."""
        if table is None:
            return []
        devs = self.devices if len(self.devices) == len(self.rails) else [None] * len(self.rails)
        carrier = []
        for i, (r, d) in enumerate(zip(self.rails, devs)):
            base = r.split("#")[0]
            if base in table.carrier or (d and any(d.endswith("-" + a) or d.endswith(a)
                                                   for a in table.carrier_addrs)):
                carrier.append(i)
        return carrier

    def _sum_label(self, idx, empty):
        """``A+B+C`` for the rails at idx, ``empty`` for none."""
        return "+".join(self.rails[i] for i in idx) or empty

    def _selected_total(self, table, module, names):
        """--rails: the input rail if kept, else the sum of the kept module rails."""
        if table is None:
            want = [(n,) for n in GENERIC_INPUTS]
            inputs = want
        else:
            want = table.total
            inputs = want[:1] if table.input_rail else []
        for alts in inputs:
            for a in alts:
                if a in names:
                    return _Total(table.boundary if table is not None else "input rail %s" % a,
                                  rail=a)
        found = [names[n] for alts in want for n in alts if n in names]
        if table is not None and not table.input_rail and len(found) == len(want):
            return _Total(table.boundary, members=found)
        return _Total("rails chosen with --rails: sum of %s" % self._sum_label(module, "nothing"),
                      members=module, complete=False)

    def _generic_total(self, module, names):
        """A board model not in the rail tables: a well-known input rail, else the sum
        of everything read (which may count nested rails twice, hence the warning)."""
        for a in GENERIC_INPUTS:
            if a in names:
                return _Total("input rail %s (board model not in the rail tables)" % a, rail=a)
        boundary = ("sum of every rail read (%s): board model not in the rail tables, so "
                    "nested rails may be counted twice or the input missed"
                    % self._sum_label(module, ""))
        return _Total(boundary, members=module, complete=False,
                      warning="board model unknown and no input rail: the total is the %s"
                      % boundary)

    def _table_total(self, table, module, names):
        """The table's total where every rail of it was found; else a partial total."""
        found = []
        missing = []
        for alts in table.total:
            hit = [a for a in alts if a in names]
            if hit:
                found.append(names[hit[0]])
            else:
                missing.append("|".join(alts))
        if not missing:
            if table.input_rail and len(found) == 1:
                return _Total(table.boundary, rail=self.rails[found[0]])
            return _Total(table.boundary, members=found)
        # never a silent sum of sub-rails: say what the total now covers
        if table.input_rail:
            members = list(module)
            boundary = ("partial: sum of module sub-rails %s (the input rail %s of the %s is "
                        "missing)" % (self._sum_label(members, "none"), ", ".join(missing),
                                      table.name))
        else:
            members = found
            boundary = ("partial: %s without %s (%s)" % (
                self._sum_label(found, "nothing"), ", ".join(missing), table.name))
        return _Total(boundary, members=members, complete=False,
                      warning="rail %s missing on %s: the total is the %s; it is not the "
                      "module's energy (--require-energy fails on this)"
                      % (", ".join(missing), table.name, boundary))

    def carrier_of(self, values):
        """The carrier board's total of one sample (its input rail), or None."""
        if self.carrier_rail is None:
            return None
        return values[self.rails.index(self.carrier_rail)]

    def refresh_s(self):
        """The sensor's refresh period (s) for the total's rails, None when unknown
        (read each sample as an instantaneous value)."""
        if self.refresh_override is not None:
            return self.refresh_override or None
        if len(self.rail_refresh) != len(self.rails):
            return None
        idx = ([self.rails.index(self.total_rail)] if self.total_rail is not None
               else (self.total_members if self.total_members is not None
                     else range(len(self.rails))))
        vals = [self.rail_refresh[i] for i in idx if self.rail_refresh[i]]
        return max(vals) if vals else None

    def total_index(self):
        return self.rails.index(self.total_rail) if self.total_rail else None

    def total_of(self, values):
        """Board total of one sample (NaN if a needed rail is NaN)."""
        if self.total_rail is not None:
            return values[self.rails.index(self.total_rail)]
        idx = self.total_members if self.total_members is not None else range(len(values))
        total = 0.0
        for i in idx:
            total += values[i]  # NaN propagates
        return total

    def total_label(self):
        if self.total_rail is not None:
            return self.total_rail
        if self.total_members is not None and len(self.total_members) != len(self.rails):
            return "sum(" + ",".join(self.rails[i] for i in self.total_members) + ")"
        return "sum"

    def restrict(self, wanted):
        """Keep only the named rails; raise AgentError listing what exists if one is
        missing.  The total becomes the input rail if kept, else the sum of those kept."""
        missing = [w for w in wanted if w not in self.rails]
        if missing:
            raise AgentError(
                "no_power_source",
                "power source %r has no rail(s) %s; rails found: %s"
                % (self.name, ", ".join(missing), ", ".join(self.rails) or "none"))
        keep = [self.rails.index(w) for w in wanted]
        self._keep(keep)
        self.rails = [self.rails[i] for i in keep]
        if len(self.devices) > max(keep):
            self.devices = [self.devices[i] for i in keep]
        if len(self.rail_refresh) > max(keep):
            self.rail_refresh = [self.rail_refresh[i] for i in keep]
        self._finish_totals()
        if self.name in JETSON_SOURCES:
            self.apply_board(self.board, selected=list(wanted))

    def _keep(self, indices):
        raise NotImplementedError

    def describe(self):
        d = {"name": self.name, "kind": self.kind, "rails": list(self.rails),
             "total": self.total_label()}
        d.update(self.details)
        if self.name in JETSON_SOURCES:
            d["boundary"] = self.boundary
            d["total_complete"] = self.total_complete
            d["board"] = self.board.describe() if self.board is not None else None
            if self.carrier_members:
                d["carrier"] = {"rails": [self.rails[i] for i in self.carrier_members],
                                "total": self.carrier_rail}
            d["refresh_s"] = self.refresh_s()
            if len(self.rail_refresh) == len(self.rails):
                d["rail_refresh_s"] = dict(zip(self.rails, self.rail_refresh))
        return d


# ------------------------------------------------------------------------------------
# Jetson TX2 / JetPack 4: ina3221x iio driver, power in mW
# ------------------------------------------------------------------------------------
class IioInaSource(PowerSource):
    """``/sys/bus/i2c/drivers/ina3221x/<bus-addr>/iio:device<N>/`` with
    ``rail_name_<k>`` and ``in_power<k>_input`` (mW)."""

    name = "iio"
    kind = "power"

    def __init__(self, fs_root="/"):
        PowerSource.__init__(self)
        devices = sorted(glob.glob(under(fs_root, IIO_GLOB)))
        if not devices:
            raise Unavailable("no ina3221x iio device under %s" % under(fs_root, IIO_GLOB))
        names = []
        files = []
        skipped = []
        addrs = []
        refresh = []
        for dev in devices:
            addr = os.path.basename(os.path.dirname(dev))
            entries = []
            for rn in glob.glob(os.path.join(dev, "rail_name_*")):
                k = _suffix_int(rn, "rail_name_")
                if k is None:
                    continue
                entries.append((k, rn))
            for k, rn in sorted(entries):
                try:
                    label = read_text(rn)
                except (OSError, IOError) as e:
                    skipped.append("%s: %s" % (rn, e))
                    continue
                pfile = os.path.join(dev, "in_power%d_input" % k)
                if not os.path.exists(pfile):
                    skipped.append("%s (%s): no in_power%d_input" % (label, addr, k))
                    continue
                names.append(label)
                files.append(pfile)
                addrs.append(addr)
                refresh.append(_ms_file(os.path.join(dev, "polling_delay_%d" % k)))
        if not names:
            raise Unavailable("ina3221x iio devices found but no readable rail (%s)"
                              % "; ".join(skipped))
        self.rails = _unique(names)
        self.files = files
        self.devices = addrs
        self.rail_refresh = refresh
        self.details = {"devices": [os.path.relpath(d, fs_root or "/") for d in devices]}
        if skipped:
            self.details["skipped"] = skipped
        self._finish_totals()

    def _keep(self, indices):
        self.files = [self.files[i] for i in indices]

    def read(self):
        out = []
        for f in self.files:
            try:
                out.append(read_number(f) / 1000.0)
            except (OSError, IOError, ValueError):
                out.append(NAN)
        return out


# ------------------------------------------------------------------------------------
# JetPack 5+: ina3221 hwmon driver, mV x mA
# ------------------------------------------------------------------------------------
class HwmonInaSource(PowerSource):
    """``/sys/bus/i2c/drivers/ina3221/<bus-addr>/hwmon/hwmon<N>/`` with
    ``in<k>_label``, ``in<k>_input`` (mV) and ``curr<k>_input`` (mA).  Channels
    labelled NC and the sum channel are skipped.  The refresh period is the device's
    ``update_interval`` (ms).

    Also ``/sys/bus/i2c/drivers/ina238/<bus-addr>/hwmon/hwmon<N>/`` (Jetson Thor's
    input monitor): ``power1_input`` in uW (else ``in1_input`` x ``curr1_input``),
    named by ``in1_label`` when the driver gives one, else ``VIN``."""

    name = "hwmon"
    kind = "power"

    def __init__(self, fs_root="/"):
        PowerSource.__init__(self)
        devices = sorted(glob.glob(under(fs_root, HWMON_GLOB)))
        ina238 = sorted(glob.glob(under(fs_root, INA238_GLOB)))
        if not devices and not ina238:
            raise Unavailable("no ina3221 or ina238 hwmon device under %s"
                              % under(fs_root, "sys/bus/i2c/drivers"))
        names = []
        pairs = []
        skipped = []
        addrs = []
        refresh = []
        for dev in devices:
            addr = os.path.basename(os.path.dirname(os.path.dirname(dev)))
            interval = _ms_file(os.path.join(dev, "update_interval"))
            entries = []
            for lab in glob.glob(os.path.join(dev, "in*_label")):
                k = _suffix_int(lab, "in", "_label")
                if k is not None:
                    entries.append((k, lab))
            for k, lab in sorted(entries):
                try:
                    label = read_text(lab)
                except (OSError, IOError) as e:
                    skipped.append("%s: %s" % (lab, e))
                    continue
                if is_nc_label(label):
                    skipped.append("%s (not connected)" % label)
                    continue
                if "sum" in label.lower():
                    skipped.append("%s (sum channel)" % label)
                    continue
                vfile = os.path.join(dev, "in%d_input" % k)
                cfile = os.path.join(dev, "curr%d_input" % k)
                if not (os.path.exists(vfile) and os.path.exists(cfile)):
                    skipped.append("%s: no in%d_input/curr%d_input" % (label, k, k))
                    continue
                names.append(label)
                pairs.append((vfile, cfile))
                addrs.append(addr)
                refresh.append(interval)
        for dev in ina238:
            addr = os.path.basename(os.path.dirname(os.path.dirname(dev)))
            try:
                label = read_text(os.path.join(dev, "in1_label"))
            except (OSError, IOError):
                label = "VIN"  # the driver has no labels; on a Jetson Thor it is the input
            pfile = os.path.join(dev, "power1_input")
            vfile = os.path.join(dev, "in1_input")
            cfile = os.path.join(dev, "curr1_input")
            if os.path.exists(pfile):
                pairs.append((pfile, None))
            elif os.path.exists(vfile) and os.path.exists(cfile):
                pairs.append((vfile, cfile))
            else:
                skipped.append("ina238 %s: no power1_input nor in1_input/curr1_input" % addr)
                continue
            names.append(label)
            addrs.append(addr)
            refresh.append(_ms_file(os.path.join(dev, "update_interval")))
        if not names:
            raise Unavailable("ina3221/ina238 hwmon devices found but no usable rail (%s)"
                              % "; ".join(skipped))
        self.rails = _unique(names)
        self.pairs = pairs
        self.devices = addrs
        self.rail_refresh = refresh
        self.details = {"devices": [os.path.relpath(d, fs_root or "/")
                                    for d in devices + ina238]}
        if skipped:
            self.details["skipped"] = skipped
        self._finish_totals()

    def _keep(self, indices):
        self.pairs = [self.pairs[i] for i in indices]

    def read(self):
        out = []
        for a, b in self.pairs:
            try:
                if b is None:
                    out.append(read_number(a) / 1.0e6)  # ina238 power1_input: uW
                else:
                    out.append(read_number(a) * read_number(b) / 1.0e6)
            except (OSError, IOError, ValueError):
                out.append(NAN)
        return out


# ------------------------------------------------------------------------------------
# tegrastats output lines
# ------------------------------------------------------------------------------------
# "VDD_IN 1649/1649" (JetPack 4) and "VDD_IN 2171mW/2171mW" (JetPack 5+): a rail name,
# the current value and the running average, both in mW.
# Newer releases print three values ("VDD_GPU_SOC 5139mW/5139mW/5139mW"; the first is
# the current value, the others running figures); Thor prints its input as "VIN".
_TEGRA_RAIL = re.compile(
    r"(?:^|\s)([A-Za-z0-9][A-Za-z0-9_]*)\s+(\d+)(?:mW)?/(\d+)(?:mW)?"
    r"(?:/(\d+)(?:mW)?)?(?=\s|$)")


def parse_tegrastats_line(line):
    """Ordered list of (rail, current_mW) pairs found in one tegrastats line; NC
    (not connected) channels are left out."""
    out = []
    for m in _TEGRA_RAIL.finditer(line):
        name = m.group(1)
        if name.upper() in ("RAM", "SWAP", "IRAM", "LFB") or is_nc_label(name):
            continue
        out.append((name, float(m.group(2))))
    return out


class LineReader(object):
    """Line reader over a pipe file descriptor with an optional timeout."""

    def __init__(self, fd):
        self.fd = fd
        self.buf = b""
        self.eof = False

    def readline(self, timeout=None):
        """Next line (bytes without newline), None at end of stream, or raise
        Unavailable on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line = self.buf[:nl]
                self.buf = self.buf[nl + 1:]
                return line
            if self.eof:
                if self.buf:
                    line, self.buf = self.buf, b""
                    return line
                return None
            wait = None
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise Unavailable("no output within %.1f s" % timeout)
            ready, _, _ = select.select([self.fd], [], [], wait)
            if not ready:
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.eof = True
            else:
                self.buf += chunk


def find_tool(fs_root, rel_paths, name=None):
    """Path of a board tool: under fs_root, or on PATH when fs_root is ``/``."""
    for rel in rel_paths:
        p = under(fs_root, rel)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    if name and (fs_root in (None, "", "/")):
        from shutil import which
        p = which(name)
        if p:
            return p
    return None


class TegrastatsSource(PowerSource):
    """Runs ``tegrastats --interval MS`` and parses its rail figures (mW).

    Each line is timestamped on arrival; read() blocks until the next line."""

    name = "tegrastats"
    kind = "power"
    blocking = True

    def __init__(self, fs_root="/", interval_s=0.01, exe=None, first_line_timeout=5.0):
        PowerSource.__init__(self)
        self.exe = exe or find_tool(fs_root, TEGRASTATS_PATHS, "tegrastats")
        if not self.exe:
            raise Unavailable("tegrastats not found (looked for %s)"
                              % ", ".join(under(fs_root, p) for p in TEGRASTATS_PATHS))
        self.interval_ms = max(1, int(round(interval_s * 1000)))
        self.first_line_timeout = first_line_timeout
        self.proc = None
        self.reader = None
        self.details = {"executable": self.exe, "interval_ms": self.interval_ms}
        self._pending = None
        # Discover the rails from a first line, then stop: open() restarts it.
        self.open()
        try:
            line = self._next_line(self.first_line_timeout)
            pairs = parse_tegrastats_line(line or "")
            if not pairs:
                raise Unavailable("tegrastats printed no rail figures: %r" % (line,))
            self.rails = _unique([n for n, _ in pairs])
            self._finish_totals()
        finally:
            self.close()
        self.rail_refresh = self._sysfs_refresh(fs_root)

    def _sysfs_refresh(self, fs_root):
        """tegrastats reads the same INA3221s: take each rail's refresh period from
        sysfs where readable (by rail name), so its values are placed in time alike."""
        known = {}
        for cls in (IioInaSource, HwmonInaSource):
            try:
                src = cls(fs_root)
            except (Unavailable, OSError, IOError):
                continue
            for r, p in zip(src.rails, src.rail_refresh):
                known.setdefault(r, p)
        return [known.get(r) for r in self.rails]

    def _keep(self, indices):
        pass  # read() maps values to self.rails by name

    def open(self):
        try:
            self.proc = subprocess.Popen(
                [self.exe, "--interval", str(self.interval_ms)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        except OSError as e:
            raise Unavailable("cannot start %s: %s" % (self.exe, e))
        self.reader = LineReader(self.proc.stdout.fileno())

    def _next_line(self, timeout=None):
        """The next line with rail figures; with a timeout, the whole search is
        bounded (a tool printing lines without rails must not hang discovery)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Unavailable("tegrastats printed no line with rail figures within "
                                  "%.1f s" % timeout)
            raw = self.reader.readline(left)
            if raw is None:
                return None
            line = raw.decode("utf-8", "replace")
            if parse_tegrastats_line(line):
                return line

    def read(self):
        if self.reader is None:
            return None
        line = self._next_line()
        if line is None:
            return None
        pairs = parse_tegrastats_line(line)
        vals = dict(zip(_unique([n for n, _ in pairs]), [v for _, v in pairs]))
        out = []
        for r in self.rails:
            v = vals.get(r)
            out.append(NAN if v is None else v / 1000.0)
        return out

    def interrupt(self):
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()  # its stdout then ends and read() returns None

    def close(self):
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc, 2.0)
            if proc.stdout is not None:
                proc.stdout.close()
        self.reader = None


# ------------------------------------------------------------------------------------
# Intel RAPL energy counters
# ------------------------------------------------------------------------------------
class RaplSource(PowerSource):
    """``/sys/class/powercap/intel-rapl:*`` zones: ``name``, ``energy_uj`` and
    ``max_energy_range_uj`` (the counter wraps to 0 past it).

    The total is ``psys`` when present (the whole platform), else the packages plus
    their ``dram`` sub-zones (a package's energy excludes its DRAM).  An unreadable
    counter is NaN ("no energy"), never zero."""

    name = "rapl"
    kind = "energy"

    def __init__(self, fs_root="/"):
        PowerSource.__init__(self)
        zones = []
        unreadable = []
        for z in glob.glob(under(fs_root, RAPL_GLOB)):
            zid = os.path.basename(z)[len("intel-rapl:"):]
            parts = zid.split(":")
            try:
                key = tuple(int(p) for p in parts)
            except ValueError:
                continue
            efile = os.path.join(z, "energy_uj")
            if not os.path.exists(efile):
                continue
            try:
                zname = read_text(os.path.join(z, "name"))
            except (OSError, IOError):
                zname = "zone-" + zid
            try:
                max_range = read_number(os.path.join(z, "max_energy_range_uj"))
            except (OSError, IOError, ValueError):
                max_range = None
            try:
                read_number(efile)
            except (OSError, IOError, ValueError) as e:
                unreadable.append("%s (%s): %s" % (zname, zid, e.__class__.__name__))
                continue
            zones.append((key, zname, efile, max_range))
        if not zones:
            if unreadable:
                raise Unavailable(
                    "RAPL energy_uj not readable (%s); on Linux >= 5.10 it is root-only"
                    % "; ".join(sorted(unreadable)))
            raise Unavailable("no RAPL zone under %s" % under(fs_root, RAPL_GLOB))
        zones.sort()
        top_names = {}
        for key, zname, _, _ in zones:
            if len(key) == 1:
                top_names[key[0]] = zname
        names = []
        for key, zname, _, _ in zones:
            if len(key) == 1:
                names.append(zname)
            else:
                names.append("%s/%s" % (top_names.get(key[0], "zone-%d" % key[0]), zname))
        self.rails = _unique(names)
        self.files = [z[2] for z in zones]
        self.max_ranges = [z[3] for z in zones]
        self.keys = [z[0] for z in zones]
        self.znames = [z[1] for z in zones]
        if unreadable:
            self.details["unreadable"] = sorted(unreadable)
        self._finish_totals()

    def _finish_totals(self):
        self.total_rail = None
        self.total_members = None
        psys = [i for i, n in enumerate(self.znames) if n == "psys"]
        if psys:
            self.total_rail = self.rails[psys[0]]
            return
        members = [i for i, k in enumerate(self.keys)
                   if len(k) == 1 or self.znames[i] == "dram"]
        self.total_members = members or None

    def _keep(self, indices):
        self.files = [self.files[i] for i in indices]
        self.max_ranges = [self.max_ranges[i] for i in indices]
        self.keys = [self.keys[i] for i in indices]
        self.znames = [self.znames[i] for i in indices]

    def open(self):
        self._last = [None] * len(self.files)
        self._offset = [0.0] * len(self.files)
        self.wraps = [0] * len(self.files)
        self._lost = [False] * len(self.files)

    def read(self):
        out = []
        for i, f in enumerate(self.files):
            if self._lost[i]:
                out.append(NAN)
                continue
            try:
                raw = read_number(f)
            except (OSError, IOError, ValueError):
                out.append(NAN)
                continue
            last = self._last[i]
            if last is not None and raw < last:
                rng = self.max_ranges[i]
                if rng is None or rng <= 0:
                    # Cannot unwrap without the range: every later value is off by an unknown
                    # amount, so the counter stays unknown (NaN) rather than splice across the gap.
                    self._lost[i] = True
                    out.append(NAN)
                    continue
                self._offset[i] += rng
                self.wraps[i] += 1
            self._last[i] = raw
            out.append((raw + self._offset[i]) / 1.0e6)
        return out



# ------------------------------------------------------------------------------------
# NVML total energy counter, through ctypes (no pip package needed)
# ------------------------------------------------------------------------------------
class NvmlSource(PowerSource):
    """``nvmlDeviceGetTotalEnergyConsumption`` (mJ since driver load) per GPU."""

    name = "nvml"
    kind = "energy"

    def __init__(self, lib_path=None):
        PowerSource.__init__(self)
        path = lib_path or os.environ.get("DANCE_AGENT_NVML_LIB") or "libnvidia-ml.so.1"
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise Unavailable("NVML library not loadable (%s): %s" % (path, e))
        self.lib = lib
        self.path = path
        init = getattr(lib, "nvmlInit_v2", None) or getattr(lib, "nvmlInit", None)
        if init is None:
            raise Unavailable("%s has no nvmlInit" % path)
        rc = init()
        if rc != 0:
            raise Unavailable("nvmlInit failed: %s" % self._err(rc))
        self._initialised = True
        count = ctypes.c_uint(0)
        getcount = getattr(lib, "nvmlDeviceGetCount_v2", None) or lib.nvmlDeviceGetCount
        rc = getcount(ctypes.byref(count))
        if rc != 0 or count.value == 0:
            self._shutdown()
            raise Unavailable("NVML sees no GPU (%s)" % (self._err(rc) if rc else "count 0"))
        gethandle = (getattr(lib, "nvmlDeviceGetHandleByIndex_v2", None)
                     or lib.nvmlDeviceGetHandleByIndex)
        self._energy = lib.nvmlDeviceGetTotalEnergyConsumption
        self.handles = []
        names = []
        gpu_names = []
        problems = []
        for i in range(count.value):
            h = ctypes.c_void_p()
            rc = gethandle(ctypes.c_uint(i), ctypes.byref(h))
            if rc != 0:
                problems.append("GPU%d: %s" % (i, self._err(rc)))
                continue
            e = ctypes.c_ulonglong(0)
            rc = self._energy(h, ctypes.byref(e))
            if rc != 0:
                problems.append("GPU%d: total energy counter: %s" % (i, self._err(rc)))
                continue
            buf = ctypes.create_string_buffer(96)
            if lib.nvmlDeviceGetName(h, buf, ctypes.c_uint(96)) == 0:
                gpu_names.append(buf.value.decode("utf-8", "replace"))
            else:
                gpu_names.append("")
            self.handles.append(h)
            names.append("GPU%d" % i)
        if not self.handles:
            self._shutdown()
            raise Unavailable("no GPU with an NVML energy counter (%s)" % "; ".join(problems))
        self.rails = names
        self.details = {"library": path, "gpus": gpu_names}
        if problems:
            self.details["skipped"] = problems
        self.total_rail = None
        self.total_members = None

    def _err(self, rc):
        try:
            f = self.lib.nvmlErrorString
            f.restype = ctypes.c_char_p
            return "%s (%d)" % (f(rc).decode("utf-8", "replace"), rc)
        except Exception:  # noqa: BLE001 - any failure here only loses the text
            return "error %d" % rc

    def _keep(self, indices):
        self.handles = [self.handles[i] for i in indices]

    def _finish_totals(self):
        self.total_rail = None
        self.total_members = None

    def read(self):
        out = []
        for h in self.handles:
            e = ctypes.c_ulonglong(0)
            if self._energy(h, ctypes.byref(e)) == 0:
                out.append(e.value / 1000.0)
            else:
                out.append(NAN)
        return out

    def _shutdown(self):
        if getattr(self, "_initialised", False):
            try:
                self.lib.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass
            self._initialised = False

    def close(self):
        # NVML stays initialised for the process; a second open() reuses handles.
        pass


# ------------------------------------------------------------------------------------
# composite (RAPL + NVML on a host) and none
# ------------------------------------------------------------------------------------
class CompositeSource(PowerSource):
    """Several sources of the same kind read together; the total is the sum of their
    totals."""

    def __init__(self, sources):
        PowerSource.__init__(self)
        kinds = set(s.kind for s in sources)
        if len(kinds) != 1:
            raise ValueError("cannot combine sources of different kinds")
        self.kind = kinds.pop()
        self.sources = list(sources)
        self.name = "+".join(s.name for s in sources)
        self.rails = _unique([r for s in sources for r in s.rails])
        self.details = {"parts": [s.describe() for s in sources]}

    def open(self):
        for s in self.sources:
            s.open()

    def close(self):
        for s in self.sources:
            s.close()

    def read(self):
        out = []
        for s in self.sources:
            out.extend(s.read())
        return out

    def total_of(self, values):
        total = 0.0
        pos = 0
        for s in self.sources:
            n = len(s.rails)
            total += s.total_of(values[pos:pos + n])
            pos += n
        return total

    def total_label(self):
        return " + ".join("%s:%s" % (s.name, s.total_label()) for s in self.sources)

    def restrict(self, wanted):
        raise AgentError("usage", "--rails cannot be used with a combined source (%s)"
                         % self.name)


class NullSource(PowerSource):
    """No power measurement: latency only, energy absent (null)."""

    name = "none"
    kind = "none"

    def __init__(self, reason=None):
        PowerSource.__init__(self)
        if reason:
            self.details = {"reason": reason}

    def read(self):
        return []

    def total_of(self, values):
        return NAN

    def total_label(self):
        return None


# ------------------------------------------------------------------------------------
# selection
# ------------------------------------------------------------------------------------
def _make_one(name, fs_root, interval_s, tegrastats=None, nvml_lib=None):
    if name == "iio":
        return IioInaSource(fs_root)
    if name == "hwmon":
        return HwmonInaSource(fs_root)
    if name == "tegrastats":
        return TegrastatsSource(fs_root, interval_s=interval_s, exe=tegrastats)
    if name == "rapl":
        return RaplSource(fs_root)
    if name == "nvml":
        return NvmlSource(nvml_lib)
    if name == "none":
        return NullSource("--power none: latency only")
    raise AgentError("usage", "unknown power source %r (choose from auto, %s, or a "
                     "comma list such as rapl,nvml)" % (name, ", ".join(SOURCE_NAMES)))


def make_source(spec="auto", fs_root="/", interval_s=0.01, rails=None, tegrastats=None,
                nvml_lib=None, require=False, refresh_s=None):
    """Select a power source.

    spec: ``auto``, one of SOURCE_NAMES, or a comma list of energy-counter sources
    (``rapl,nvml``).  auto tries the Jetson sensors first (iio, hwmon, tegrastats),
    then the host counters (RAPL and NVML together when both are readable), else
    ``none``.  A named source that is unavailable raises AgentError
    (no_power_source); so does auto finding nothing when ``require`` is set.

    A Jetson source (iio, hwmon, tegrastats) takes its total from the board's rail
    table (boards.py); when that total misses part of the module (an input rail
    that is not there) and ``require`` is set, AgentError (no_power_source) names
    the boundary.  ``refresh_s`` overrides the sensor refresh period read from sysfs
    (0: treat every sample as an instantaneous value).

    Returns (source, notes): notes lists why each tried source was passed over.
    """
    notes = []
    spec = (spec or "auto").strip()
    if spec == "auto":
        src = None
        for name in ("iio", "hwmon", "tegrastats"):
            try:
                src = _make_one(name, fs_root, interval_s, tegrastats, nvml_lib)
                break
            except Unavailable as e:
                notes.append("%s: %s" % (name, e))
        if src is None:
            host = []
            for name in ("rapl", "nvml"):
                try:
                    host.append(_make_one(name, fs_root, interval_s, tegrastats, nvml_lib))
                except Unavailable as e:
                    notes.append("%s: %s" % (name, e))
            if len(host) == 1:
                src = host[0]
            elif len(host) > 1:
                src = CompositeSource(host)
        if src is None:
            if require:
                raise AgentError("no_power_source",
                                 "no power source found (%s)" % "; ".join(notes))
            src = NullSource("no power source found: " + "; ".join(notes))
    else:
        names = [n.strip() for n in spec.split(",") if n.strip()]
        parts = []
        for name in names:
            try:
                parts.append(_make_one(name, fs_root, interval_s, tegrastats, nvml_lib))
            except Unavailable as e:
                raise AgentError("no_power_source",
                                 "power source %r unavailable: %s" % (name, e))
        if len(parts) == 1:
            src = parts[0]
        else:
            if any(p.kind != "energy" for p in parts):
                raise AgentError("usage", "only energy-counter sources (rapl, nvml) can "
                                 "be combined; got %s" % spec)
            src = CompositeSource(parts)
    if src.name in JETSON_SOURCES:
        from . import boards
        src.apply_board(boards.detect(fs_root))
        src.refresh_override = refresh_s
    if rails:
        if src.kind == "none":
            raise AgentError("no_power_source", "--rails given but no power source (%s)"
                             % src.details.get("reason", ""))
        src.restrict(rails)
    elif require and not src.total_complete:
        raise AgentError("no_power_source", "--require-energy: the total would not be the "
                         "module's energy: %s" % src.boundary)
    return src, notes


def survey(fs_root="/", interval_s=0.1, tegrastats=None, nvml_lib=None):
    """What each power source says on this machine (for ``probe``)."""
    from . import boards
    out = []
    table = boards.detect(fs_root)
    for name in SOURCE_NAMES[:-1]:
        try:
            src = _make_one(name, fs_root, interval_s, tegrastats, nvml_lib)
            if name in JETSON_SOURCES:
                src.apply_board(table)
            d = src.describe()
            if src.warnings:
                d["warnings"] = list(src.warnings)
            d["available"] = True
            out.append(d)
        except Unavailable as e:
            out.append({"name": name, "available": False, "reason": str(e)})
        except AgentError as e:
            out.append({"name": name, "available": False, "reason": e.message})
    return out
