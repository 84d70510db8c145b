"""Thermal state, where readable: zone temperatures against their passive trip
points, and the x86 throttle counters."""

import glob
import os

from .sources import read_number, read_text, under

ZONES_GLOB = "sys/class/thermal/thermal_zone*"
THROTTLE_GLOB = "sys/devices/system/cpu/cpu*/thermal_throttle/*_throttle_count"

#: Zones whose reading is known to be meaningless (the TX2's PMIC-Die reads a fixed
#: 100 C), ignored for throttling warnings.
IGNORED_ZONES = ("PMIC-Die",)


def snapshot(fs_root="/"):
    """{"zones": {type: {"temp_c", "passive_c"}}, "throttle_count": int or None}."""
    zones = {}
    for z in sorted(glob.glob(under(fs_root, ZONES_GLOB))):
        try:
            ztype = read_text(os.path.join(z, "type"))
            temp = read_number(os.path.join(z, "temp")) / 1000.0
        except (OSError, IOError, ValueError):
            continue
        passive = None
        for tp in glob.glob(os.path.join(z, "trip_point_*_type")):
            try:
                if read_text(tp) != "passive":
                    continue
                t = read_number(tp[:-len("_type")] + "_temp") / 1000.0
            except (OSError, IOError, ValueError):
                continue
            if passive is None or t < passive:
                passive = t
        key = ztype
        n = 2
        while key in zones:
            key = "%s#%d" % (ztype, n)
            n += 1
        zones[key] = {"temp_c": temp, "passive_c": passive}
    count = None
    for f in glob.glob(under(fs_root, THROTTLE_GLOB)):
        try:
            c = int(read_number(f))
        except (OSError, IOError, ValueError):
            continue
        count = (count or 0) + c
    return {"zones": zones, "throttle_count": count}


def throttle_warnings(before, after):
    """Warnings when a zone is at or above its passive trip point (where the kernel
    starts throttling) or when throttle counters grew between two snapshots."""
    warnings = []
    for name, z in sorted(after.get("zones", {}).items()):
        if name.split("#")[0] in IGNORED_ZONES:
            continue
        if z.get("passive_c") is not None and z["temp_c"] >= z["passive_c"]:
            warnings.append("thermal throttling likely: %s at %.1f C >= passive trip "
                            "%.1f C" % (name, z["temp_c"], z["passive_c"]))
    b = before.get("throttle_count")
    a = after.get("throttle_count")
    if a is not None and b is not None and a > b:
        warnings.append("thermal throttling: CPU throttle counters rose by %d during "
                        "the run" % (a - b))
    return warnings


def max_temperature(snap):
    temps = [z["temp_c"] for n, z in snap.get("zones", {}).items()
             if n.split("#")[0] not in IGNORED_ZONES]
    return max(temps) if temps else None
