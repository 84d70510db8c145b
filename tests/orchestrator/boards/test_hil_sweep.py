"""A hardware-in-the-loop sweep end to end: 4 trials on local Ray, 3 emulated TX2 boards over
real sshd, MLflow read back with ``MlflowClient``. (One export bucket: mixtures of buckets are the
bench's own tests.)

One board is killed while it measures; the job moves to its twin and no trial loses its
measurement. Then the sweep is resumed with one trial's measurement marked unfinished (as
if the driver died after the boards answered but before it logged): the cache answers and
no board sees a login.
"""
from __future__ import annotations

import csv
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.ray]  # starts Ray (and servers): `make test`, not `make test-fast`

ray = pytest.importorskip("ray")


def _journal_rows(path: Path) -> list[tuple]:
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT id, state, board, history FROM jobs").fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return []


def test_hil_sweep_measures_every_trial_survives_a_dead_board_and_resumes_from_the_cache(fleet, tmp_path,
                                                                                        monkeypatch):
    import mlflow

    from orchestrator.runs.pareto import pareto_ranks
    from orchestrator.runs.schema import plain_metrics
    from orchestrator.sweep.runner import run_sweep
    from orchestrator.sweep.space import load_sweep
    from workers.data.synth import generate_dataset

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    root = tmp_path / "synth"
    generate_dataset(root, n_train=12, n_val=4, size=(64, 128), seed=3)
    for name in ("tx2-a", "tx2-b", "tx2-c"):  # three: after one is cut off, two share the rest of the jobs
        fleet.add(name)
    inv = fleet.inventory()  # the fleet's short agent windows (~1.5 s a job)
    boards = tmp_path / "boards.yaml"
    boards.write_text(yaml.safe_dump(inv.model_dump(mode="json")))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tmp_path / "hil.yaml"
    cfg.write_text(f"""
name: hil-test
data: {{root: {root}, cache_dir: {tmp_path / 'cache'}}}
model: {{name: deeplabv3plus, variant: small}}
ans: {{enabled: true, stages: 2, l1_lambda: 1.0e-3, min_gamma_spread: 1.0e-6}}
optim: {{lr: 0.02}}
train: {{epochs: 2, batch_size: 2, eval_batch_size: 4, size_quantum: 32, max_failures: 0,
        storage_path: {tmp_path / 'results'}}}
scaling: {{num_workers: 1, cpus_per_worker: 0.99}}
sweep:
  name: hil-sweep
  space:
    ans.target_ratio: {{grid: [0.3, 0.7]}}
    slimming.cad: {{grid: [true, false]}}
  objectives: [{{metric: miou, mode: max}}, {{metric: device.energy_j_per_image, mode: min}}]
  max_concurrent_trials: 2
  register_models: false
  hil:
    boards: {boards}
    labels: [tx2]
    measure: all
    wait: false
    train_steps: 1
    buckets: "64x128:1.0"
""")
    journal = tmp_path / ".dance" / "hil" / "hil-sweep.journal.sqlite"
    victim: list[str] = []

    def kill_a_board_mid_job():
        end = time.monotonic() + 600
        while time.monotonic() < end and not stop.is_set():
            rows = _journal_rows(journal)
            done = sum(r[1] == "done" for r in rows)
            running = [r for r in rows if r[1] == "running" and r[2]]
            if done >= 3 and running:
                time.sleep(0.5)  # inside the agent's timed window
                name = running[0][2]
                fleet.sshds[name].cut_off()
                victim.append(name)
                return
            time.sleep(0.1)

    stop = threading.Event()
    killer = threading.Thread(target=kill_a_board_mid_job, daemon=True)
    killer.start()
    ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False)
    try:
        out = run_sweep(load_sweep(cfg), tracking_uri=uri, live=False, print_fn=None)
        stop.set()
        killer.join(5)
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name("hil-test")
        kids = client.search_runs([exp.experiment_id], filter_string="tags.`dance.kind` = 'trial'")
        assert len(kids) == 4 and {r.info.status for r in kids} == {"FINISHED"}
        assert victim, "the test never caught a board mid-job"
        # every trial measured, the dead board's job finished on its twin, nothing failed
        for r in kids:
            m = r.data.metrics
            assert r.data.tags["dance.hil"] == "measured", r.data.tags
            assert m["device.energy_j_per_image"] > 0 and m["device.latency_ms_p50"] > 0
            assert m["device.train_energy_j_per_step"] > 0
            # the unqualified figure is the board kind's (the tx2 label groups both boards)
            assert m["device.energy_j_per_image"] == m["device.tx2.energy_j_per_image"]
        rows = _journal_rows(journal)
        assert rows and all(r[1] == "done" for r in rows)
        moved = [r for r in rows if victim[0] in r[3] and r[2] != victim[0]]
        assert moved, "no job moved off the killed board"
        assert out.hil["measured"] == 4 and out.hil["failed"] == 0 and out.hil["pending"] == 0
        # the front is ranked on the measured energy
        ranked = sorted(kids, key=lambda r: r.data.tags["dance.trial_id"])
        plain = [plain_metrics(r.data.metrics) for r in ranked]  # MLflow holds accuracy/miou (grouped names)
        vals = np.array([[m["miou"], m["device.energy_j_per_image"]] for m in plain])
        expect = pareto_ranks(vals, ["max", "min"])
        assert [int(r.data.metrics["pareto_rank"]) for r in ranked] == [int(k) for k in expect]
        local = client.download_artifacts(out.parent_run_id, "pareto.csv", str(tmp_path / "front"))
        table = list(csv.DictReader(open(local)))
        assert {t["hil"] for t in table} == {"measured"} and all(float(t["device.energy_j_per_image"]) > 0
                                                                for t in table)

        # dance runs shows the measured figures and each trial's board state
        from orchestrator.cli import main

        assert main(["runs", out.parent_run_id, "--tracking-uri", uri, "--csv", str(tmp_path / "runs.csv")]) == 0
        shown = list(csv.DictReader(open(tmp_path / "runs.csv")))
        assert {r["boards"] for r in shown} == {"measured"}
        assert all(float(r["device.energy_j_per_image"]) > 0 and float(r["device.latency_ms_p50"]) > 0 for r in shown)

        # resume with one trial's measurement unfinished: answered from the cache, no board contacted
        one = ranked[0]
        before = dict(one.data.metrics)
        client.set_tag(one.info.run_id, "dance.hil", "pending")
        logins = {n: s.accepted() for n, s in fleet.sshds.items()}
        again = run_sweep(load_sweep(cfg), tracking_uri=uri, resume="hil-sweep", live=False, print_fn=None)
        assert again.hil["measured"] == 1 and again.hil["jobs_run"] == 0
        assert {n: s.accepted() for n, s in fleet.sshds.items()} == logins
        after = client.get_run(one.info.run_id)
        assert after.data.tags["dance.hil"] == "measured"
        assert after.data.metrics["device.energy_j_per_image"] == before["device.energy_j_per_image"]
    finally:
        stop.set()
        ray.shutdown()
