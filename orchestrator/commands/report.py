"""`dance report SWEEP [SWEEP ...] [--out DIR]` — the paper's tables from sweeps, beside the paper's numbers.

SWEEP is a sweep's parent run id or its sweep id. The report (report.md and PNGs) holds
Tables 4, 6, 8, 9 and 12, Fig. 4, DANCE vs the baseline at equal epochs and at equal
training FLOPs, and which of the paper's directional claims hold, with the numbers. A
table whose trials are not in the sweep(s) says so. See docs/reproduce.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.report.build import build_report
from orchestrator.report.render import VERDICT_MARK, write_report
from orchestrator.runs.tracking import resolve_tracking_uri


def cmd_report(args: argparse.Namespace) -> int:
    uri = resolve_tracking_uri(args.tracking_uri)
    report = build_report(args.sweeps, uri, paper_file=args.paper, runtime_rounds=0 if args.no_runtime else args.rounds,
                          progress=lambda m: print(f"report: {m}", file=sys.stderr))
    out = args.out or Path("reports") / report.sweeps[0].sweep_id
    path = write_report(report, out, uri)
    for c in report.claims:
        print(f"{VERDICT_MARK.get(c.verdict, c.verdict):<18} {c.text}")
    print(f"report: {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="paper-style tables and claims from one or more sweeps (Markdown + PNGs)",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("sweeps", nargs="+", metavar="SWEEP",
                   help="a sweep's parent run id or sweep id (several: one report)")
    p.add_argument("--out", type=Path, help="output folder (default reports/<sweep id>)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--paper", type=Path, help="the paper's numbers (default configs/reproduce/paper_numbers.yaml)")
    p.add_argument("--rounds", type=int, default=5, help="timing rounds for Table 12 (default 5)")
    p.add_argument("--no-runtime", action="store_true", help="skip Table 12's timing")
    p.set_defaults(func=cmd_report)
