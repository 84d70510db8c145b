"""`dance sweep CONFIG` — a Ray Tune sweep of DANCE, every trial a child run in MLflow."""
from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

from orchestrator.runs.pareto import rank_order

#: the exit status of a sweep whose trials ended while MLflow stayed down (its calls wait in the spool)
TRACKING_INCOMPLETE = 3


def pareto_table(rows: list[dict], names: list[str]):
    """The trials as a rich table, front first."""
    from rich.table import Table

    from orchestrator.progress import format_value

    t = Table(title="trials (★ = Pareto front)", title_justify="left")
    for col in ("", "trial", "components", "status", "epochs", *names, "rank"):
        t.add_column(col)
    for r in sorted(rows, key=rank_order):
        rank = "-" if r["pareto_rank"] is None else str(r["pareto_rank"])  # failed: no rank
        t.add_row("★" if r["is_pareto"] else "", r["trial"], r["label"], r["status"], str(r["epochs"]),
                  *[format_value(r.get(k)) for k in names], rank)
    return t


def ui_command(uri: str, sweep_id: str) -> str:
    """How to look at the sweep in the MLflow UI (`dance ui` starts it over an embedded store)."""
    if uri.startswith("sqlite:///"):
        return f"dance ui --tracking-uri {uri} --sweep {sweep_id}"
    return f"open {uri} in a browser"


def resume_command(args: argparse.Namespace, sweep_id: str) -> str:
    """The exact command that continues this sweep: the same config, overrides and flags, plus ``--resume``."""
    words = ["dance", "sweep", str(args.config), *[w for o in (args.set or []) for w in ("--set", o)]]
    for flag, value in (("--address", args.address), ("--tracking-uri", args.tracking_uri)):
        if value:
            words += [flag, value]
    words += ["--resume", sweep_id] + (["--plain"] if args.plain else []) + (["--verbose"] if args.verbose else [])
    return shlex.join(words)


def _terminate_as_interrupt(signum, frame):
    # Outside Tune's run (scoring, joining Ray) SIGTERM ends the command the way Ctrl-C does, with its status.
    raise _Terminated


class _Terminated(KeyboardInterrupt):
    """SIGTERM outside Tune's run."""


def cmd_sweep(args: argparse.Namespace) -> int:
    from orchestrator.sweep.interrupt import exit_status
    from orchestrator.sweep.preflight import preflight_sweep
    from orchestrator.sweep.space import count_trials

    # every problem, together, before the dataset is scored or Ray starts (exit 2)
    checked = preflight_sweep(args.config, args.set or [], tracking_uri=args.tracking_uri,
                              allow_empty=args.allow_empty, resume=args.resume)
    spec = checked.spec
    if args.dry_run:
        print(f"{args.config}: valid; {count_trials(spec.sweep)} trial(s), search {spec.sweep.search}; "
              "tracking store and storage path answer")
        return 0
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        return _sweep(args, spec, checked.resume)
    except _Terminated:
        print("dance: terminated (SIGTERM)", file=sys.stderr)
        return exit_status(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _sweep(args: argparse.Namespace, spec, resume: str | None) -> int:
    from rich.console import Console

    from orchestrator.sweep.interrupt import exit_status
    from orchestrator.sweep.runner import SweepInterrupted, TrackingIncomplete, run_sweep

    try:
        out = run_sweep(spec, address=args.address, tracking_uri=args.tracking_uri, resume=resume,
                        live=None if not args.plain else False, verbose=args.verbose,
                        print_fn=lambda line: print(line, file=sys.stderr, flush=True))
    except SweepInterrupted as exc:
        print(f"dance: {exc.summary}; the parent run and the unfinished trials are "
              "marked interrupted in MLflow", file=sys.stderr)
        print(f"resume with: {resume_command(args, exc.sweep_id)}", file=sys.stderr, flush=True)
        return exit_status(exc.signum)
    except TrackingIncomplete as exc:  # the trials ended; MLflow lacks some of them until --resume replays
        print(f"dance: {exc}", file=sys.stderr)
        print(f"replay with: {resume_command(args, exc.sweep_id)}", file=sys.stderr, flush=True)
        return TRACKING_INCOMPLETE
    names = [o.metric for o in spec.sweep.objectives]
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(pareto_table(out.rows, names))
    if out.hypervolume is not None:
        print(f"hypervolume of the front: {out.hypervolume:.4f} (objectives scaled so the best trial is 0 and the "
              "reference point 1)")
    for v in out.registered:
        print(f"registered model version: {v}")
    print(f"sweep:  {out.sweep_id}  (MLflow experiment {out.experiment!r}, parent run {out.parent_run_id})")
    print(f"compare: dance runs {out.parent_run_id}")
    print(f"browse:  {ui_command(out.tracking_uri, out.sweep_id)}")
    failed = [r for r in out.rows if r["status"] == "FAILED"]
    if failed:
        print(f"{len(failed)} trial(s) failed; their errors are in the runs' dance.error tag "
              f"(dance runs {out.parent_run_id})", file=sys.stderr)
    return 1 if out.rows and len(failed) == len(out.rows) else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="a Ray Tune sweep of DANCE, trials compared in MLflow",
                       description="Sweep pruning ratio, stages, probability ranges, learning rate... (the config's "
                                   "sweep: section) with Ray Tune; every trial is a Ray Train run and an MLflow child "
                                   "run of one parent run per sweep. See docs/sweeps.md.")
    p.add_argument("config", type=Path, help="sweep YAML: an experiment config plus a sweep: section")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable), "
                                                                        "e.g. sweep.num_samples=4 or train.epochs=2")
    p.add_argument("--address", help="join this Ray cluster (default $RAY_ADDRESS, else start a local one)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--resume", metavar="SWEEP", help="continue the stopped sweep SWEEP (its sweep id, printed at the "
                                                     "start, or its parent run id)")
    p.add_argument("--dry-run", action="store_true", help="run every check (config, space, tracking store, storage "
                                                          "path) and count the trials; start nothing")
    p.add_argument("--allow-empty", action="store_true", help="accept an empty sweep.space: one trial of the base "
                                                              "config")
    p.add_argument("--plain", action="store_true", help="plain progress lines instead of the live table")
    p.add_argument("--verbose", action="store_true", help="show the workers' output")
    p.set_defaults(func=cmd_sweep)
