"""`dance runs [EXPERIMENT|SWEEP]` — compare runs from MLflow in the terminal.

With a sweep (its sweep id or its parent run id): its trials, with the swept params, the final objectives,
the Pareto rank and mark. With an experiment name: every run in it (sweep parents
included, marked). With nothing: the most recent sweep of any experiment.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.runs.schema import (
    COMPONENTS_TAG,
    HIL_STATE_TAG,
    IS_PARETO,
    KIND_SWEEP,
    KIND_TAG,
    KIND_TRIAL,
    PARETO_RANK,
    RUN_ID,
    RUN_NAME_TAG,
    SWEEP_ID_TAG,
    TRIAL_ID_TAG,
    plain_metric_name,
)
from orchestrator.runs.tracking import find_sweep_run, quote, resolve_tracking_uri

DEFAULT_METRICS = ["miou", "train_flops", "infer_flops_per_image"]
#: measured on boards (hardware-in-the-loop sweeps, `dance bench RUN_ID`) and the cost model's prediction
SHOWN_DEVICE_FIGURES = ["energy_j_per_image", "latency_ms_p50", "train_energy_j_per_step"]


def device_columns(df, shown: list[str]) -> list[str]:
    """Measured and predicted device figures some run has, beside each other, not already shown."""
    out = []
    for f in SHOWN_DEVICE_FIGURES:
        for name in (f"device.{f}", f"predicted.device.{f}"):
            if f"metrics.{name}" in df.columns and name not in shown:
                out.append(name)
    return out


def plain_columns(df):
    """``mlflow.search_runs``' frame with its metric columns under the worker's names (``metrics.miou``),
    whether the store holds grouped names (``metrics.accuracy/miou``) or, written before, plain ones."""
    grouped = {c: f"metrics.{plain_metric_name(c[len('metrics.'):])}" for c in df.columns if c.startswith("metrics.")}
    grouped = {c: p for c, p in grouped.items() if c != p}
    for col, plain in grouped.items():  # a plain column of older runs in the same experiment fills the gaps
        df[plain] = df[col].combine_first(df[plain]) if plain in df.columns else df[col]
    return df.drop(columns=list(grouped))


def select(target: str | None, client):
    """(DataFrame of runs, swept param names, objective metric names, title)."""
    import mlflow

    exp = client.get_experiment_by_name(target) if target and not RUN_ID.match(target) else None
    if exp is None:
        try:
            parent = find_sweep_run(client, target)  # a sweep id or a parent run id alike; None: the newest sweep
        except UserError as exc:
            if target is None or RUN_ID.match(target):
                raise
            names = ", ".join(e.name for e in client.search_experiments()) or "none"
            raise UserError(f"{exc}, nor an experiment name (experiments: {names})") from None

        p = parent.data.params
        sweep_id = parent.data.tags[SWEEP_ID_TAG]
        df = plain_columns(mlflow.search_runs([parent.info.experiment_id],
                                              filter_string=f"tags.`{SWEEP_ID_TAG}` = '{quote(sweep_id)}' and "
                                                            f"tags.`{KIND_TAG}` = '{KIND_TRIAL}'"))
        swept = json.loads(p.get("sweep.space_paths", "[]"))
        objectives = [o["metric"] for o in json.loads(p.get("sweep.objectives", "[]"))] or DEFAULT_METRICS
        return df, swept, objectives, f"sweep {sweep_id} (parent run {parent.info.run_id})"
    df = plain_columns(mlflow.search_runs([exp.experiment_id]))
    return df, [], DEFAULT_METRICS, f"experiment {target}"


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def param_columns(df, swept: list[str]) -> list[str]:
    """A swept leaf is one column; a swept section (``slimming``) is its keys that differ between runs."""
    out = []
    for path in swept:
        if f"params.{path}" in df.columns:
            out.append(path)
            continue
        subs = [c[len("params."):] for c in df.columns if c.startswith(f"params.{path}.")]
        varying = [k for k in subs if df[f"params.{k}"].nunique(dropna=True) > 1]
        out += varying or subs
    return out


def table_rows(df, swept: list[str], metrics: list[str], sort: str | None) -> tuple[list[str], list[list]]:
    swept = param_columns(df, swept)
    hil = f"tags.{HIL_STATE_TAG}" in df.columns
    cols = ["", "run", "status", "components", *swept, *metrics, *(["boards"] if hil else []), PARETO_RANK]
    rows = []
    for _, r in df.iterrows():
        def get(kind: str, key: str):
            name = f"{kind}.{key}"
            v = r[name] if name in df.columns else None
            return None if _missing(v) else v

        is_p = get("metrics", IS_PARETO)
        kind = get("tags", KIND_TAG)
        mark = "★" if is_p == 1 else ("sweep" if kind == KIND_SWEEP else "")
        name = get("tags", TRIAL_ID_TAG) or get("tags", RUN_NAME_TAG) or r["run_id"][:8]
        rows.append([mark, name, r["status"], get("tags", COMPONENTS_TAG) or "",
                     *[get("params", k) for k in swept], *[get("metrics", m) for m in metrics],
                     *([get("tags", HIL_STATE_TAG) or "not measured"] if hil else []), get("metrics", PARETO_RANK)])
    if sort:
        key = cols.index(sort) if sort in cols else None
        if key is None:
            raise UserError(f"--sort {sort}: not a column ({', '.join(c for c in cols if c)})")
        desc = sort in ("miou", "pixel_acc", "images_per_s", "is_pareto")

        def k(row):
            v = row[key]
            missing = _missing(v)
            return (missing, -v if (desc and not missing and isinstance(v, (int, float))) else (0 if missing else v))

        rows.sort(key=k)
    return cols, rows


def cmd_runs(args: argparse.Namespace) -> int:
    import mlflow
    from rich.console import Console
    from rich.table import Table

    from orchestrator.progress import format_value

    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise UserError(f"no MLflow store at {uri} (run a sweep here first, or pass --tracking-uri)")
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    df, swept, metrics, title = select(args.target, client)
    extra = [m for m in dict.fromkeys(plain_metric_name(m) for m in args.metric or []) if m not in metrics]
    extra += device_columns(df, metrics + extra)
    cols, rows = table_rows(df, swept, metrics + extra, args.sort and plain_metric_name(args.sort))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["pareto" if c == "" else c for c in cols])
            w.writerows([["" if v is None else v for v in row] for row in rows])
        print(f"wrote {len(rows)} run(s) to {args.csv}", file=sys.stderr)
    t = Table(title=f"{title}: {len(rows)} run(s)", title_justify="left")
    for c in cols:
        t.add_column(c)
    for row in rows:
        t.add_row(*[format_value(v) for v in row])
    (Console() if sys.stdout.isatty() else Console(width=200)).print(t)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="compare runs from MLflow in the terminal (a sweep's trials, Pareto marked)",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("target", nargs="?", help="a sweep id or a sweep's parent run id, or an experiment name (default: "
                                                  "the latest sweep)")
    p.add_argument("--csv", type=Path, help="also write the table to this CSV file")
    p.add_argument("--sort", metavar="COLUMN", help="sort by this column (miou: best first; others ascending)")
    p.add_argument("--metric", action="append", help="add a metric column (repeatable)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.set_defaults(func=cmd_runs)
