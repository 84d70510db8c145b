"""`dance train --address` on a real 2-node Ray cluster started with the ``ray`` CLI on this host.

Two ``ray start --block`` processes (a head and a worker node, 1 CPU each, each with its own
``--temp-dir`` and ports; every address given is 127.0.0.1, which Ray on Linux advertises as
the host's own interface IP — ``services.resolve_ip_for_localhost`` — so nothing leaves the
host; the dashboard, for the State API, listens on 127.0.0.1 only), then ``dance train`` through
``orchestrator.cli.main`` with 2 workers × 1 CPU: neither node can hold both workers, so a
finished run means Ray Train spread the worker group over the two nodes; the State API's
record of the ``RayTrainWorker`` actors confirms it.

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

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from orchestrator.cli import main  # noqa: E402
from workers.train_loop import METRIC_NAMES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
_cli = Path(sys.executable).with_name("ray")
RAY_CLI = str(_cli) if _cli.is_file() else shutil.which("ray")

pytestmark = pytest.mark.skipif(RAY_CLI is None, reason="the `ray` CLI is not installed (next to this Python or on PATH)")

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


@pytest.fixture
def _restore_auth_config():
    yield
    from ray._raylet import Config

    Config.initialize("")  # after monkeypatch restored RAY_AUTH_MODE: this process reads it afresh


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
        # what any `ray.init()` of a local instance does (tests/test_train_ray.py): ~/.ray/auth_token
        subprocess.run([RAY_CLI, "get-auth-token", "--generate"], check=True, capture_output=True, timeout=60)
        loader.reset_cache()


@pytest.mark.timeout(300)
def test_train_spreads_over_two_ray_start_nodes(tmp_path, _restore_auth_config, monkeypatch):
    from workers.data.synth import generate_dataset

    assert not ray.is_initialized(), "another test left Ray initialized in this process"
    t0 = time.monotonic()
    root = tmp_path / "synth"
    generate_dataset(root, n_train=8, n_val=4, size=(64, 128), seed=3)

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    _pin_auth_mode(monkeypatch)
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")

    # Short temp dirs: Ray's Unix sockets live under them (108-byte path limit).
    temps = [Path(tempfile.mkdtemp(prefix="dance-rc", dir="/tmp"))]
    temps.append(Path(tempfile.mkdtemp(prefix="dance-rc", dir="/tmp")))
    gcs_port, dash_port = _free_port(), _free_port()
    address = f"127.0.0.1:{gcs_port}"
    common = ["--block", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0",
              "--object-store-memory=100000000", "--min-worker-port=0", "--max-worker-port=0",
              "--disable-usage-stats", "--log-style=record"]
    head_cmd = [RAY_CLI, "start", "--head", f"--port={gcs_port}", f"--temp-dir={temps[0]}",
                "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
                f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}", *common]
    worker_cmd = [RAY_CLI, "start", f"--address={address}", f"--temp-dir={temps[1]}",
                  f"--dashboard-agent-listen-port={_free_port()}", *common]

    nodes: list[tuple[subprocess.Popen, set[int]]] = []
    logs = [tmp_path / "head.log", tmp_path / "worker.log"]
    out_json = tmp_path / "outcome.json"
    try:
        for cmd, log in zip((head_cmd, worker_cmd), logs):
            with open(log, "wb") as fh:
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env, cwd=tmp_path, start_new_session=True)
            nodes.append((proc, set()))
            if cmd is head_cmd:
                _wait_port(gcs_port, proc, log, NODE_START_TIMEOUT_S)

        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        try:
            deadline = time.monotonic() + TWO_NODES_TIMEOUT_S
            while len(_alive_nodes()) < 2 and time.monotonic() < deadline:
                for (proc, _), log in zip(nodes, logs):
                    assert proc.poll() is None, f"{log.name}: ray start exited:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
            alive = _alive_nodes()
            assert len(alive) == 2, f"{len(alive)} alive node(s) after {TWO_NODES_TIMEOUT_S} s:\n" + \
                "\n".join(log.read_text()[-2000:] for log in logs)
            node_ids = {n["NodeID"] for n in alive}
            assert [n["Resources"].get("CPU") for n in alive] == [1.0, 1.0]
            assert ray.cluster_resources().get("CPU") == 2.0
        finally:
            ray.shutdown()  # `dance train` must join the cluster itself, from --address
        for proc, tracked in nodes:
            tracked |= _node_pids(proc)
        t_cluster = time.monotonic() - t0

        args = ["train", str(ROOT / "configs" / "quickstart.yaml"), "--address", address, "--json", str(out_json)]
        for o in [f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}", "model.variant=small",
                  "slimming.casd_range={lo: 0.0, hi: 0.6}", "ans.stages=1", "ans.min_gamma_spread=1e-6",
                  "train.epochs=1", "train.batch_size=2", "train.eval_batch_size=4", "train.max_failures=0",
                  f"train.storage_path={tmp_path / 'ray_results'}", "tracking.enabled=false",
                  "scaling.num_workers=2", "scaling.cpus_per_worker=1"]:
            args += ["--set", o]
        try:
            assert main(args) == 0
            # Ray advertises the host's own IP for 127.0.0.1 (services.resolve_ip_for_localhost)
            assert ray.is_initialized() and ray.get_runtime_context().gcs_address.endswith(f":{gcs_port}")
            from ray.util.state import list_actors

            workers = list_actors(address=f"http://127.0.0.1:{dash_port}", detail=True, timeout=30,
                                  filters=[("class_name", "=", "RayTrainWorker")], raise_on_missing_output=False)
        finally:
            ray.shutdown()
        t_train = time.monotonic() - t0 - t_cluster

        outcome = json.loads(out_json.read_text())
        assert [m["epoch"] for m in outcome["history"]] == [0]
        for k in METRIC_NAMES:
            assert k in outcome["metrics"], k
        assert 0 <= outcome["metrics"]["miou"] <= 1 and outcome["metrics"]["images_per_s"] > 0
        assert outcome["checkpoint"] and Path(outcome["checkpoint"]).is_file()

        assert len(workers) == 2, [(a.actor_id, a.state, a.node_id) for a in workers]
        assert {a.node_id for a in workers} == node_ids, "both Train workers ran on one node"
        print(f"cluster up in {t_cluster:.1f} s, dance train in {t_train:.1f} s")
    finally:
        if ray.is_initialized():
            ray.shutdown()
        survivors = []
        for proc, tracked in reversed(nodes):  # worker node first, then the head
            survivors += _stop_node(proc, tracked)
        for d in temps:
            shutil.rmtree(d, ignore_errors=True)
    assert not survivors, f"Ray processes survived the teardown: {survivors}"
