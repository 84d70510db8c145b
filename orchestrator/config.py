"""Load experiment YAML into the typed schema, with ``--set key=value`` overrides.

Every problem is a :class:`UserError` naming the file and the YAML path
(``slimming.cad_range.lo: ...``), raised before anything expensive (Ray) starts.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import ValidationError

from orchestrator.errors import UserError
from workers.config import ExperimentConfig


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise UserError(f"--set {dotted}: '{k}' is not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(tree: dict, overrides: Sequence[str]) -> dict:
    """Apply ``key.sub=value`` strings; values are parsed as YAML scalars (``true``, ``0.5``, ``[1, 2]``)."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise UserError(f"--set {key}: cannot parse value {raw!r} ({exc})") from None
        _set_path(tree, key.strip(), value)
    return tree


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {path}: {msg}")
    return "\n".join(lines)


def read_yaml(p: Path, what: str = "config file") -> dict:
    """A YAML file whose top level is a mapping; one clear :class:`UserError` otherwise."""
    if not p.is_file():
        raise UserError(f"{p}: {what} not found")
    try:
        loaded = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{p}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserError(f"{p}: the top level must be a mapping of sections, got {type(loaded).__name__}")
    return loaded


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_tree(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The YAML at ``path`` with its ``base:`` chain merged in (the file's own keys win)."""
    path = path.resolve()
    if path in _seen:
        raise UserError(f"{path}: 'base' chain loops back to itself")
    tree = read_yaml(path)
    base = tree.pop("base", None)
    if base is None:
        return tree
    if not isinstance(base, str):
        raise UserError(f"{path}: base: expected a file path, got {type(base).__name__}")
    return deep_merge(read_tree((path.parent / base), _seen + (path,)), tree)


def load_config(path: Path | str | None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read, override and validate an experiment config (``None`` = all defaults)."""
    tree: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        tree = read_tree(Path(path))
        if "sweep" in tree:
            raise UserError(f"{path}: this is a sweep file (it has a sweep: section); "
                            f"run it with `dance sweep {path}`, "
                            "or train one point of it from the experiment file it is based on")
    apply_overrides(tree, overrides)
    try:
        cfg = ExperimentConfig.model_validate(tree)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, source)) from None
    return cfg
