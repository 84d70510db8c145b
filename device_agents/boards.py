"""What the total means, per Jetson board model: rail tables with their measurement
boundary and the public source each one comes from.

A board is recognised from ``/proc/device-tree/model`` and ``compatible`` (the
module part number ``p3310``, ``p3701``... and the SoC).  Each table says which rails
make the **module total** (the module's input rail where one exists), which rails
belong to the developer kit's **carrier** board (a separate, parallel boundary never
mixed into the module total), and which rails are nested inside others.

Sources (public; no code copied):

* NVIDIA Jetson Linux Developer Guide, "Clock Frequency and Power Management"
  (L4T 32.x) and "Platform Power and Performance" (L4T 35.x/36.x), power monitor
  tables per module;
* energymon, ``jetson/JetsonPowerRails.md`` (github.com/energymon/energymon): INA3221
  addresses and channels per model, from the L4T 32.6.1 device trees; the TX1/TX2
  carrier INA3221s at 0x42/0x43 with ``VDD_MUX`` supplying the carrier in parallel
  with ``VDD_IN``; AGX Xavier has no input rail;
* jetson-stats (github.com/rbonghi/jetson_stats) ``jtop/core/power.py`` (``VDD_IN`` /
  ``POM_5V_IN`` taken as the total, NC channels and the sum channel skipped) and
  pull request #900 (Thor: the carrier's INA238 reports ``VIN``, the whole input, in uW);
* Linux ``Documentation/hwmon/ina3221.rst`` and ``ina238.rst`` (sysfs attributes,
  ``update_interval``), TI INA3221 datasheet (averaging x conversion time: the
  ~0.4 s refresh in continuous mode).
"""

import re

from .sources import read_text, under

L4T_DOC = "NVIDIA Jetson Linux Developer Guide, Clock Frequency and Power Management"
ORIN_DOC = ("NVIDIA Jetson Linux Developer Guide r35/r36, Platform Power and Performance, "
            "Jetson AGX Orin series (VDDQ_VDD2_1V8AO is included in VIN_SYS_5V0)")
ENERGYMON = "energymon jetson/JetsonPowerRails.md (L4T 32.6.1 device trees)"
JTOP = "jetson-stats jtop/core/power.py"
JTOP_THOR = "jetson-stats pull request #900 (INA238 VIN on AGX Thor); Linux hwmon ina238.rst"


class BoardTable(object):
    """One board model's rails.

    total: rails whose sum is the module total (one name: the input rail); each
    entry may list alternative names (older/newer L4T) as a tuple.
    input_rail: True when ``total`` is a measured input rail, False when it is a
    documented sum of parallel rails.
    carrier: rails on the developer kit's carrier board (their own boundary);
    carrier_total: the carrier's input rail.
    nested: {inner rail: outer rail} for information (never summed with it).
    """

    def __init__(self, key, name, models, compatible, total, input_rail, boundary, source,
                 carrier=(), carrier_total=None, nested=None, carrier_addrs=()):
        self.key = key
        self.name = name
        self.models = models
        self.compatible = compatible
        self.total = [t if isinstance(t, tuple) else (t,) for t in total]
        self.input_rail = input_rail
        self.boundary = boundary
        self.source = source
        self.carrier = tuple(carrier)
        self.carrier_total = carrier_total
        self.nested = dict(nested or {})
        self.carrier_addrs = tuple(carrier_addrs)

    def describe(self):
        return {"key": self.key, "name": self.name, "boundary": self.boundary,
                "total_rails": ["|".join(t) for t in self.total],
                "input_rail": self.input_rail, "carrier_total": self.carrier_total,
                "nested": self.nested, "source": self.source}


TABLES = (
    BoardTable(
        "tx2", "Jetson TX2 / TX2i / TX2 4GB (devkit: carrier INA3221s at 0x42, 0x43)",
        models=(r"\bquill\b", r"jetson[- ]tx2(?!.*nx)", r"storm", r"lightning"),
        compatible=(r"p3310", r"p3489", r"quill"),
        total=("VDD_IN",), input_rail=True,
        boundary="module input (VDD_IN, INA3221 0x41 channel 0)",
        source="%s; %s (TX2 section)" % (L4T_DOC, ENERGYMON),
        carrier=("VDD_MUX", "VDD_5V0_IO_SYS", "VDD_5V_IO_SYS", "VDD_3V3_SYS",
                 "VDD_3V3_IO_SLP", "VDD_1V8_IO", "VDD_3V3_SYS_M2"),
        carrier_total="VDD_MUX", carrier_addrs=("0042", "0043"),
        nested={"VDD_SYS_GPU": "VDD_IN", "VDD_SYS_SOC": "VDD_IN", "VDD_SYS_CPU": "VDD_IN",
                "VDD_SYS_DDR": "VDD_IN", "VDD_4V0_WIFI": "VDD_IN"}),
    BoardTable(
        "tx2-nx", "Jetson TX2 NX", models=(r"tx2 nx", r"lanai"), compatible=(r"p3636", r"lanai"),
        total=("VDD_IN",), input_rail=True, boundary="module input (VDD_IN)",
        source="%s (TX2 NX section)" % ENERGYMON),
    BoardTable(
        "tx1", "Jetson TX1 (devkit: carrier INA3221s at 0x42, 0x43)",
        models=(r"jetson[- ]tx1", r"jetson_tx1"), compatible=(r"p2180",),
        total=("VDD_IN",), input_rail=True, boundary="module input (VDD_IN)",
        source="%s (TX1 section)" % ENERGYMON,
        carrier=("VDD_MUX", "VDD_5V_IO_SYS", "VDD_3V3_SYS", "VDD_3V3_IO", "VDD_1V8_IO",
                 "VDD_M2_IN"), carrier_total="VDD_MUX", carrier_addrs=("0042", "0043")),
    BoardTable(
        "nano", "Jetson Nano", models=(r"jetson nano(?! 2gb)(?!.*orin)", r"\bporg\b"),
        compatible=(r"p3448", r"p3450"),
        total=(("POM_5V_IN", "VDD_IN"),), input_rail=True,
        boundary="module input (POM_5V_IN, INA3221 0x40 channel 0)",
        source="%s (Nano section); %s" % (ENERGYMON, JTOP),
        nested={"POM_5V_GPU": "POM_5V_IN", "POM_5V_CPU": "POM_5V_IN"}),
    BoardTable(
        "xavier-nx", "Jetson Xavier NX", models=(r"xavier nx", r"jakku"),
        compatible=(r"p3668",), total=(("VDD_IN", "5V_IN"),), input_rail=True,
        boundary="module input (VDD_IN)", source="%s (Xavier NX section); %s" % (ENERGYMON, JTOP),
        nested={"VDD_CPU_GPU_CV": "VDD_IN", "VDD_SOC": "VDD_IN"}),
    BoardTable(
        "agx-xavier", "Jetson AGX Xavier (no input rail)",
        models=(r"agx xavier", r"jetson-agx", r"galen"), compatible=(r"p2888", r"p2972"),
        total=(("GPU", "VDD_GPU"), ("CPU", "VDD_CPU"), ("SOC", "VDD_SOC"), ("CV", "VDD_CV"),
               ("VDDRQ", "VDD_DDRQ"), ("SYS5V", "VDD_SYS5V")), input_rail=False,
        boundary="documented sum of the six parallel rails GPU+CPU+SOC+CV+VDDRQ+SYS5V "
                 "(the module has no input-rail monitor)",
        source="%s (AGX Xavier section, Product Design Guide 5.2/5.6.2)" % ENERGYMON),
    BoardTable(
        "agx-orin", "Jetson AGX Orin (no input rail; VDDQ_VDD2_1V8AO nested in VIN_SYS_5V0)",
        models=(r"agx orin",), compatible=(r"p3701",),
        total=("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"), input_rail=False,
        boundary="module total VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0 (VDDQ_VDD2_1V8AO is "
                 "fed by VIN_SYS_5V0 and not added)",
        source=ORIN_DOC, nested={"VDDQ_VDD2_1V8AO": "VIN_SYS_5V0"}),
    BoardTable(
        "orin-nx", "Jetson Orin NX / Orin Nano", models=(r"orin nx", r"orin nano"),
        compatible=(r"p3767",), total=("VDD_IN",), input_rail=True,
        boundary="module input (VDD_IN)",
        source="NVIDIA Jetson Linux Developer Guide r35/r36, Platform Power and Performance, "
               "Orin NX/Nano series; %s" % JTOP,
        nested={"VDD_CPU_GPU_CV": "VDD_IN", "VDD_SOC": "VDD_IN"}),
    BoardTable(
        "thor", "Jetson AGX Thor (INA238 on the input)", models=(r"\bthor\b",),
        compatible=(r"p3834", r"tegra264"), total=("VIN",), input_rail=True,
        boundary="whole input VIN (INA238, hwmon driver ina238, power in uW)",
        source=JTOP_THOR),
)

#: Input-rail names used when the board is not in the tables.
GENERIC_INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN", "5V_IN")


def read_model(fs_root):
    for rel in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        try:
            return read_text(under(fs_root, rel))
        except (OSError, IOError):
            continue
    return None


def read_compatible(fs_root):
    """The device tree's compatible strings (NUL separated in the file)."""
    for rel in ("proc/device-tree/compatible", "sys/firmware/devicetree/base/compatible"):
        try:
            with open(under(fs_root, rel), "rb") as f:
                raw = f.read()
        except (OSError, IOError):
            continue
        return [p for p in raw.decode("utf-8", "replace").split("\x00") if p.strip()]
    return []


def detect(fs_root="/"):
    """The BoardTable of this board, or None when the model is not known."""
    model = (read_model(fs_root) or "").lower()
    compat = " ".join(read_compatible(fs_root)).lower()
    for t in TABLES:  # compatible is the more precise key (module part number)
        if compat and any(re.search(p, compat) for p in t.compatible):
            # tegra264 alone says Thor; a p3767 (Orin NX/Nano) never matches p3701
            return t
    for t in TABLES:
        if model and any(re.search(p, model) for p in t.models):
            return t
    return None


def find_table(key):
    for t in TABLES:
        if t.key == key:
            return t
    return None
