"""Ctrl-C and SIGTERM as a state of the sweep, not as a crash.

Tune catches the first SIGINT itself: it stops launching trials, saves the sweep's state and
returns from ``fit`` — after marking the running trials TERMINATED in memory, so the result
alone cannot tell an interrupted sweep from a finished one. :class:`InterruptWatch` (a Tune
callback, set up inside Tune's run after Tune installed its handler) puts itself in front of
that handler, records which signal came, and hands SIGTERM to Tune's handler too (Tune
leaves SIGTERM to the default, which would end the driver without saving anything).

The record lives in this module, keyed by sweep id, because a restored sweep runs the copy of
the callback Tune unpickled from its saved state, not the object the runner made.
"""
from __future__ import annotations

import signal
import threading

from ray.tune import Callback

#: sweep id → the signal that interrupted it
_RECEIVED: dict[str, int] = {}


def exit_status(signum: int) -> int:
    """The shell's status for a process ended by ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


def received(sweep_id: str) -> int | None:
    """The signal that interrupted ``sweep_id``'s fit, or None."""
    return _RECEIVED.get(sweep_id)


def forget(sweep_id: str) -> None:
    _RECEIVED.pop(sweep_id, None)


class InterruptWatch(Callback):
    """Records SIGINT/SIGTERM during Tune's run and lets Tune wind down the way it does on Ctrl-C."""

    def __init__(self, sweep_id: str) -> None:
        self.sweep_id = sweep_id

    def setup(self, **info) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread can take signals (Tune then catches none either)
        tune_handler = signal.getsignal(signal.SIGINT)
        sweep_id = self.sweep_id

        def on_signal(signum, frame):
            first = sweep_id not in _RECEIVED
            _RECEIVED.setdefault(sweep_id, signum)
            if first and callable(tune_handler):
                tune_handler(signal.SIGINT, frame)  # stop launching, save the state, return from fit
            else:  # a second signal: stop waiting for the clean-up
                raise KeyboardInterrupt

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)


class handlers_restored:
    """Context manager: SIGINT/SIGTERM handlers as they were before (Tune and the watch replace them)."""

    def __enter__(self) -> "handlers_restored":
        self._saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        if threading.current_thread() is threading.main_thread():
            for s, h in self._saved.items():
                if h is not None:
                    signal.signal(s, h)
