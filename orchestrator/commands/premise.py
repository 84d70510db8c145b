"""`dance data premise DATASET --checkpoint CKPT` — does DANCE's premise hold on this data?

Before a sweep on a new dataset: with a model trained on it, are images of higher spatial
complexity (Eq. 1) harder, and does a 0.5× input cost complex images more than simple ones?
The figures and the verdict rule are in ``workers/premise.py``; this module finds the model
and the data, prints, writes JSON and logs an MLflow run.
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from orchestrator.checkpoints import load_run, resolve_inputs, resolve_target
from orchestrator.commands.evaluate import default_device, positive_int
from orchestrator.config import load_config
from orchestrator.errors import UserError
from orchestrator.progress import progress_bar
from orchestrator.runs.schema import (
    DATASET_TAG,
    KIND_PREMISE,
    KIND_TAG,
    PREMISE_CHECKPOINT_TAG,
    PREMISE_SOURCE_RUN_TAG,
    PREMISE_VERDICT_TAG,
    set_tag,
)

# torch, mlflow and the worker modules that load torch are imported in the functions that use them:
# `dance --help` imports this module.

# The premise check's MLflow run: its kind and tags. Kept here rather than in runs/schema.py (owned by
# another change at the time); move them there when `dance report` reads premise runs.
DEFAULT_EXPERIMENT = "dance-premise"
CONFIG_SUFFIXES = (".yaml", ".yml")


def _scale(text: str) -> float:
    """argparse type: an input scale in (0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1 (a downsampled input), got {value:g}")
    return value


def _dataset_of(target: Path, kind: str | None, run) -> tuple[str, Path, Any]:
    """(kind, root, data config or None) of DATASET: a dataset root folder or an experiment config."""
    if not target.exists():
        raise UserError(f"{target}: no such dataset folder or config file")
    if target.is_file():
        if target.suffix.lower() not in CONFIG_SUFFIXES:
            raise UserError(f"{target}: DATASET must be a dataset root folder or an experiment YAML")
        data = load_config(target).data
        return kind or data.kind, Path(data.root), data
    kind = kind or (run.cfg.data.kind if run.cfg is not None else None)
    if kind is None:
        raise UserError(f"{run.file}: the checkpoint does not record its dataset kind; pass --kind")
    return kind, target, None


def compute(args: argparse.Namespace) -> dict[str, Any]:
    """Run the premise check named by ``args`` and return its JSON-ready result."""
    import numpy as np

    from workers.config import DataConfig
    from workers.data.scoring import score_dataset
    from workers.evaluate import stored_sizes
    from workers.models.base import size_rule
    from workers.premise import VERDICT_RULE, premise_figures, run_model

    if not args.dataset.exists():  # before loading a model: the cheaper mistake first
        raise UserError(f"{args.dataset}: no such dataset folder or config file")
    device = default_device(args.device)
    ckpt, source_run = resolve_target(str(args.checkpoint), args.tracking_uri)
    run = load_run(ckpt, device)
    kind, root, data = _dataset_of(args.dataset, args.kind, run)
    data = data or (run.cfg.data if run.cfg is not None else DataConfig())
    split = args.split or data.val_split
    ds, _, _ = resolve_inputs(run, split=split, dataset=kind, root=root, full_res=True)
    with progress_bar(f"scoring {len(ds)} {split} images (Eq. 1)") as bar:
        sc = score_dataset(ds, cache_dir=data.cache_dir, use_cache=not args.no_cache, batch_size=data.score_batch,
                           progress=bar)
    model = run.checkpoint.model
    try:
        quantum, min_size = size_rule(model, run.cfg.train.size_quantum if run.cfg is not None else None)
    except ValueError as exc:
        raise UserError(f"{ckpt}: {exc}") from None
    bs = args.batch_size or (run.cfg.train.eval_batch_size if run.cfg is not None else 4)
    with progress_bar(f"running the model on {len(ds)} images at full and {args.scale:g}x input") as bar:
        figs = run_model(model, ds, stored_sizes(ds), quantum=quantum, min_size=min_size, scale=args.scale,
                         batch_size=bs, device=device, progress=bar)
    try:
        res = premise_figures(sc, figs, resamples=args.resamples, seed=args.seed)
    except ValueError as exc:
        raise UserError(f"{kind} {split} at {root}: {exc}") from None
    terciles = []
    for t in range(3):
        members = np.flatnonzero(res.terciles == t)
        sizes = sorted({f"{figs.sizes_full[i][0]}x{figs.sizes_full[i][1]}->"
                        f"{figs.sizes_scaled[i][0]}x{figs.sizes_scaled[i][1]}" for i in members})
        terciles.append({"tercile": t + 1, "images": int(len(members)), "sc_min": float(sc[members].min()),
                         "sc_max": float(sc[members].max()), "loss_mean": _num(np.nanmean(figs.loss[members])),
                         "miou_full": _num(res.miou_full[t]), "miou_scaled": _num(res.miou_scaled[t]),
                         "miou_drop": _num(res.drops[t]), "input_sizes": sizes})
    same = sum(a == b for a, b in zip(figs.sizes_full, figs.sizes_scaled))
    return {
        "checkpoint": str(ckpt), "source_run": source_run, "dataset": kind, "root": str(root), "split": split,
        "images": res.images, "scale": args.scale, "quantum": quantum, "min_size": min_size,
        "images_not_downsampled": int(same), "resamples": res.resamples, "level": res.level, "seed": args.seed,
        **{k: _num(v) for k, v in res.metrics().items()},
        "terciles": terciles, "verdict": res.verdict, "verdict_line": verdict_line(res, args.scale),
        "rule": VERDICT_RULE,
        "per_image": [{"image": str(p), "sc": float(s), "loss": _num(lo), "tercile": int(t) + 1}
                      for p, s, lo, t in zip(ds.image_paths(), sc, figs.loss, res.terciles)],
    }


def _num(v) -> float | None:
    """A float for JSON; None where NaN (JSON has no NaN)."""
    v = float(v)
    return None if v != v else v


def verdict_line(res, scale: float = 0.5) -> str:
    """The one-line verdict with the two figures it rests on."""
    from workers.premise import verdict_phrase

    pct = round(100 * res.level)
    return (f"verdict: the premise {verdict_phrase(res.verdict)} on this data (Spearman {res.spearman.value:+.3f}, "
            f"{pct}% interval [{res.spearman.lo:+.3f}, {res.spearman.hi:+.3f}]; mIoU lost at {scale:g}x, tercile 3 "
            f"minus tercile 1: {res.trend.value:+.4f}, {pct}% interval [{res.trend.lo:+.4f}, {res.trend.hi:+.4f}])")


def _fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def print_result(out: dict[str, Any]) -> None:
    """The short table, the verdict line and its rule."""
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=160)
    print(f"{out['dataset']} {out['split']} at {out['root']}: {out['images']} images, checkpoint {out['checkpoint']}")
    print(f"Spearman(SC, per-image loss) {_fmt(out['premise_spearman'], '+.3f')}, "
          f"{round(100 * out['level'])}% bootstrap interval [{_fmt(out['premise_spearman_lo'], '+.3f')}, "
          f"{_fmt(out['premise_spearman_hi'], '+.3f')}] ({out['resamples']} resamples, seed {out['seed']})")
    t = Table(title=f"mIoU lost at {out['scale']:g}x input, by SC tercile", title_justify="left")
    for col in ("tercile", "images", "SC", "mean loss", "input", "mIoU full", f"mIoU {out['scale']:g}x", "lost"):
        t.add_column(col, justify="left" if col in ("SC", "input") else "right")
    for row in out["terciles"]:
        t.add_row(str(row["tercile"]), str(row["images"]), f"{row['sc_min']:.3f}–{row['sc_max']:.3f}",
                  _fmt(row["loss_mean"], ".3f"), ", ".join(row["input_sizes"]), _fmt(row["miou_full"], ".4f"),
                  _fmt(row["miou_scaled"], ".4f"), _fmt(row["miou_drop"], "+.4f"))
    console.print(t)
    if out["images_not_downsampled"]:
        console.print(f"note: {out['images_not_downsampled']} image(s) are not made smaller at {out['scale']:g}x "
                      f"(model size grid: quantum {out['quantum']}, minimum {out['min_size']})", highlight=False)
    # plain print: the verdict is one line whatever the terminal's width (scripts grep for it)
    print(textwrap.fill(f"rule: the premise {out['rule']}", width=110, subsequent_indent="  "))
    print(out["verdict_line"])


def log_run(out: dict[str, Any], tracking_uri: str, experiment: str) -> str:
    """Log ``out`` as one MLflow run (kind ``premise``); returns its id."""
    import mlflow
    from mlflow.entities import Metric, Param

    from orchestrator.runs.tracking import resolve_tracking_uri, setup

    exp_id = setup(resolve_tracking_uri(tracking_uri), experiment)
    client = mlflow.MlflowClient()
    name = f"premise-{out['dataset']}-{out['split']}-{time.strftime('%Y%m%d-%H%M%S')}"
    tags = {KIND_TAG: KIND_PREMISE, PREMISE_VERDICT_TAG: out["verdict"], DATASET_TAG: f"{out['dataset']}:{out['root']}",
            PREMISE_CHECKPOINT_TAG: out["checkpoint"]}
    if out["source_run"]:
        tags[PREMISE_SOURCE_RUN_TAG] = out["source_run"]
    run_id = client.create_run(exp_id, run_name=name).info.run_id
    ts = int(time.time() * 1000)
    metrics = [Metric(k, v, ts, 0) for k, v in out.items() if k.startswith("premise_") and v is not None]
    params = [Param(k, str(out[k])) for k in ("split", "images", "scale", "resamples", "level", "seed")]
    client.log_batch(run_id, metrics=metrics, params=params)
    for k, v in tags.items():
        set_tag(client, run_id, k, v)
    client.log_dict(run_id, out, "premise.json")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def cmd_premise(args: argparse.Namespace) -> int:
    out = compute(args)
    if args.tracking_uri:
        out["mlflow_run_id"] = log_run(out, args.tracking_uri, args.experiment)
    print_result(out)
    if "mlflow_run_id" in out:
        print(f"mlflow: run {out['mlflow_run_id']} ({args.experiment}) at {args.tracking_uri}")
    if args.json:
        text = json.dumps(out, indent=2)
        if str(args.json) == "-":
            print(text)
        else:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text + "\n")
            print(f"wrote {args.json}")
    return 0


def add_parser(dsub: argparse._SubParsersAction) -> None:
    """Add ``premise`` to the ``dance data`` actions."""
    p = dsub.add_parser(
        "premise", help="does DANCE's premise hold on this data? (needs a model trained on it)",
        description="With a model trained on the data: Spearman between each val image's spatial complexity "
                    "(Eq. 1) and its loss, with a bootstrap interval; the mIoU lost at 0.5x input per SC tercile; "
                    "and a verdict (the premise holds / does not hold / is unclear on this data).")
    p.add_argument("dataset", type=Path, metavar="DATASET",
                   help="dataset root folder, or an experiment YAML whose `data` section names it")
    p.add_argument("--checkpoint", required=True,
                   help="model.pt, its checkpoint folder, or an MLflow run id with a 'checkpoint' artifact")
    p.add_argument("--kind", help="dataset layout: cityscapes, camvid, bdd100k, voc (default: the checkpoint's)")
    p.add_argument("--split", help="split to check (default: the val split)")
    p.add_argument("--scale", type=_scale, default=0.5, help="input scale whose mIoU loss is measured (default 0.5)")
    p.add_argument("--resamples", type=positive_int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per forward (default: train.eval_batch_size)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-cache", action="store_true", help="recompute complexity scores instead of reusing the cache")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON to FILE ('-': stdout)")
    p.add_argument("--tracking-uri", help="log an MLflow run (kind 'premise') to this tracking URI")
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help=f"MLflow experiment (default {DEFAULT_EXPERIMENT})")
    p.set_defaults(func=cmd_premise)
