"""Measurement cache: the same model on the same kind of board in the same state, measured the same
way, is measured once.

Key (DESIGN §6): model sha256, input shape, runtime (and its version), mode (inference or
``train_steps``), board model, L4T/JetPack release, TensorRT version and power mode, the
inventory's power-source setting, and every setting that changes the figure: the agent's
protocol settings (duration, repeats, idle, warm-up, threads, sampling interval and minimum
samples where set, the runtime's ``extra_args`` such as ``--fp16``) and the agent's version
(the hash of its code). Entries written before the settings were part of the key
(:data:`KEY_VERSION` 1) are never reused. The board facts come from the agent's ``probe`` and
are kept per board (address included), so a cached answer needs no connection at all;
``--fresh`` probes and measures again.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path(".dance/measurements.sqlite")
KEY_VERSION = 2  # 2: the measurement settings and the agent's version are part of the key

SCHEMA = """
CREATE TABLE IF NOT EXISTS measurements (key TEXT PRIMARY KEY, parts TEXT NOT NULL, result TEXT NOT NULL,
                                         board TEXT, created REAL);
CREATE TABLE IF NOT EXISTS board_facts (address TEXT PRIMARY KEY, board TEXT, facts TEXT NOT NULL, probed REAL);
"""


def board_facts(probe: dict[str, Any], runtime: str) -> dict[str, Any]:
    """The cache-relevant state of a board, from its ``probe`` JSON."""
    board = probe.get("board") or {}
    l4t = board.get("l4t") or {}
    nvp = board.get("nvpmodel") or {}
    rts = probe.get("runtimes") or {}
    runtime_version = {"onnxruntime": (rts.get("onnxruntime") or {}).get("version"),
                       "torchscript": (rts.get("torch") or {}).get("version"),
                       "trtexec": (rts.get("trtexec") or {}).get("version")}
    model = board.get("model")
    if not board.get("jetson"):
        # two x86 hosts both report no device-tree model: tell them apart by host name
        model = f"{model or 'host'}@{(probe.get('os') or {}).get('hostname')}"
    return {
        "board_model": model,
        "l4t": l4t.get("version") or l4t.get("raw"),
        "tensorrt": (rts.get("trtexec") or {}).get("version"),
        "power_mode": nvp.get("name") if nvp.get("name") is not None else nvp.get("id"),
        "runtime_versions": runtime_version,
        "power_auto": probe.get("power_auto"),
        "python": (probe.get("python") or {}).get("version"),
    }


def cache_key(model_sha256: str, input_shape: list[int] | None, runtime: str, train_steps: int, device: str,
              facts: dict[str, Any], power: str, settings: dict[str, Any], agent: str) -> tuple[str, dict[str, Any]]:
    """The key and its parts.

    ``power`` is the inventory's power-source setting (a board set to ``none`` measures no
    energy, so its results must not answer for one that does); ``settings`` the agent's
    protocol settings as passed (``Measure`` as a dict); ``agent`` the agent's version.
    """
    parts = {
        "key_version": KEY_VERSION,
        "model_sha256": model_sha256, "input_shape": list(input_shape or []), "runtime": runtime,
        "runtime_version": (facts.get("runtime_versions") or {}).get(runtime), "device": device,
        "mode": f"train{train_steps}" if train_steps else "inference",
        "board_model": facts.get("board_model"), "l4t": facts.get("l4t"), "tensorrt": facts.get("tensorrt"),
        "power_mode": facts.get("power_mode"), "power_source": power,
        "settings": dict(sorted(settings.items())), "runtime_args": " ".join(settings.get("extra_args") or []),
        "agent": agent,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest(), parts


class MeasurementCache:
    def __init__(self, path: str | Path = DEFAULT_PATH):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            r = self._db.execute("SELECT result FROM measurements WHERE key=?", (key,)).fetchone()
        return json.loads(r[0]) if r else None

    def put(self, key: str, parts: dict[str, Any], result: dict[str, Any], board: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?, ?)",
                             (key, json.dumps(parts), json.dumps(result), board, time.time()))

    def facts(self, address: str) -> dict[str, Any] | None:
        """The last probe of the board at ``address`` (``user@host:port:workdir`` or ``local:workdir``)."""
        with self._lock:
            r = self._db.execute("SELECT facts FROM board_facts WHERE address=?", (address,)).fetchone()
        return json.loads(r[0]) if r else None

    def put_facts(self, address: str, board: str, probe: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO board_facts VALUES (?, ?, ?, ?)",
                             (address, board, json.dumps(probe), time.time()))
