"""Optuna's NSGA-II sampler in a form Ray Tune can save.

Tune pickles the search algorithm with the sweep's state (``tuner.pkl``, for ``--resume``);
Optuna 5's genetic samplers hold a ``threading.Lock`` and cannot be pickled, so a sweep with
``search: optuna`` and two or more objectives failed before its first trial. This subclass
leaves the lock out of its state and makes a new one when restored.
"""
from __future__ import annotations

import threading

import optuna


class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):
    """``NSGAIISampler`` that survives pickling (its lock is remade, unlocked, on restore)."""

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()
