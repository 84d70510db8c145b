"""Background sampling thread on the monotonic clock."""

import array
import bisect
import math
import os
import sys
import threading
import time

try:
    import resource
except ImportError:  # pragma: no cover - not Linux
    resource = None


_GETTID = {"x86_64": 186, "amd64": 186, "aarch64": 178, "arm64": 178, "i386": 224,
           "i686": 224, "armv7l": 224, "armv8l": 224}


def current_tid():
    """Kernel id of the calling thread (Linux), or None."""
    get = getattr(threading, "get_native_id", None)  # Python 3.8+
    if get is not None:
        return get()
    try:
        import ctypes
        import platform
        nr = _GETTID.get(platform.machine().lower())
        if nr is None:
            return None
        return ctypes.CDLL(None, use_errno=True).syscall(nr)
    except Exception:  # noqa: BLE001 - only loses the priority boost
        return None


def raise_thread_priority(nice):
    """Give the calling thread a higher scheduling priority (Linux niceness is per
    thread) so that a busy machine delays its samples less.  Needs root or
    CAP_SYS_NICE; returns the niceness set, or None when not permitted."""
    if not nice or not hasattr(os, "setpriority"):
        return None
    tid = current_tid()
    if not tid:
        return None
    try:
        os.setpriority(os.PRIO_PROCESS, tid, -abs(int(nice)))
        return -abs(int(nice))
    except (OSError, ValueError):
        return None


def thread_cpu_seconds():
    """CPU time of the calling thread (Linux), or None where unknown."""
    if resource is None or not hasattr(resource, "RUSAGE_THREAD"):
        return None
    ru = resource.getrusage(resource.RUSAGE_THREAD)
    return ru.ru_utime + ru.ru_stime


class Sampler(object):
    """Reads a power source every ``interval_s`` in a daemon thread.

    Each sample is stamped with the midpoint of the monotonic times taken just
    before and just after the read.  Values are kept per rail in compact arrays
    (NaN = not read).  Ticks are scheduled on an absolute grid, so a slow read
    delays one sample but does not shift the ones after it; a tick that is
    overrun is skipped and counted in ``missed``.

    A blocking source (tegrastats) paces itself: the thread only waits for its
    next line.
    """

    def __init__(self, source, interval_s=0.01, nice=10):
        if interval_s <= 0:
            raise ValueError("interval must be positive")
        self.source = source
        self.interval_s = float(interval_s)
        self.times = array.array("d")
        self.values = [array.array("d") for _ in source.rails]
        self.read_errors = 0  # samples where at least one rail was unreadable
        self.total = 0  # samples taken (trim() does not lower it)
        self.first_t = None
        self.last_t = None
        self.missed = 0
        self.cpu_s = None
        self.wall_s = None
        self.error = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread = None
        self._started_at = None
        self.nice_request = nice
        self.nice = None  # niceness obtained for the sampling thread (None: default)
        self._trace = None  # open raw trace file (see open_trace)
        self._traced = 0  # rows of the current arrays already written to it
        self.trace_rows = 0

    # ------------------------------------------------------------------------------
    def start(self):
        if self._thread is not None:
            raise RuntimeError("sampler already started")
        self.source.open()
        # a thread waiting for the GIL gets it after at most this long: keep it well
        # under the sampling interval (Python's default is 5 ms)
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch, max(0.0005, self.interval_s / 10.0)))
        self._thread = threading.Thread(target=self._run, name="power-sampler")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self.source.blocking:
            self.source.interrupt()  # unblocks read()
        if self._thread is not None:
            self._thread.join(10.0)
        self.source.close()
        if getattr(self, "_switch", None):
            sys.setswitchinterval(self._switch)
        self.close_trace()

    # --- raw trace ------------------------------------------------------------------
    def open_trace(self, path, header_lines=()):
        """Write every sample to ``path`` as CSV: t_monotonic, t_unix, one column
        per rail, the total (and the carrier's total where there is one).  Rows are
        written when samples are trimmed and at stop(), never from the sampling
        thread, so the trace costs the sampler nothing."""
        f = open(path, "w")
        for line in header_lines:
            f.write("# %s\n" % line)
        cols = ["t_monotonic", "t_unix"] + list(self.source.rails) + ["total"]
        if getattr(self.source, "carrier_rail", None):
            cols.append("carrier_total")
        f.write(",".join(cols) + "\n")
        self._trace = f
        self._traced = 0
        self.trace_rows = 0

    def _flush_trace(self, upto):
        """Write rows [_traced, upto) of the current arrays (lock held)."""
        f = self._trace
        if f is None or upto <= self._traced:
            return
        offset = time.time() - time.monotonic()
        carrier = getattr(self.source, "carrier_rail", None)
        for i in range(self._traced, upto):
            vals = [a[i] for a in self.values]
            row = [repr(self.times[i]), "%.6f" % (self.times[i] + offset)]
            row += ["" if v != v else repr(v) for v in vals]
            tot = self.source.total_of(vals)
            row.append("" if tot != tot else repr(tot))
            if carrier:
                c = self.source.carrier_of(vals)
                row.append("" if c is None or c != c else repr(c))
            f.write(",".join(row) + "\n")
        self.trace_rows += upto - self._traced
        self._traced = upto

    def close_trace(self):
        with self._lock:
            if self._trace is not None:
                self._flush_trace(len(self.times))
                self._trace.close()
                self._trace = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # ------------------------------------------------------------------------------
    def _append(self, t, vals):
        with self._cond:
            bad = False
            for arr, v in zip(self.values, vals):
                if v != v:
                    bad = True
                arr.append(v)
            if bad:
                self.read_errors += 1
            self.times.append(t)
            self.total += 1
            if self.first_t is None:
                self.first_t = t
            self.last_t = t
            self._cond.notify_all()

    def _run(self):
        self.nice = raise_thread_priority(self.nice_request)
        cpu0 = thread_cpu_seconds()
        wall0 = time.monotonic()
        self._started_at = wall0
        try:
            if self.source.blocking:
                while not self._stop.is_set():
                    vals = self.source.read()
                    if vals is None:
                        break
                    self._append(time.monotonic(), vals)
            else:
                period = self.interval_s
                next_tick = time.monotonic()
                while not self._stop.is_set():
                    a = time.monotonic()
                    vals = self.source.read()
                    b = time.monotonic()
                    self._append(0.5 * (a + b), vals)
                    next_tick += period
                    now = time.monotonic()
                    if now > next_tick:
                        skipped = int(math.floor((now - next_tick) / period)) + 1
                        self.missed += skipped
                        next_tick += skipped * period
                    delay = next_tick - now
                    if delay <= 0.05:
                        time.sleep(delay)  # cheaper than Event.wait; stop() waits <= 50 ms
                    else:
                        self._stop.wait(delay)
        except Exception as e:  # noqa: BLE001 - reported in the result, not lost
            if not self._stop.is_set():
                self.error = "%s: %s" % (e.__class__.__name__, e)
        finally:
            cpu1 = thread_cpu_seconds()
            self.wall_s = time.monotonic() - wall0
            if cpu0 is not None and cpu1 is not None:
                self.cpu_s = cpu1 - cpu0
            with self._cond:
                self._cond.notify_all()

    # ------------------------------------------------------------------------------
    def ended_early(self):
        """True when the sampling thread stopped on its own (a stream source ended,
        or a read raised)."""
        return (self._thread is not None and not self._thread.is_alive()
                and not self._stop.is_set())

    def count(self):
        with self._lock:
            return len(self.times)

    def last_time(self):
        with self._lock:
            return self.times[-1] if len(self.times) else None

    def wait_past(self, t, timeout):
        """Block until a sample stamped after ``t`` exists; False on timeout or when
        the sampler has ended."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if len(self.times) and self.times[-1] > t:
                    return True
                if self._thread is None or not self._thread.is_alive():
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))

    def wait_first(self, timeout):
        """Block until the first sample exists (so no window starts before the
        data); False on timeout or when the sampler has ended."""
        return self.wait_past(float("-inf"), timeout)

    def count_between(self, t0, t1):
        with self._lock:
            ts = self.times
            return bisect.bisect_right(ts, t1) - bisect.bisect_left(ts, t0)

    def window(self, t0, t1):
        """(times, [values per rail]) of the samples in [t0, t1] plus one on each
        side (for interpolating the edges), copied."""
        with self._lock:
            ts = self.times
            lo = max(0, bisect.bisect_left(ts, t0) - 1)
            hi = min(len(ts), bisect.bisect_right(ts, t1) + 1)
            return list(ts[lo:hi]), [list(a[lo:hi]) for a in self.values]

    def trim(self, before):
        """Forget samples older than ``before`` except the last one before it (long
        runs, such as engine builds, must not grow memory without bound)."""
        with self._lock:
            i = bisect.bisect_left(self.times, before) - 1
            if i > 0:
                self._flush_trace(i)
                self._traced = max(0, self._traced - i)
                del self.times[:i]
                for a in self.values:
                    del a[:i]
                self.trimmed = getattr(self, "trimmed", 0) + i

    def snapshot(self):
        """(times, [values per rail]) copies of everything recorded so far."""
        with self._lock:
            n = len(self.times)
            return list(self.times[:n]), [list(a[:n]) for a in self.values]

    def achieved_rate_hz(self):
        if self.total < 2 or self.last_t == self.first_t:
            return None
        return (self.total - 1) / (self.last_t - self.first_t)

    def cpu_fraction(self):
        """Sampler thread CPU time over its wall time (fraction of one core)."""
        if self.cpu_s is None or not self.wall_s:
            return None
        return self.cpu_s / self.wall_s
