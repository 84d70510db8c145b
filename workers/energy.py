"""GPU energy from NVML's total-energy counter, read through ctypes (no pynvml needed).

``nvmlDeviceGetTotalEnergyConsumption`` returns millijoules since the driver was loaded
(Volta and newer). Where there is no NVML library, no GPU, or a GPU without the counter,
:class:`EnergyMeter` reads ``None``: energy is then *absent*, never reported as zero
(DESIGN §4).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading

log = logging.getLogger(__name__)

_LIB = None
_LOCK = threading.Lock()
_FAILED = False


def _nvml():
    """The initialised NVML library, or None."""
    global _LIB, _FAILED
    with _LOCK:
        if _LIB is not None or _FAILED:
            return _LIB
        names = ["libnvidia-ml.so.1", "libnvidia-ml.so", ctypes.util.find_library("nvidia-ml") or "", "nvml.dll"]
        for name in filter(None, names):
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                continue
            init = getattr(lib, "nvmlInit_v2", None) or getattr(lib, "nvmlInit", None)
            if init is None or init() != 0:
                continue
            _LIB = lib
            return lib
        _FAILED = True
        return None


def _handle(lib, index: int):
    handle = ctypes.c_void_p()
    get = getattr(lib, "nvmlDeviceGetHandleByIndex_v2", None) or getattr(lib, "nvmlDeviceGetHandleByIndex", None)
    if get is None or get(ctypes.c_uint(index), ctypes.byref(handle)) != 0:
        return None
    return handle


def total_energy_mj(index: int) -> int | None:
    """NVML's cumulative energy counter of GPU ``index`` (physical NVML index) in mJ, or None."""
    lib = _nvml()
    if lib is None:
        return None
    handle = _handle(lib, index)
    if handle is None:
        return None
    value = ctypes.c_ulonglong()
    fn = getattr(lib, "nvmlDeviceGetTotalEnergyConsumption", None)
    if fn is None or fn(handle, ctypes.byref(value)) != 0:
        return None
    return int(value.value)


def nvml_index(device) -> int | None:
    """NVML index of a torch CUDA device (honours CUDA_VISIBLE_DEVICES given as integers)."""
    if getattr(device, "type", None) != "cuda":
        return None
    local = device.index if device.index is not None else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if local < len(ids):
            try:
                return int(ids[local])
            except ValueError:  # UUIDs: no reliable mapping here, and a guessed GPU is no measurement
                return None
    return local


class EnergyMeter:
    """Energy of one GPU between :meth:`start` and :meth:`stop`, in joules (None when unmeasurable)."""

    def __init__(self, device, exclusive: bool = True) -> None:
        # A GPU shared by several workers would have its whole energy counted once per worker.
        self.index = nvml_index(device) if exclusive else None
        self._start: int | None = None
        self.available = self.index is not None and total_energy_mj(self.index) is not None

    def start(self) -> None:
        self._start = total_energy_mj(self.index) if self.available else None

    def stop(self) -> float | None:
        if self._start is None:
            return None
        end = total_energy_mj(self.index)
        if end is None or end < self._start:
            return None
        return (end - self._start) / 1000.0
