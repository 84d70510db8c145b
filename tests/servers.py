"""Real servers for tests, on 127.0.0.1, each stopped by its own process group id.

* ``mlflow_server``: ``mlflow server`` with a sqlite backend and an artifact destination
  (artifacts go through the server, ``mlflow-artifacts:/``).
* ``s3_server``: moto's standalone S3-compatible server.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from orchestrator.processes import free_port

BIN = Path(sys.executable).parent


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} not answering after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@contextmanager
def _process(cmd: list[str], log: Path, health: str, env: dict | None = None) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env or dict(os.environ))
    try:
        _wait_http(health, proc, log)
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and the workers it forked
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=15)


@contextmanager
def mlflow_server(tmp: Path) -> Iterator[str]:
    """A tracking server at http://127.0.0.1:PORT; yields its URI."""
    port = free_port()
    mlflow = str(BIN / "mlflow") if (BIN / "mlflow").is_file() else shutil.which("mlflow")
    cmd = [mlflow, "server", "--backend-store-uri", f"sqlite:///{tmp / 'server.db'}",
           "--artifacts-destination", str(tmp / "server-artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    with _process(cmd, tmp / "mlflow-server.log", f"http://127.0.0.1:{port}/health"):
        yield f"http://127.0.0.1:{port}"


class RestartableMlflowServer:
    """An ``mlflow server`` that a test stops (by its own process group id) and starts again on the same port
    and backend store: an outage of the tracking server, and its return."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.tmp, self.port = tmp, port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        mlflow = str(BIN / "mlflow") if (BIN / "mlflow").is_file() else shutil.which("mlflow")
        cmd = [mlflow, "server", "--backend-store-uri", f"sqlite:///{self.tmp / 'server.db'}",
               "--artifacts-destination", str(self.tmp / "server-artifacts"), "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1"]
        self.starts += 1
        log = self.tmp / f"mlflow-server-{self.starts}.log"
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=dict(os.environ))
        _wait_http(f"{self.uri}/health", self.proc, log, timeout=240)  # a busy machine: a minute or two

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the server and the workers it forked, by its group
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=15)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # a forked worker that outlived its parent
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None


@contextmanager
def s3_server(tmp: Path) -> Iterator[str]:
    """moto's S3 server; yields ``host:port``. Credentials are whatever the client sends."""
    port = free_port()
    moto = str(BIN / "moto_server") if (BIN / "moto_server").is_file() else shutil.which("moto_server")
    with _process([moto, "-H", "127.0.0.1", "-p", str(port)], tmp / "moto.log",
                  f"http://127.0.0.1:{port}/moto-api/"):
        yield f"127.0.0.1:{port}"
