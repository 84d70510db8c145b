"""Sweeps at scale-out: a real 2-node ``ray start`` cluster logging to a real ``mlflow server``,
and checkpoint storage on an S3-compatible server (moto), all on 127.0.0.1.

The cluster has two nodes of 1 CPU; each trial is one Train worker of 0.98 CPU plus its
driver's 0.01, so the two trials run at once only by taking one node each; the State API's
record of the ``RayTrainWorker`` actors shows both nodes were used. Every child run and its
artifacts must be in the server (artifacts proxied to its artifact destination).
"""
from __future__ import annotations

from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from raycluster import RAY_CLI, train_worker_nodes, two_node_cluster  # noqa: E402
from servers import mlflow_server, s3_server  # noqa: E402

from orchestrator.cli import main  # noqa: E402
from orchestrator.runs.schema import metric_history  # noqa: E402

pytestmark = pytest.mark.integration  # starts Ray (and servers): `make test`, not `make test-fast`


def _sweep_yaml(tmp: Path, root: Path, name: str, storage: str, epochs: int, lrs: list[float], cpus: float) -> Path:
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(f"""
name: {name}
data: {{root: {root}, cache_dir: {tmp / 'cache'}}}
model: {{name: deeplabv3plus, variant: small}}
slimming: {{casd_range: {{lo: 0.0, hi: 0.6}}}}
ans: {{enabled: true, stages: 1, target_ratio: 0.5, l1_lambda: 1.0e-3, min_gamma_spread: 1.0e-6}}
train: {{epochs: {epochs}, batch_size: 2, eval_batch_size: 4, size_quantum: 32, max_failures: 0,
        storage_path: "{storage}"}}
scaling: {{num_workers: 1, cpus_per_worker: {cpus}}}
sweep:
  space:
    optim.lr: {{grid: {lrs}}}
""")
    return cfg


@pytest.fixture
def dataset(tmp_path):
    from workers.data.synth import generate_dataset

    root = tmp_path / "synth"
    generate_dataset(root, n_train=8, n_val=4, size=(64, 128), seed=5)
    return root


@pytest.mark.skipif(RAY_CLI is None, reason="the `ray` CLI is not installed (next to this Python or on PATH)")
@pytest.mark.timeout(420)
def test_sweep_on_two_ray_start_nodes_logs_to_an_mlflow_server(tmp_path, monkeypatch, dataset):
    import mlflow

    cfg = _sweep_yaml(tmp_path, dataset, "sweep-cluster", str(tmp_path / "results"), 2, [0.02, 0.01], 0.98)
    with mlflow_server(tmp_path) as uri, two_node_cluster(tmp_path, monkeypatch) as cluster:
        try:
            assert main(["sweep", str(cfg), "--address", cluster.address, "--tracking-uri", uri, "--plain"]) == 0
            nodes = train_worker_nodes(cluster.dashboard)
        finally:
            ray.shutdown()
        assert nodes == cluster.node_ids, "the trials' Train workers did not use both nodes"
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name("sweep-cluster")
        assert exp.artifact_location.startswith("mlflow-artifacts:")  # artifacts go through the server
        kids = client.search_runs([exp.experiment_id], filter_string="tags.`dance.kind` = 'trial'")
        parent = client.search_runs([exp.experiment_id], filter_string="tags.`dance.kind` = 'sweep'")
        assert len(kids) == 2 and len(parent) == 1
        for r in kids:
            assert r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
            assert len(metric_history(client, r.info.run_id, "miou")) == 2
            files = {f.path for f in client.list_artifacts(r.info.run_id, "checkpoint")}
            assert "checkpoint/model.pt" in files
            local = client.download_artifacts(r.info.run_id, "checkpoint/model.pt", str(tmp_path / r.info.run_id))
            assert Path(local).stat().st_size > 10_000
        assert {"pareto.csv", "pareto.png"} <= {f.path for f in client.list_artifacts(parent[0].info.run_id)}
        # ... and they live in the server's artifact destination, not in a client-side folder.
        stored = list((tmp_path / "server-artifacts").rglob("model.pt"))
        assert len(stored) >= 2


@pytest.mark.timeout(300)
def test_checkpoints_go_to_an_s3_compatible_server(tmp_path, monkeypatch, dataset):
    import mlflow
    import pyarrow.fs as pafs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with s3_server(tmp_path) as endpoint:
        fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", access_key="testing",
                               secret_key="testing", region="us-east-1", allow_bucket_creation=True)
        fs.create_dir("dance-ckpt")
        storage = f"s3://dance-ckpt/sweeps?endpoint_override={endpoint}&scheme=http"
        cfg = _sweep_yaml(tmp_path, dataset, "sweep-s3", storage, 2, [0.02], 0.99)
        monkeypatch.chdir(tmp_path)
        try:
            assert main(["sweep", str(cfg), "--tracking-uri", uri, "--plain"]) == 0
        finally:
            ray.shutdown()
        found = [i.path for i in fs.get_file_info(pafs.FileSelector("dance-ckpt/sweeps", recursive=True))
                 if i.path.endswith("model.pt")]
        assert any("/train/" in p and "checkpoint_epoch_0001" in p for p in found), found
        assert any(i.path.endswith("tuner.pkl") for i in
                   fs.get_file_info(pafs.FileSelector("dance-ckpt/sweeps", recursive=True)))
        assert not (tmp_path / ".dance").exists()  # nothing went to the local default
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name("sweep-s3")
        kid = client.search_runs([exp.experiment_id], filter_string="tags.`dance.kind` = 'trial'")[0]
        assert kid.info.status == "FINISHED"
        assert "checkpoint/model.pt" in {f.path for f in client.list_artifacts(kid.info.run_id, "checkpoint")}
    # An unreachable bucket is one clear error, before Ray starts.
    bad = _sweep_yaml(tmp_path, dataset, "sweep-s3-bad", "s3://nope/x?endpoint_override=127.0.0.1:9&scheme=http",
                      1, [0.02], 0.99)
    assert main(["sweep", str(bad), "--tracking-uri", uri]) == 2
    assert not ray.is_initialized()
