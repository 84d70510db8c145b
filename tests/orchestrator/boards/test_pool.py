"""The board pool on real sshd boards: failures typed and retried, a vanishing board, restarts
from the journal, one job per board, and `dance bench` from a checkpoint into MLflow."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sshd_helpers import FAST, have_sshd

from orchestrator.boards.agentjob import Job
from orchestrator.boards.inventory import Measure
from orchestrator.boards.pool import BoardPool

ROOT = Path(__file__).resolve().parents[3]

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not have_sshd(),
                                 reason="needs Debian's openssh-server (/usr/sbin/sshd); .ci/run installs it")]


def _wrapper(path: Path, action: str, pidfile: Path) -> Path:
    """A board 'python' that runs the real agent and then does ``action`` to it after 0.8 s:
    ``kill -9`` (an agent that crashes: OOM killer, segfault) or ``kill -STOP`` (one that hangs)."""
    path.write_text(f"#!/bin/sh\n{sys.executable} \"$@\" &\nchild=$!\necho $child > {pidfile}\n"
                    f"sleep 0.8\nkill {action} $child\nwait $child\n")
    path.chmod(0o755)
    return path


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_agent_crash_is_typed_and_the_job_finishes_on_another_board(fleet, tmp_path, tiny_model):
    pidfile = tmp_path / "crash.pid"
    fleet.add("tx2-crash", python=str(_wrapper(tmp_path / "py-crash", "-9", pidfile)))
    fleet.add("tx2-good")
    pool = BoardPool(fleet.inventory(boards=[fleet.boards[0]]), tmp_path / "j.sqlite", max_attempts=2)
    try:
        out = pool.wait(pool.submit(Job(model=str(tiny_model), labels=["tx2"])), 120)
    finally:
        pool.close()
    assert out["state"] == "failed" and out["error"]["kind"] == "agent_crash" and out["attempts"] == 2
    assert "no JSON" in out["error"]["message"]
    # with a healthy twin, the same job ends done there; the crash is in its history
    pool = BoardPool(fleet.inventory(), tmp_path / "j2.sqlite", max_attempts=3)
    try:
        for _ in range(2):  # the first job may land on either board; ask until the crashing one was tried
            out = pool.wait(pool.submit(Job(model=str(tiny_model), labels=["tx2"], meta={"n": _})), 120)
            assert out["state"] == "done" and out["board"] == "tx2-good"
            assert out["result"]["energy_j_per_image_gross"] > 0
    finally:
        pool.close()


def test_agent_hanging_past_its_deadline_is_stopped(fleet, tmp_path, tiny_model):
    pidfile = tmp_path / "hang.pid"
    board = fleet.add("tx2-hang", python=str(_wrapper(tmp_path / "py-hang", "-STOP", pidfile)), job_deadline_s=4)
    pool = BoardPool(fleet.inventory(), tmp_path / "j.sqlite", max_attempts=1)
    t0 = time.monotonic()
    try:
        out = pool.wait(pool.submit(Job(model=str(tiny_model))), 60)
    finally:
        pool.close()
    assert out["state"] == "failed" and out["error"]["kind"] == "timeout" and "deadline" in out["error"]["message"]
    assert time.monotonic() - t0 < 30
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the hung agent was left running on the board"
    assert list(Path(board.workdir, "jobs").iterdir()) == []  # remote work folder cleaned


def test_board_disappearing_mid_job_hands_the_job_to_another(fleet, tmp_path, tiny_model):
    fleet.add("tx2-a")
    fleet.add("tx2-b")
    slow = Measure(**{**FAST.model_dump(), "duration": 1.5})
    pool = BoardPool(fleet.inventory(measure=slow), tmp_path / "j.sqlite", offline_after=1)
    try:
        jid = pool.submit(Job(model=str(tiny_model), labels=["tx2"]))
        victim, cursor = None, 0
        end = time.monotonic() + 30
        while victim is None and time.monotonic() < end:
            evs, cursor = pool.events(cursor)
            victim = next((e["board"] for e in evs if e["event"] == "start"), None)
            time.sleep(0.05)
        time.sleep(1.0)  # inside the agent's measurement
        fleet.sshds[victim].stop()  # the board vanishes: listener and its sessions killed
        out = pool.wait(jid, 120)
        states = pool.boards()
    finally:
        pool.close()
    assert out["state"] == "done" and out["board"] != victim
    kinds = [(h["board"], h["outcome"], h.get("kind")) for h in out["history"]]
    assert kinds[0] == (victim, "retry", "unreachable") and kinds[-1][1] == "done"
    assert not states[victim]["online"]
    assert out["result"]["ok"] and out["result"]["latency_ms"]["p50"] > 0


ORCHESTRATOR = """
import json, sys, time
from orchestrator.boards.inventory import Inventory
from orchestrator.boards.pool import BoardPool
from orchestrator.boards.agentjob import Job
inv = Inventory.model_validate(json.load(open(sys.argv[1])))
pool = BoardPool(inv, sys.argv[2])
ids = pool.submit_many([Job(**j) for j in json.load(open(sys.argv[3]))])
pool.wait(ids[0], 120)
print("FIRST_DONE", flush=True)
time.sleep(600)
"""


def test_restarted_orchestrator_resumes_the_journal_without_losing_or_repeating(fleet, tmp_path, tiny_model):
    fleet.add("tx2-r")
    inv = fleet.inventory()
    (tmp_path / "inv.json").write_text(json.dumps(inv.model_dump(mode="json")))
    jobs = [Job(model=str(tiny_model), meta={"i": i}) for i in range(3)]
    (tmp_path / "jobs.json").write_text(json.dumps([j.to_dict() for j in jobs]))
    journal = tmp_path / "journal.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", ORCHESTRATOR, str(tmp_path / "inv.json"), str(journal),
                             str(tmp_path / "jobs.json")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "FIRST_DONE"
        time.sleep(0.5)  # the second job is now running on the board
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the orchestrator dies without any clean-up
        proc.wait()
    pool = BoardPool(inv, journal)
    try:
        first_before = pool.outcome(jobs[0].key)
        assert first_before["state"] == "done"
        assert pool.recovered  # the job cut off mid-run was put back in the queue
        ids = pool.submit_many(jobs)  # the restarted driver submits the same work again
        assert ids == [j.key for j in jobs]
        outs = pool.wait_all(ids, 180)
    finally:
        pool.close()
    assert all(o["state"] == "done" for o in outs)
    assert outs[0]["result"] == first_before["result"]  # finished work is not repeated
    for o in outs:
        assert [h["outcome"] for h in o["history"]].count("done") == 1
    starts = {o["result"]["started_at"] + str(o["result"]["agent"]["pid"]) for o in outs}
    assert len(starts) == 3


def _window(result) -> tuple[float, float]:
    """The span of the agent's energy windows (idle baseline to the last repeat), monotonic clock."""
    t0 = min([result["idle"]["t_start_monotonic"]] + [r["t_start_monotonic"] for r in result["repeats"]])
    t1 = max(r["t_end_monotonic"] for r in result["repeats"])
    return t0, t1


def test_two_jobs_on_one_board_never_overlap(fleet, tmp_path, tiny_model):
    """Within one pool (one worker per board) and across two pools sharing the board (the lock on the board)."""
    fleet.add("tx2-one")
    inv = fleet.inventory()
    a = BoardPool(inv, tmp_path / "a.sqlite")
    b = BoardPool(inv, tmp_path / "b.sqlite")
    try:
        ia = a.submit_many([Job(model=str(tiny_model), meta={"pool": "a", "i": i}) for i in range(3)])
        ib = b.submit_many([Job(model=str(tiny_model), meta={"pool": "b", "i": i}) for i in range(2)])
        outs = a.wait_all(ia, 180) + b.wait_all(ib, 180)
    finally:
        a.close()
        b.close()
    assert all(o["state"] == "done" for o in outs), [o["history"] for o in outs if o["state"] != "done"]
    spans = sorted(_window(o["result"]) for o in outs)
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert e0 <= s1, f"windows overlap: {e0} > {s1}"


@pytest.mark.ray
def test_bench_checkpoint_to_mlflow_via_the_ray_pool_then_cache_hit(fleet, tmp_path, monkeypatch):
    """The happy path: checkpoint → export per bucket → Ray pool actor → two board kinds → MLflow;
    then the repeat is answered from the cache without any connection to a board."""
    import mlflow
    import ray

    from orchestrator.boards.bench import run_bench
    from workers.checkpoint import save_checkpoint
    from workers.dance.cdf import MaxwellCDF
    from workers.models import build_model

    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "ck.pt"
    save_checkpoint(ckpt, build_model("deeplabv3plus", num_classes=5, variant="small").eval(),
                    cdf=MaxwellCDF(3.0, 10.0))
    fleet.add("tx2-a", labels=["tx2"])
    fleet.add("cpu-b", labels=["cpu"], power="none")
    inv = fleet.inventory()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lines: list[str] = []
    try:
        res = run_bench(str(ckpt), inv, buckets="64x128:0.75,32x64:0.25", train_steps=1, tracking_uri=uri,
                        use_ray=True, log=lines.append)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert res.boards_contacted and res.jobs_run == 8 and not [m for m in res.measurements if m.error]
    run = mlflow.MlflowClient(uri).get_run(res.run_id)
    m, tags = run.data.metrics, run.data.tags
    # the TX2 kind: energy measured; expected J/image is the fraction-weighted sum of the buckets
    b64 = m["device.tx2-a.b64x128.energy_j_per_image"]
    b32 = m["device.tx2-a.b32x64.energy_j_per_image"]
    assert m["device.tx2-a.energy_j_per_image"] == pytest.approx(0.75 * b64 + 0.25 * b32)
    assert 0 < m["device.tx2-a.latency_ms_p50"] <= m["device.tx2-a.latency_ms_p90"]
    assert m["device.tx2-a.train_energy_j_per_step"] > 0
    # the board without a power source: latency, and energy ABSENT (not 0)
    assert m["device.cpu-b.latency_ms_p50"] > 0
    assert not [k for k in m if k.startswith("device.cpu-b.") and "energy" in k]
    assert tags["device.tx2-a.board_model"] == "quill" and tags["device.tx2-a.l4t"] == "32.6.1"
    assert tags["device.tx2-a.power_mode"] == "MAXN" and tags["device.tx2-a.board"] == "tx2-a"
    arts = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(res.run_id, "device/tx2-a")}
    assert "device/tx2-a/infer_64x128.json" in arts and "device/tx2-a/train_32x64.json" in arts
    assert "device/tx2-a/infer_64x128.trace.csv" in arts  # the agent's raw power samples
    assert not mlflow.MlflowClient(uri).list_artifacts(res.run_id, "device/cpu-b") or not [
        a for a in mlflow.MlflowClient(uri).list_artifacts(res.run_id, "device/cpu-b") if a.path.endswith(".csv")]
    assert sum("done" in ln for ln in lines) >= 8  # a progress line per job

    accepted = {n: s.accepted() for n, s in fleet.sshds.items()}
    again = run_bench(str(ckpt), inv, buckets="64x128:0.75,32x64:0.25", train_steps=1, tracking_uri=uri,
                      use_ray=False, log=lines.append)
    assert not again.boards_contacted and again.jobs_run == 0 and all(x.cached for x in again.measurements)
    assert {n: s.accepted() for n, s in fleet.sshds.items()} == accepted  # no board saw a login
    assert again.metrics == res.metrics
