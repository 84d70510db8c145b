"""Everything a sweep (or a training run) can check before the dataset is scored or Ray starts.

Each check is a small function that returns one problem (a line naming the flag or config
key to change) or None; :func:`preflight_sweep` and :func:`preflight_train` run them all and
raise one :class:`UserError` listing every problem, so the CLI exits 2 within seconds
instead of failing minutes later inside Ray. ``--dry-run`` runs the same checks.
"""
from __future__ import annotations

import os
import socket
import threading
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import urlsplit

from orchestrator.errors import UserError
from orchestrator.runs.schema import RUN_ID, SWEEP_ID_TAG
from orchestrator.runs.tracking import DEFAULT_DB, experiment_of
from orchestrator.storage import is_uri, resolve_storage
from orchestrator.sweep.schema import SweepConfig
from orchestrator.sweep.space import SweepSpec, check_sweep

# mlflow is imported only where a --resume target must be looked up: the checks themselves need none of it.

#: seconds the tracking server gets to answer its one probe
PROBE_TIMEOUT_S = 3.0
# Default ports of the database URIs MLflow takes as a tracking store (a TCP connect is their probe).
DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
TRACKING_HINT = "pass a running server with --tracking-uri or $MLFLOW_TRACKING_URI (or start it)"


@dataclass
class TrackingTarget:
    """The tracking URI a command will use, and where it came from (what the user changes to fix it)."""

    uri: str
    source: str


def tracking_target(cli: str | None, config: str | None) -> TrackingTarget:
    """The same precedence as :func:`orchestrator.runs.tracking.resolve_tracking_uri`, with its source named."""
    if cli:
        return TrackingTarget(cli, "--tracking-uri")
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return TrackingTarget(os.environ["MLFLOW_TRACKING_URI"], "$MLFLOW_TRACKING_URI")
    if config:
        return TrackingTarget(config, "tracking.tracking_uri")
    return TrackingTarget(f"sqlite:///{(Path.cwd() / DEFAULT_DB).resolve()}", "the default store")


def _bounded(fn: Callable[[], str | None], timeout: float) -> str | None:
    """``fn()``'s answer, or a timeout problem: name resolution has no timeout of its own."""
    out: list[str | None] = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    t.join(timeout)
    return out[0] if out else f"no answer within {timeout:g} s"


def _http_probe(uri: str, timeout: float) -> str | None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):  # an MLflow behind authentication answers; its credentials are MLflow's business
            return None
        return f"answers HTTP {exc.code} to GET /health: not an MLflow tracking server at this address?"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"the MLflow server does not answer ({str(reason) or type(exc).__name__})"


def _tcp_probe(host: str, port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def _writable_folder(folder: Path) -> str | None:
    """Why a file cannot be created in ``folder`` (created if missing), or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".dance-write-probe-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def check_tracking(target: TrackingTarget, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """The tracking store answers: one short HTTP probe for a server, a TCP connect for a database, a
    write in the folder of a SQLite file or a file store."""
    uri = target.uri
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0]
    where = f"tracking URI {uri} (from {target.source})"
    if scheme in ("http", "https"):
        why = _bounded(lambda: _http_probe(uri, timeout), timeout + 1)
        return None if why is None else f"{where}: {why}; {TRACKING_HINT}"
    if scheme in DB_PORTS and parts.hostname:
        why = _bounded(lambda: _tcp_probe(parts.hostname, parts.port or DB_PORTS[scheme], timeout), timeout + 1)
        return None if why is None else f"{where}: the database does not answer ({why}); {TRACKING_HINT}"
    if scheme == "sqlite":
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if not path:
            return None  # in-memory or a form MLflow checks itself
        why = _writable_folder(Path(path).expanduser().parent)
        return None if why is None else f"{where}: cannot write in {Path(path).parent} ({why}); {TRACKING_HINT}"
    if scheme in ("", "file"):
        folder = Path(parts.path if scheme == "file" else uri).expanduser()
        why = _writable_folder(folder)
        return None if why is None else f"{where}: cannot write in {folder} ({why}); {TRACKING_HINT}"
    return None  # databricks, uc, ...: only MLflow itself knows how to ask them


def check_storage(path_or_uri: str, key: str = "train.storage_path") -> str | None:
    """Checkpoints can be written: a probe file in a folder, the bucket answers (and takes a probe object)."""
    text = str(path_or_uri)
    if not is_uri(text) or urlsplit(text).scheme == "file":
        folder = Path(urlsplit(text).path if is_uri(text) else text).expanduser()
        why = _writable_folder(folder)
        return None if why is None else f"{key}: {text}: not writable ({why}); give a folder every node can write"
    try:
        storage = resolve_storage(text)
    except UserError as exc:
        msg = str(exc)
        return msg if msg.startswith(key) else f"{key}: {msg}"
    probe = storage.join(f".dance-write-probe-{uuid.uuid4().hex[:8]}")
    try:
        with storage.filesystem.open_output_stream(probe) as f:
            f.write(b"")
        storage.filesystem.delete_file(probe)
    except OSError as exc:
        return f"{key}: {text}: the bucket answers but refuses a write ({str(exc).splitlines()[0]})"
    return None


def check_space_size(sweep: SweepConfig, allow_empty: bool) -> str | None:
    """An empty space is one trial of the base config: only on purpose (``--allow-empty``)."""
    if sweep.space or allow_empty:
        return None
    return ("sweep.space: empty, so the sweep would be one trial of the base config; add paths to sweep, "
            "or pass --allow-empty to run that single trial on purpose")


def resume_sweep_id(target: str, tracking_uri: str, experiment: str) -> str:
    """The sweep id ``--resume`` names: the id itself, or the sweep id of a parent run id."""
    if not RUN_ID.match(target):
        return target
    import mlflow

    from orchestrator.runs.tracking import find_sweep_run

    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    try:
        return find_sweep_run(client, target, [exp.experiment_id] if exp else []).data.tags[SWEEP_ID_TAG]
    except UserError:
        return target  # a sweep named with 32 hex digits; the saved-state check says if there is none


def check_resume(sweep_id: str, storage_path: str) -> str | None:
    """``--resume``: Tune's saved state of the sweep is where the config says."""
    storage = resolve_storage(storage_path)
    if storage.exists(storage.join(sweep_id, "tuner.pkl")):
        return None
    return (f"--resume {sweep_id}: no saved sweep at {storage.join(sweep_id)} (train.storage_path "
            f"{storage_path}); is it the sweep id printed at its start, with the same config?")


@dataclass
class Checked:
    """A sweep that passed every check: its spec and, for ``--resume``, the sweep id it resolved to."""

    spec: SweepSpec
    resume: str | None


def preflight_sweep(config: Path | str, overrides: Sequence[str] = (), *, tracking_uri: str | None = None,
                    allow_empty: bool = False, resume: str | None = None) -> Checked:
    """Every check of ``dance sweep`` (and ``--dry-run``): the config and its space (with the ANS
    feasibility check), the tracking store, the storage path, an empty space, the saved sweep of
    ``--resume``. Raises one :class:`UserError` listing every problem."""
    spec, problems = check_sweep(config, overrides)
    cfg = spec.base if spec is not None else None
    target = tracking_target(tracking_uri, cfg.tracking.tracking_uri if cfg is not None else None)
    tracking_problem = check_tracking(target)  # a sweep always logs to MLflow
    if tracking_problem:
        problems.append(tracking_problem)
    if spec is not None:
        storage_problem = check_storage(cfg.train.storage_path)
        problems += [x for x in (storage_problem, check_space_size(spec.sweep, allow_empty)) if x]
        if resume and storage_problem is None:
            if tracking_problem is None:
                resume = resume_sweep_id(resume, target.uri, experiment_of(cfg))
            problems += [x for x in (check_resume(resume, cfg.train.storage_path),) if x]
    if problems:
        raise UserError(f"{config}: {len(problems)} problem(s); nothing was started\n  " + "\n  ".join(problems))
    return Checked(spec, resume)


def preflight_train(cfg, tracking_uri: str | None = None) -> None:
    """``dance train``'s checks of what lies outside its config: the tracking store and the storage path."""
    problems = [check_storage(cfg.train.storage_path)]
    if cfg.tracking.enabled:
        problems.append(check_tracking(tracking_target(tracking_uri, cfg.tracking.tracking_uri)))
    problems = [p for p in problems if p]
    if problems:
        raise UserError(f"{len(problems)} problem(s); nothing was started\n  " + "\n  ".join(problems))
