"""Board state recorded before and after a measurement: CPU/GPU/EMC clocks, whether
``jetson_clocks`` has pinned them, and the nvpmodel mode.

Read from sysfs under fs_root (``/`` on a board): cpufreq ``scaling_cur_freq`` /
``scaling_min_freq`` / ``scaling_max_freq`` (kHz), the GPU's devfreq node
(``/sys/class/devfreq/<gpu>/cur_freq``, Hz) and the EMC clock from debugfs
(``/sys/kernel/debug/bpmp/debug/clk/emc/rate`` on Xavier/Orin, ``.../clk/emc/clk_rate``
on TX1/TX2/Nano; root only).  ``jetson_clocks`` pins every CPU and the GPU at
min = max; that is how its state is inferred without running it (``jetson_clocks
--show`` needs root).  Anything unreadable is null, never guessed.
"""

import glob
import os

from .sources import read_number, under

GPU_DEVFREQ_NAMES = ("gp10b", "ga10b", "gv11b", "gpu", "gb10b")
EMC_FILES = ("sys/kernel/debug/bpmp/debug/clk/emc/rate", "sys/kernel/debug/clk/emc/clk_rate")


def _num(path):
    try:
        return int(read_number(path))
    except (OSError, IOError, ValueError):
        return None


def _gpu_node(fs_root):
    for d in sorted(glob.glob(under(fs_root, "sys/class/devfreq/*"))):
        name = os.path.basename(d).lower()
        if any(g in name for g in GPU_DEVFREQ_NAMES):
            return d
    return None


def snapshot(fs_root="/"):
    """{"cpu_khz": {cpuN: cur}, "cpu_min_max_khz": {cpuN: [min, max]}, "gpu_hz",
    "gpu_min_max_hz", "gpu_node", "emc_hz", "jetson_clocks", "nvpmodel"}."""
    cpus = {}
    limits = {}
    for d in sorted(glob.glob(under(fs_root, "sys/devices/system/cpu/cpu[0-9]*/cpufreq")),
                    key=lambda p: int(os.path.basename(os.path.dirname(p))[3:])):
        cpu = os.path.basename(os.path.dirname(d))
        cur = _num(os.path.join(d, "scaling_cur_freq"))
        if cur is None:
            continue
        cpus[cpu] = cur
        limits[cpu] = [_num(os.path.join(d, "scaling_min_freq")),
                       _num(os.path.join(d, "scaling_max_freq"))]
    gpu = _gpu_node(fs_root)
    gpu_hz = gpu_lim = None
    if gpu:
        gpu_hz = _num(os.path.join(gpu, "cur_freq"))
        gpu_lim = [_num(os.path.join(gpu, "min_freq")), _num(os.path.join(gpu, "max_freq"))]
    emc = None
    for rel in EMC_FILES:
        emc = _num(under(fs_root, rel))
        if emc is not None:
            break
    pinned = None
    if limits:
        pairs = list(limits.values()) + ([gpu_lim] if gpu_lim else [])
        if all(p[0] is not None and p[1] is not None for p in pairs):
            pinned = all(p[0] == p[1] for p in pairs)
    from .probe import nvpmodel_mode
    return {"cpu_khz": cpus, "cpu_min_max_khz": limits, "gpu_hz": gpu_hz,
            "gpu_min_max_hz": gpu_lim,
            "gpu_node": os.path.relpath(gpu, fs_root or "/") if gpu else None,
            "emc_hz": emc, "jetson_clocks": pinned, "nvpmodel": nvpmodel_mode(fs_root)}


def changes(before, after):
    """Warnings for what changed between two snapshots (power mode, jetson_clocks,
    a lowered clock ceiling: the board did not run in one state)."""
    out = []
    if not before or not after:
        return out
    nb, na = before.get("nvpmodel") or {}, after.get("nvpmodel") or {}
    if (nb.get("name"), nb.get("id")) != (na.get("name"), na.get("id")):
        out.append("nvpmodel mode changed during the run: %s -> %s"
                   % (nb.get("name") or nb.get("id"), na.get("name") or na.get("id")))
    if before.get("jetson_clocks") != after.get("jetson_clocks"):
        out.append("jetson_clocks state changed during the run: %s -> %s"
                   % (before.get("jetson_clocks"), after.get("jetson_clocks")))
    for cpu, (lo, hi) in sorted(before.get("cpu_min_max_khz", {}).items()):
        a = after.get("cpu_min_max_khz", {}).get(cpu)
        if a and hi is not None and a[1] is not None and a[1] < hi:
            out.append("%s maximum clock lowered during the run: %d -> %d kHz"
                       % (cpu, hi, a[1]))
    gb, ga = before.get("gpu_min_max_hz"), after.get("gpu_min_max_hz")
    if gb and ga and gb[1] is not None and ga[1] is not None and ga[1] < gb[1]:
        out.append("GPU maximum clock lowered during the run: %d -> %d Hz" % (gb[1], ga[1]))
    return out
