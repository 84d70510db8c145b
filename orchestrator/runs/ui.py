"""The MLflow UI over the platform's runs, started the way it works on a small machine.

One worker process (uvicorn's default of four were killed while starting on 2 busy cores),
127.0.0.1 only, the store and artifact root the runs used (the embedded SQLite store's
``mlartifacts/`` beside it), and a direct link to a sweep's runs.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.processes import stop_group
from orchestrator.runs.schema import SWEEP_ID_TAG
from orchestrator.runs.tracking import DEFAULT_ARTIFACTS, find_sweep_run

# mlflow is imported inside the functions (a sweep lookup): `dance --help` needs none of it.


@dataclass
class SweepLink:
    """Where a sweep is in the UI."""

    experiment_id: str
    parent_run_id: str
    sweep_id: str

    def runs(self, base: str) -> str:
        """The experiment's runs table, searched down to this sweep (its parent row expands to its trials)."""
        query = urllib.parse.urlencode({"searchFilter": f"tags.`{SWEEP_ID_TAG}` = '{self.sweep_id}'"})
        # the runs route, not the experiment's overview: MLflow 3.17 opens an experiment on its GenAI
        # overview whatever its kind tag, and on the runs table only here
        return f"{base}/#/experiments/{self.experiment_id}/runs?{query}"

    def parent(self, base: str) -> str:
        return f"{base}/#/experiments/{self.experiment_id}/runs/{self.parent_run_id}"


def find_sweep_link(uri: str, sweep: str | None) -> SweepLink | None:
    """The sweep named by a sweep id or parent run id, else the newest sweep in the store (None: no sweep)."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    try:
        run = find_sweep_run(client, sweep)  # a sweep id or a parent run id alike
    except UserError:
        if sweep:
            raise
        return None
    return SweepLink(run.info.experiment_id, run.info.run_id, run.data.tags.get(SWEEP_ID_TAG, ""))


def server_command(uri: str, port: int) -> list[str]:
    """``mlflow server`` over the store at ``uri`` (an embedded SQLite file), one worker, on 127.0.0.1."""
    if not uri.startswith("sqlite:///"):
        raise UserError(f"{uri}: dance ui starts a UI over a local SQLite store; this store is served "
                        "already: open it in a browser")
    db = Path(uri[len("sqlite:///"):])
    if not db.is_file():
        raise UserError(f"no MLflow store at {db} (run `dance quickstart` or a sweep first, or pass --tracking-uri)")
    exe = Path(sys.executable).with_name("mlflow")
    mlflow = str(exe) if exe.is_file() else (shutil.which("mlflow") or "mlflow")
    return [mlflow, "server", "--backend-store-uri", uri, "--default-artifact-root",
            str((db.parent / DEFAULT_ARTIFACTS).resolve()), "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]


def start_ui(uri: str, port: int, log: Path, timeout_s: float = 180.0) -> subprocess.Popen:
    """Start the UI in its own process group and wait until it answers (``/health``)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(server_command(uri, port), stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"the MLflow UI exited with {proc.returncode} (port {port} in use?); its log: {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.3)
    stop_ui(proc)
    raise UserError(f"the MLflow UI did not answer within {timeout_s:.0f} s; its log: {log}")


def stop_ui(proc: subprocess.Popen) -> None:
    """Stop the UI's process group (the server and its worker) by its own PID."""
    stop_group(proc.pid, None)
    proc.poll()  # collected by stop_group already: let Popen know
