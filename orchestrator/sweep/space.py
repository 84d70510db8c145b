"""Load a sweep YAML, check every point of its space before Ray starts, build Tune's space.

A sweep file is an experiment YAML (optionally ``base: other.yaml`` to start from another
experiment file, paths relative to this one) plus a ``sweep:`` section. Every problem —
an unknown path, a value the schema refuses anywhere in the space, a missing dataset, a
search or objective that cannot work — is collected and reported together, each with its
YAML path, as one :class:`~orchestrator.errors.UserError`.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel, ValidationError

from orchestrator.boards.inventory import select_boards
from orchestrator.config import apply_overrides, deep_merge, format_validation_error, read_tree
from orchestrator.errors import UserError
from orchestrator.runs.schema import DEVICE_OBJECTIVES
from orchestrator.sweep.schema import DISCRETE, Domain, SweepConfig
from orchestrator.training import absolute_paths
from workers.config import ExperimentConfig
from workers.dance.ans import ans_window, prune_plan_problem
from workers.metrics import EVAL_METRICS, TRIAL_METRICS, is_per_class_metric, is_trial_metric

# Paths that only switch DANCE's components: a trial is best named by its components.
COMPONENT_PATHS = ("ans.enabled", "slimming", "slimming.cad", "slimming.casd", "slimming.cal", "slimming.rd",
                   "train.mode")
# Sweeping these would mean scoring more than one dataset; a sweep scores one, once.
FIXED_PATHS = ("data.kind", "data.root", "data.train_split", "data.val_split", "data.cache_dir", "data",
               "tracking", "name")
# A key that starts with a dot (".method", ".model", or just ".") names an axis of whole partial
# configs: each value is a mapping of overrides merged into the experiment (a recipe per value).
WHOLE = "."


def is_whole(key: str) -> bool:
    return key.startswith(WHOLE)
# Above this many corner combinations only each axis is checked on its own.
MAX_COMBINATIONS = 4096


@dataclass
class SweepSpec:
    """A validated sweep: the experiment tree, its typed base config and the sweep section.

    ``cwd`` is the driver's working folder: relative paths of every trial resolve against it
    (Tune runs each trial in a folder of its own, and on other nodes).
    """

    source: str
    tree: dict[str, Any]
    base: ExperimentConfig
    sweep: SweepConfig
    cwd: str = "."

    def resolve(self, params: dict[str, Any]) -> ExperimentConfig:
        """The experiment config of one trial (``params``: path → value, as Tune sampled them)."""
        cfg = ExperimentConfig.model_validate(apply_point(self.tree, decode_params(params)))
        return absolute_paths(cfg, Path(self.cwd))

    def label(self, params: dict[str, Any]) -> str:
        """A short text for a trial: its swept values, ``ans.stages=4 optim.lr=0.0123``."""
        parts = []
        for k, v in decode_params(params).items():
            if k not in self.sweep.space:
                continue
            if is_whole(k):
                parts.append(str(v.get("label")) if isinstance(v, dict) and "label" in v
                             else f"{k}={json.dumps(v, separators=(',', ':'))[:60]}")
                continue
            parts.append(f"{k}={value_text(v)}")
        return " ".join(parts) or "base"

    def _swept_items(self, params: dict[str, Any]) -> list[tuple[str, str, str]]:
        """(path, short key, value as text) of each swept value of a trial."""
        values = {k: v for k, v in decode_params(params).items() if k in self.sweep.space}
        last = [k.rsplit(".", 1)[-1] for k in values]
        out = []
        for k, v in values.items():
            short = k.rsplit(".", 1)[-1]
            unclear = last.count(short) > 1 or short in ("enabled", "name", "kind") or is_whole(k)
            key = (k.lstrip(".") or "recipe") if unclear else short
            out.append((k, key, str(v["label"]) if isinstance(v, dict) and "label" in v else value_text(v)))
        return out

    def swept(self, params: dict[str, Any]) -> dict[str, str]:
        """The trial's swept values under short keys (``lr``, ``stages``; the full path where two paths
        share their last part): what the run's name and its ``_swept.*`` params show."""
        return {key: text for _, key, text in self._swept_items(params)}

    def run_name(self, trial_id: str, params: dict[str, Any], components: str) -> str:
        """``00001 lr=0.0177 ratio=0.36 stages=4``; the DANCE components where swept paths switch them
        (``00002 ANS+CAD+CASD+CAL``); a recipe axis by its label."""
        number = trial_id.rsplit("_", 1)[-1]
        parts = []
        for path, key, text in self._swept_items(params):
            if is_whole(path):
                parts.append(text)
            elif path not in COMPONENT_PATHS:
                parts.append(f"{key}={text}")
        if any(path in COMPONENT_PATHS for path in self.sweep.space):
            parts.append(components)
        return f"{number} {' '.join(parts) or 'base'}"


def value_text(v: Any) -> str:
    """A swept value as a trial's label shows it: ``0.0123``, ``cad=True,casd=False``."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ",".join(f"{a}={b}" for a, b in v.items())
    return str(v)


def corner_points(axes: dict[str, list[Any]]) -> list[dict[str, Any]] | None:
    """Every combination of the axes' probe points, or None when there are more than MAX_COMBINATIONS."""
    if math.prod(len(vals) for vals in axes.values()) > MAX_COMBINATIONS:
        return None
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


# ---------------------------------------------------------------- points
def encode_value(v: Any) -> Any:
    """Tune (and Optuna's categorical) take scalars: a mapping or list travels as JSON text."""
    return "json:" + json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v


def decode_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: json.loads(v[5:]) if isinstance(v, str) and v.startswith("json:") else v for k, v in params.items()}


def apply_point(tree: dict, point: dict[str, Any]) -> dict:
    """``tree`` with each dotted path set; a mapping merged into a section, anything else replacing."""
    out = copy.deepcopy(tree)
    for dotted, value in point.items():
        if is_whole(dotted):
            out = deep_merge(out, {k: v for k, v in value.items() if k != "label"})
            continue
        keys = dotted.split(".")
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        last = keys[-1]
        if isinstance(value, dict) and isinstance(node.get(last), dict):
            node[last] = deep_merge(node[last], value)
        else:
            node[last] = copy.deepcopy(value)
    return out


def _path_error(dotted: str) -> str | None:
    """Why ``dotted`` is not a path of the experiment schema (None when it is)."""
    if is_whole(dotted):
        return None
    model: type[BaseModel] | None = ExperimentConfig
    keys = dotted.split(".")
    for i, k in enumerate(keys):
        if model is None:  # inside a free-form mapping (model.options): any key
            return None
        fields = model.model_fields
        if k not in fields:
            where = ".".join(keys[:i]) or "the top level"
            return f"unknown key '{k}' in {where} (known: {', '.join(sorted(fields))})"
        ann = fields[k].annotation
        sub = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)),
                   None)
        if sub is None and i < len(keys) - 1 and not (ann is dict or getattr(ann, "__origin__", None) is dict):
            return f"'{'.'.join(keys[:i + 1])}' is a value, not a section"
        model = sub
    return None


def _lines(exc: ValidationError) -> list[str]:
    """pydantic's errors as ``path: message`` lines, without its 'Value error, ' prefix."""
    body = format_validation_error(exc, "x").splitlines()[1:]
    return [line.strip().replace("Value error, ", "") for line in body]


def _validate_point(tree: dict, point: dict[str, Any]) -> list[str]:
    try:
        ExperimentConfig.model_validate(apply_point(tree, point))
        return []
    except ValidationError as exc:
        return _lines(exc)


def check_space(tree: dict, sweep: SweepConfig) -> list[str]:
    """Every problem of the space, each as ``sweep.space.<path>: ...``."""
    errors: list[str] = []
    good: dict[str, list[Any]] = {}
    for dotted, dom in sweep.space.items():
        where = f"sweep.space.{dotted}"
        if dotted in FIXED_PATHS or any(dotted.startswith(p + ".") for p in ("data", "tracking")):
            errors.append(f"{where}: cannot be swept (a sweep trains on one dataset, scored once, and logs to one "
                          "experiment)")
            continue
        if is_whole(dotted):
            bad = [v for v in dom.probe_points() if not isinstance(v, dict)]
            fixed = sorted({k for v in dom.probe_points() if isinstance(v, dict) for k in v}
                           & {"data", "tracking", "name"})
            if bad or fixed:
                errors.append(f"{where}: every value of a '.'-axis must be a mapping of overrides"
                              + (f" that leaves {', '.join(fixed)} alone" if fixed else ""))
                continue
        why = _path_error(dotted)
        if why:
            errors.append(f"{where}: {why}")
            continue
        ok = True
        for i, v in enumerate(dom.probe_points()):
            label = f"{where}.{dom.kind}[{i}]" if dom.kind in DISCRETE else f"{where}.{dom.kind} bound {v!r}"
            for msg in _validate_point(tree, {dotted: v}):
                errors.append(f"{label} = {json.dumps(v)}: {msg}")
                ok = False
        if ok:
            good[dotted] = dom.probe_points()
    # Values that pass alone can clash together (casd on one axis, rd on another): check corners.
    if len(good) > 1 and not errors:
        corners = corner_points(good)
        if corners is not None:
            seen: set[str] = set()
            for point in corners:
                for msg in _validate_point(tree, point):
                    if msg not in seen:
                        seen.add(msg)
                        errors.append(f"sweep.space (combination {json.dumps(point)}): {msg}")
    return errors


def check_search(sweep: SweepConfig, base: ExperimentConfig | None) -> list[str]:
    errors: list[str] = []
    for i, o in enumerate(sweep.objectives):
        if o.metric in DEVICE_OBJECTIVES:
            if sweep.hil is None:
                errors.append(f"sweep.objectives[{i}].metric: {o.metric} is measured on boards: add a sweep.hil "
                              "section (docs/sweeps.md, 'Measured on boards')")
            elif o.metric == "device.train_energy_j_per_step" and not sweep.hil.train_steps:
                errors.append(f"sweep.objectives[{i}].metric: {o.metric} needs sweep.hil.train_steps > 0")
            if sweep.search == "optuna":
                errors.append(f"sweep.objectives[{i}].metric: {o.metric}: optuna learns from what trials report "
                              "while they train, and boards measure a trial after it ends; use search: grid or "
                              "random for device objectives")
        elif not is_trial_metric(o.metric):
            errors.append(f"sweep.objectives[{i}].metric: unknown metric {o.metric!r} (trials report: "
                          f"{', '.join(TRIAL_METRICS)}, iou_<class>; boards measure: {', '.join(DEVICE_OBJECTIVES)})")
    errors += check_hil(sweep)
    names = [o.metric for o in sweep.objectives]
    if len(set(names)) != len(names):
        errors.append("sweep.objectives: a metric is listed twice")
    if not sweep.objectives:
        errors.append("sweep.objectives: at least one objective is needed (the Pareto front is built from them)")
    kinds = {d.kind for d in sweep.space.values()}
    if sweep.search == "optuna":
        if "grid" in kinds:
            grids = [p for p, d in sweep.space.items() if d.kind == "grid"]
            errors.append(f"sweep.search: optuna samples its own points and cannot take grid domains "
                          f"({', '.join(grids)}); use choice, or search: grid")
        if not sweep.space:
            errors.append("sweep.search: optuna needs a non-empty sweep.space")
    sch = sweep.scheduler
    if sch.kind == "asha":
        if not is_trial_metric(sch.metric):
            errors.append(f"sweep.scheduler.metric: unknown metric {sch.metric!r}")
        if base is not None:
            if base.train.eval_every != 1 and (sch.metric in EVAL_METRICS or is_per_class_metric(sch.metric)):
                errors.append(f"sweep.scheduler: ASHA compares {sch.metric} after every epoch, but train.eval_every "
                              f"is {base.train.eval_every}; set train.eval_every: 1")
            if sch.grace_period >= base.train.epochs:
                errors.append(f"sweep.scheduler.grace_period ({sch.grace_period}) must be below train.epochs "
                              f"({base.train.epochs}), or ASHA never stops anything")
    if sweep.hypervolume_reference is not None and len(sweep.hypervolume_reference) != len(sweep.objectives):
        errors.append(f"sweep.hypervolume_reference: {len(sweep.hypervolume_reference)} values for "
                      f"{len(sweep.objectives)} objectives")
    return errors


def check_hil(sweep: SweepConfig) -> list[str]:
    """The ``sweep.hil`` section against the board inventory (read now: a typo fails before Ray starts)."""
    hil = sweep.hil
    if hil is None:
        return []
    errors = []
    if hil.mode == "predicted_front" and not any(o.metric.startswith("device.") for o in sweep.objectives):
        errors.append("sweep.hil.measure: predicted_front ranks on predicted device figures: name one in "
                      "sweep.objectives (e.g. device.energy_j_per_image)")
    if hil.mode == "promoted" and sweep.scheduler.kind != "asha":
        errors.append("sweep.hil.measure: promoted means 'passed an ASHA rung'; set sweep.scheduler.kind: asha, "
                      "or measure: all")
    if hil.mode == "predicted_front" and any(o.metric == "device.latency_ms_p90" for o in sweep.objectives):
        errors.append("sweep.hil.measure: predicted_front: the cost model predicts J/image, latency p50 and "
                      "training J/step, not device.latency_ms_p90; rank on device.latency_ms_p50")
    if hil.buckets:
        from workers.export import ExportError, parse_buckets

        try:
            parse_buckets(hil.buckets)
        except (ExportError, ValueError) as exc:
            errors.append(f"sweep.hil.buckets: {exc}")
    try:
        inv, _, _ = select_boards(hil.boards, hil.labels, hil.primary)
    except UserError as exc:
        errors.append(f"sweep.hil: {exc}")
        return errors
    energy = [o.metric for o in sweep.objectives if o.metric.startswith("device.") and "energy" in o.metric]
    if energy and all(b.power == "none" for b in inv.boards):
        errors.append(f"sweep.objectives: {', '.join(energy)}: every selected board has power: none, so no "
                      "energy can be measured; rank on device.latency_ms_p50, or select boards with a power source")
    return errors


def check_dataset(base: ExperimentConfig) -> tuple[list[str], int | None]:
    """(problems of the dataset's splits, the number of training images or None if unknown)."""
    from workers.data.datasets import open_dataset
    from workers.data.datasets.base import DatasetError

    d = base.data
    if not Path(d.root).exists():
        return [f"data.root: {d.root}: no such folder (make one with `dance data synth {d.root}`)"], None
    errors, n_train = [], None
    for key, split in (("data.train_split", d.train_split), ("data.val_split", d.val_split)):
        try:
            ds = open_dataset(d.kind, d.root, split)
        except (DatasetError, OSError, ValueError) as exc:
            errors.append(f"{key}: {exc}")
            continue
        if key == "data.train_split":
            n_train = len(ds)
    return errors, n_train


def check_feasible(tree: dict, sweep: SweepConfig, n_train: int) -> list[str]:
    """Rules a trial would fail on at its start, for every grid point and the bounds of a random space:
    today, that ANS's stages fit in the training steps of its window (counted as if nothing were
    dropped, so a point refused here can never fit)."""
    axes = {k: d.probe_points() for k, d in sweep.space.items()}
    points = corner_points(axes)
    if points is None:  # too many corners: the base and each axis's points on their own
        points = [{}] + [{k: v} for k, vals in axes.items() for v in vals]
    found: dict[str, list[dict]] = {}
    for point in points:
        try:
            cfg = ExperimentConfig.model_validate(apply_point(tree, point))
        except ValidationError:
            continue  # reported by check_space
        if not cfg.ans.enabled:
            continue
        steps = [math.ceil(n_train / cfg.batch_size)] * cfg.train.epochs
        problem = prune_plan_problem(steps, ans_window(cfg.train.mode, cfg.train.epochs), cfg.ans.stages,
                                     cfg.ans.schedule, at_most=True)
        if problem:
            found.setdefault(problem, []).append(point)
    return [problem if len(at) == len(points) or at == [{}] else
            f"{problem} (at {'; '.join(json.dumps(p) for p in at)})" for problem, at in found.items()]


def load_sweep(path: Path | str, overrides: Sequence[str] = (), *, check_data: bool = True) -> SweepSpec:
    """Read and check a sweep file; raises one :class:`UserError` listing every problem."""
    spec, errors = check_sweep(path, overrides, check_data=check_data)
    if errors or spec is None:
        raise UserError(f"{path}: {len(errors)} problem(s) in the sweep config\n  " + "\n  ".join(errors))
    return spec


def check_sweep(path: Path | str, overrides: Sequence[str] = (), *,
                check_data: bool = True) -> tuple[SweepSpec | None, list[str]]:
    """(the sweep, every problem of its file); the sweep is None where its base config or sweep section
    is not valid. A file that cannot be read at all raises :class:`UserError`."""
    path = Path(path)
    tree = read_tree(path)
    apply_overrides(tree, overrides)
    raw_sweep = tree.pop("sweep", None)
    errors: list[str] = []
    sweep = None
    if raw_sweep is None:
        errors.append("sweep: missing section (what to sweep: space, search, objectives; see docs/sweeps.md)")
    elif not isinstance(raw_sweep, dict):
        errors.append(f"sweep: expected a mapping, got {type(raw_sweep).__name__}")
    else:
        raw_sweep = dict(raw_sweep)
        raw_space = raw_sweep.pop("space", None) or {}
        try:
            sweep = SweepConfig.model_validate(raw_sweep)
        except ValidationError as exc:
            errors += ["sweep." + line for line in _lines(exc)]
        # Domain by domain, so one bad domain does not hide the problems of the others.
        domains = {}
        if not isinstance(raw_space, dict):
            errors.append(f"sweep.space: expected a mapping of path: domain, got {type(raw_space).__name__}")
            raw_space = {}
        for key, raw in raw_space.items():
            try:
                domains[str(key)] = Domain.model_validate(raw)
            except ValidationError as exc:
                errors += [f"sweep.space.{key}" + (f".{line}" if not line.startswith("(top level)") else
                                                   line[len("(top level)"):]) for line in _lines(exc)]
        if sweep is not None:
            sweep = sweep.model_copy(update={"space": domains})
    base = None
    try:
        base = ExperimentConfig.model_validate(tree)
    except ValidationError as exc:
        errors += _lines(exc)
    if sweep is not None:
        errors += check_search(sweep, base)
        if base is not None:
            errors += check_space(tree, sweep)
    cwd = Path.cwd()
    if base is not None:
        base = absolute_paths(base, cwd)
        if check_data:
            data_errors, n_train = check_dataset(base)
            errors += data_errors
            if n_train and sweep is not None and not errors:
                errors += check_feasible(tree, sweep, n_train)
    spec = SweepSpec(str(path), tree, base, sweep, str(cwd)) if base is not None and sweep is not None else None
    return spec, errors


def tune_space(sweep: SweepConfig) -> dict[str, Any]:
    """Ray Tune's ``param_space`` (dotted paths as flat keys; non-scalar values as JSON text)."""
    from ray import tune

    out: dict[str, Any] = {}
    for dotted, dom in sweep.space.items():
        v = dom.values
        if dom.kind == "grid":
            out[dotted] = tune.grid_search([encode_value(x) for x in v])
        elif dom.kind == "choice":
            out[dotted] = tune.choice([encode_value(x) for x in v])
        elif dom.kind == "uniform":
            out[dotted] = tune.uniform(v[0], v[1])
        elif dom.kind == "loguniform":
            out[dotted] = tune.loguniform(v[0], v[1])
        else:
            out[dotted] = tune.randint(v[0], v[1])
    return out


def count_trials(sweep: SweepConfig) -> int:
    """How many trials Tune will create: the grid's size × num_samples (optuna: num_samples)."""
    if sweep.search == "optuna":
        return sweep.num_samples
    n = 1
    for dom in sweep.space.values():
        if dom.kind == "grid":
            n *= len(dom.values)
    return n * sweep.num_samples
