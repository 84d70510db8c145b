"""`dance ui [--tracking-uri U] [--port P] [--sweep SWEEP]` — the MLflow UI over this store, and the sweep's link."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.runs.tracking import resolve_tracking_uri
from orchestrator.runs.ui import find_sweep_link, start_ui, stop_ui


def cmd_ui(args: argparse.Namespace) -> int:
    uri = resolve_tracking_uri(args.tracking_uri)
    proc = start_ui(uri, args.port, Path(".dance") / "ui.log")
    base = f"http://127.0.0.1:{args.port}"
    link = find_sweep_link(uri, args.sweep)
    print(f"MLflow UI: {base}  (pid {proc.pid}; Ctrl-C stops it)")
    if link is not None:
        print(f"the sweep's runs: {link.runs(base)}")
        print(f"its parent run (the front, pareto.png, pareto.html): {link.parent(base)}")
    sys.stdout.flush()
    try:
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_ui(proc)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="start the MLflow UI over this store and print the link to a sweep's runs",
                       description=__doc__.split("—", 1)[1].strip() if __doc__ else None)
    p.add_argument("--tracking-uri", help="MLflow store (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    p.add_argument("--sweep", help="sweep id or parent run id to link to (default: the newest sweep)")
    p.set_defaults(func=cmd_ui)
