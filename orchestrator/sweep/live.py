"""Live progress of a sweep: a table of trials on a terminal, one plain line per event otherwise."""
from __future__ import annotations

import sys
import time

from ray.tune import Callback

from orchestrator.progress import format_value


class LiveTable(Callback):
    """Trial id, status, epoch, mIoU and training FLOPs, redrawn on every result (rich ``Live``)."""

    def __init__(self, epochs_of, labels_of, live: bool | None = None) -> None:
        self.epochs_of, self.labels_of = epochs_of, labels_of
        self.live = sys.stderr.isatty() if live is None else live
        self.rows: dict[str, dict] = {}
        self.boards: dict[str, str] = {}  # trial id -> its board measurement's state (hardware in the loop)
        self._view = None
        self.started = time.monotonic()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_view"], state["rows"], state["boards"] = None, {}, {}
        return state

    def _row(self, trial) -> dict:
        return self.rows.setdefault(trial.trial_id, {"trial": trial.trial_id, "what": self.labels_of(trial.config),
                                                     "status": "PENDING", "epoch": None, "miou": None,
                                                     "train_flops": None, "epochs": self.epochs_of(trial.config)})

    def _table(self):
        from rich.table import Table

        t = Table(title=f"sweep — {time.monotonic() - self.started:.0f} s", title_justify="left")
        cols = ("trial", "what", "status", "epoch", "mIoU", "train FLOPs", *(("boards",) if self.boards else ()))
        for col in cols:
            t.add_column(col)
        for r in self.rows.values():
            ep = f"{r['epoch'] + 1}/{r['epochs']}" if r["epoch"] is not None else f"–/{r['epochs']}"
            t.add_row(r["trial"], r["what"], r["status"], ep, format_value(r["miou"]), format_value(r["train_flops"]),
                      *((self.boards.get(r["trial"], "-"),) if self.boards else ()))
        return t

    def __rich__(self):
        """Rendered on every refresh: board states change between Tune's events."""
        return self._table()

    def board_event(self, trial_id: str, state: str) -> None:
        """A trial's board measurement changed state (queued, measuring, measured, ...)."""
        self.boards[trial_id] = state
        if not self.live or self._view is None:  # plain output, or the table is gone (boards outlast training)
            print(f"[sweep] {trial_id} boards: {state}", file=sys.stderr, flush=True)

    def _show(self, trial, event: str) -> None:
        r = self._row(trial)
        if self.live:
            if self._view is None:
                from rich.console import Console
                from rich.live import Live

                self._view = Live(self, console=Console(stderr=True), refresh_per_second=2, transient=False)
                self._view.start()
            self._view.refresh()
        else:
            ep = f"epoch {r['epoch'] + 1}/{r['epochs']}" if r["epoch"] is not None else ""
            extra = (f" miou={format_value(r['miou'])} train_flops={format_value(r['train_flops'])}"
                     if event == "result" else "")
            print(f"[sweep] {r['trial']} {r['status']:<10} {ep}{extra}  ({r['what']})", file=sys.stderr, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._row(trial)["status"] = "RUNNING"
        self._show(trial, "start")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        r = self._row(trial)
        r["epoch"] = int(result.get("epoch", 0))
        r["miou"] = result.get("miou", r["miou"])
        r["train_flops"] = result.get("train_flops", r["train_flops"])
        self._show(trial, "result")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        r = self._row(trial)
        r["status"] = "FINISHED" if r["epoch"] is not None and r["epoch"] + 1 >= r["epochs"] else "STOPPED"
        self._show(trial, "end")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._row(trial)["status"] = "FAILED"
        self._show(trial, "end")

    def on_experiment_end(self, trials, **info) -> None:
        self.close()

    def close(self) -> None:
        if self._view is not None:
            self._view.stop()
            self._view = None
