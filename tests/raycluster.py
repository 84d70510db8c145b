"""A real 2-node Ray cluster on this host, started with the ``ray`` CLI, for tests.

Two ``ray start --block`` processes (a head and a worker node, each with its own
``--temp-dir`` and ports; every address given is 127.0.0.1, which Ray on Linux advertises as
the host's own interface IP — ``services.resolve_ip_for_localhost`` — so nothing leaves the
host; the dashboard, for the State API, listens on 127.0.0.1 only).

Teardown never uses ``ray stop``: it kills every Ray process of the machine's user (another
session's cluster included) and cannot be scoped to one ``--temp-dir``. Each node runs in
its own process group (``start_new_session``) and ``--block`` makes ``ray start`` shut its
node down on SIGTERM; whatever is left of the group (raylet, workers) is then SIGKILLed.

Auth (DESIGN §5): a ``ray start`` worker node and a driver joining by explicit address never
turn token auth on by themselves, while a head does when ``~/.ray/auth_token`` exists. Both
nodes and the driver here get the same explicit ``RAY_AUTH_MODE`` (the caller's, else
``token``).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import ray

_cli = Path(sys.executable).with_name("ray")
RAY_CLI = str(_cli) if _cli.is_file() else shutil.which("ray")


NODE_START_TIMEOUT_S = 60
TWO_NODES_TIMEOUT_S = 60
STOP_TIMEOUT_S = 15


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"port {port} not open after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _node_pids(proc: subprocess.Popen) -> set[int]:
    """The node's process group: ``ray start``, GCS, raylet, agents and the workers the raylet forked."""
    import psutil  # vendored by Ray (ray/thirdparty_files), importable once ray is imported

    pids = set()
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == proc.pid:
                pids.add(p.pid)
        except (ProcessLookupError, PermissionError, OSError):
            pass
    try:  # anything that left the group (setsid) but is still a descendant
        pids.update(c.pid for c in psutil.Process(proc.pid).children(recursive=True))
    except psutil.Error:
        pass
    return pids


def _stop_node(proc: subprocess.Popen, tracked: set[int]) -> list[int]:
    """SIGTERM ``ray start --block`` (it stops its node), then SIGKILL what is left; returns survivors."""
    import psutil

    tracked |= _node_pids(proc)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)
    alive = []
    for pid in tracked:
        try:
            p = psutil.Process(pid)
            p.kill()
            alive.append(p)
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(alive, timeout=STOP_TIMEOUT_S)
    return [p.pid for p in still]


def _alive_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n["Alive"]]


def _pin_auth_mode(monkeypatch) -> None:
    """One auth mode for the head, the worker node and this driver: the caller's, else ``token``.

    The driver is this pytest process, whose Ray read ``RAY_AUTH_MODE`` when it was imported:
    it re-reads it as Ray's own ``ray.init()`` does when it turns token auth on.
    """
    from ray._raylet import AuthenticationTokenLoader, Config

    monkeypatch.setenv("RAY_AUTH_MODE", os.environ.get("RAY_AUTH_MODE") or "token")
    Config.initialize("")
    loader = AuthenticationTokenLoader.instance()
    if os.environ["RAY_AUTH_MODE"] == "token" and not loader.has_token(ignore_auth_mode=True):
        # what any `ray.init()` of a local instance does (tests/orchestrator/test_train_ray.py): ~/.ray/auth_token
        subprocess.run([RAY_CLI, "get-auth-token", "--generate"], check=True, capture_output=True, timeout=60)
        loader.reset_cache()


@dataclass
class Cluster:
    address: str
    dashboard: str
    node_ids: set[str]
    worker_node: subprocess.Popen | None = None  # the second node's ``ray start --block`` (its process group)
    join_fn: Callable[[], subprocess.Popen] | None = None  # starts the worker node, when it joins later

    def join(self) -> float:
        """Start the worker node now (``two_node_cluster(..., worker_joins=False)``) and wait until the
        head's State API lists two alive nodes; returns how long that took."""
        from ray.util.state import list_nodes

        assert self.worker_node is None and self.join_fn is not None, "the worker node has joined already"
        t0 = time.monotonic()
        self.worker_node = self.join_fn()
        deadline = t0 + TWO_NODES_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.worker_node.poll() is None, "the joining node's `ray start` exited"
            alive = [n for n in list_nodes(address=self.dashboard, timeout=10, raise_on_missing_output=False)
                     if n.state == "ALIVE"]
            if len(alive) == 2:
                self.node_ids = {n.node_id for n in alive}
                return time.monotonic() - t0
            time.sleep(0.5)
        raise TimeoutError(f"the worker node did not join in {TWO_NODES_TIMEOUT_S} s")

    def kill_worker_raylet(self) -> int:
        """SIGKILL the worker node's raylet (a node lost without warning); its pid."""
        import psutil

        for pid in _node_pids(self.worker_node):
            try:
                if psutil.Process(pid).name() == "raylet":
                    os.kill(pid, signal.SIGKILL)
                    return pid
            except psutil.Error:
                continue
        raise RuntimeError("the worker node has no raylet")


@contextmanager
def two_node_cluster(tmp_path: Path, monkeypatch, cpus: float = 1, worker_joins: bool = True) -> Iterator[Cluster]:
    """A head and a worker node of ``cpus`` CPUs each; torn down by their own process ids.

    ``worker_joins=False``: only the head runs at first; :meth:`Cluster.join` starts the worker node."""
    assert not ray.is_initialized(), "another test left Ray initialized in this process"
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    _pin_auth_mode(monkeypatch)
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    # Short temp dirs: Ray's Unix sockets live under them (108-byte path limit).
    temps = [Path(tempfile.mkdtemp(prefix="dance-rc", dir="/tmp")) for _ in range(2)]
    gcs_port, dash_port = _free_port(), _free_port()
    address = f"127.0.0.1:{gcs_port}"
    common = ["--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus:g}", "--num-gpus=0",
              "--object-store-memory=100000000", "--min-worker-port=0", "--max-worker-port=0",
              "--disable-usage-stats", "--log-style=record"]
    head_cmd = [RAY_CLI, "start", "--head", f"--port={gcs_port}", f"--temp-dir={temps[0]}",
                "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
                f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}", *common]
    worker_cmd = [RAY_CLI, "start", f"--address={address}", f"--temp-dir={temps[1]}",
                  f"--dashboard-agent-listen-port={_free_port()}", *common]
    nodes: list[tuple[subprocess.Popen, set[int]]] = []
    logs = [tmp_path / "head.log", tmp_path / "worker.log"]
    survivors: list[int] = []

    def start(cmd: list[str], log: Path) -> subprocess.Popen:
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=tmp_path, start_new_session=True)
        nodes.append((proc, set()))  # before anything can fail: the teardown stops it
        return proc

    want = 2 if worker_joins else 1
    try:
        _wait_port(gcs_port, start(head_cmd, logs[0]), logs[0], NODE_START_TIMEOUT_S)
        if worker_joins:
            start(worker_cmd, logs[1])
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        try:
            deadline = time.monotonic() + TWO_NODES_TIMEOUT_S
            while len(_alive_nodes()) < want and time.monotonic() < deadline:
                for (proc, _), log in zip(nodes, logs):
                    assert proc.poll() is None, f"{log.name}: ray start exited:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
            alive = _alive_nodes()
            assert len(alive) == want, f"{len(alive)} alive node(s) after {TWO_NODES_TIMEOUT_S} s:\n" + \
                "\n".join(log.read_text()[-2000:] for log in logs if log.exists())
            assert [n["Resources"].get("CPU") for n in alive] == [float(cpus)] * want
            node_ids = {n["NodeID"] for n in alive}
        finally:
            ray.shutdown()  # the code under test joins the cluster itself, from its address
        for proc, tracked in nodes:
            tracked |= _node_pids(proc)
        yield Cluster(address, f"http://127.0.0.1:{dash_port}", node_ids,
                      worker_node=nodes[1][0] if worker_joins else None,
                      join_fn=None if worker_joins else (lambda: start(worker_cmd, logs[1])))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for proc, tracked in reversed(nodes):  # worker node first, then the head
            survivors += _stop_node(proc, tracked)
        for d in temps:
            shutil.rmtree(d, ignore_errors=True)
        from ray._raylet import Config

        Config.initialize("")  # after monkeypatch restores RAY_AUTH_MODE this process reads it afresh
    assert not survivors, f"Ray processes survived the teardown: {survivors}"


def train_worker_nodes(dashboard: str) -> set[str]:
    """Nodes that ran a ``RayTrainWorker`` (the State API keeps dead actors' records)."""
    from ray.util.state import list_actors

    actors = list_actors(address=dashboard, detail=True, timeout=30, limit=10000,
                         filters=[("class_name", "=", "RayTrainWorker")], raise_on_missing_output=False)
    return {a.node_id for a in actors}
