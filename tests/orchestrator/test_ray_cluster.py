"""`dance train --address` on a real 2-node Ray cluster started with the ``ray`` CLI on this host.

The cluster (tests/raycluster.py) has two nodes of 1 CPU each; ``dance train`` runs through
``orchestrator.cli.main`` with 2 workers × 1 CPU: neither node can hold both workers, so a
finished run means Ray Train spread the worker group over the two nodes; the State API's
record of the ``RayTrainWorker`` actors confirms it.

Marked ``slow`` (run by ``make test-all``, not ``make test``) to keep the CI suite under its
20-minute budget on 2 cores: ``make test`` still starts a two-node ``ray start`` cluster
(tests/orchestrator/sweep/test_sweep_cluster.py: trials on both nodes, a real MLflow server)
and runs DDP over two workers (tests/orchestrator/test_train_ray.py); what only this test
shows is one DDP worker group spread across the two nodes.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from raycluster import RAY_CLI, two_node_cluster  # noqa: E402

from orchestrator.cli import main  # noqa: E402
from workers.train_loop import METRIC_NAMES  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.slow,
              pytest.mark.skipif(RAY_CLI is None,
                                 reason="the `ray` CLI is not installed (next to this Python or on PATH)")]


@pytest.mark.timeout(300)
def test_train_spreads_over_two_ray_start_nodes(tmp_path, monkeypatch):
    from workers.data.synth import generate_dataset

    t0 = time.monotonic()
    root = tmp_path / "synth"
    generate_dataset(root, n_train=8, n_val=4, size=(64, 128), seed=3)
    out_json = tmp_path / "outcome.json"
    with two_node_cluster(tmp_path, monkeypatch) as cluster:
        t_cluster = time.monotonic() - t0
        args = ["train", str(ROOT / "configs" / "quickstart.yaml"), "--address", cluster.address,
                "--json", str(out_json)]
        for o in [f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}", "model.variant=small",
                  "slimming.casd_range={lo: 0.0, hi: 0.6}", "ans.stages=1", "ans.min_gamma_spread=1e-6",
                  "train.epochs=1", "train.batch_size=2", "train.eval_batch_size=4", "train.max_failures=0",
                  f"train.storage_path={tmp_path / 'ray_results'}", "tracking.enabled=false",
                  "scaling.num_workers=2", "scaling.cpus_per_worker=1"]:
            args += ["--set", o]
        try:
            assert main(args) == 0
            # Ray advertises the host's own IP for 127.0.0.1 (services.resolve_ip_for_localhost)
            assert (ray.is_initialized()
                    and ray.get_runtime_context().gcs_address.endswith(":" + cluster.address.rsplit(":", 1)[1]))
            from ray.util.state import list_actors

            workers = list_actors(address=cluster.dashboard, detail=True, timeout=30,
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
        assert {a.node_id for a in workers} == cluster.node_ids, "both Train workers ran on one node"
        print(f"cluster up in {t_cluster:.1f} s, dance train in {t_train:.1f} s")
