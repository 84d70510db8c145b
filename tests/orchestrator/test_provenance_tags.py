"""`dance train` tags its run with the pretrained backbone's digest and source note when it creates it.

(The sweep's trials get the same tags: tests/orchestrator/sweep/test_sweep_tracker_writer.py; the report
checks the file against them: tests/orchestrator/report/test_curves.py.)
"""
from __future__ import annotations

import hashlib

from orchestrator.config import load_config
from orchestrator.runs.provenance import SOURCE_SUFFIX
from orchestrator.runs.schema import KIND_TAG, KIND_TRAIN, PRETRAINED_SHA256_TAG, PRETRAINED_SOURCE_TAG
from orchestrator.training import _open_run


def test_a_training_run_records_the_weights_it_was_created_with(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    # _open_run sets MLflow's tracking URI, which MLflow mirrors into MLFLOW_TRACKING_URI: recorded here so that
    # monkeypatch puts the variable back as it found it, and MLflow's own setting is reset below
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unset")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    w = tmp_path / "w.pth"
    w.write_bytes(b"backbone bytes")
    (tmp_path / f"w.pth{SOURCE_SUFFIX}").write_text("a wheel, version 1\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(None, [f"data.root={tmp_path}", "model.variant=small", f"model.pretrained_backbone={w}"])
    try:
        client, run_id, got_uri = _open_run(cfg, {}, "r", uri)
        assert got_uri == uri
        tags = mlflow.MlflowClient(uri).get_run(run_id).data.tags
    finally:
        mlflow.set_tracking_uri(None)
    assert tags[KIND_TAG] == KIND_TRAIN
    assert tags[PRETRAINED_SHA256_TAG] == hashlib.sha256(b"backbone bytes").hexdigest()
    assert tags[PRETRAINED_SOURCE_TAG] == "a wheel, version 1"
    # no weights configured: no provenance tags at all (absent, never empty)
    bare = load_config(None, [f"data.root={tmp_path}", "model.variant=small"])
    try:
        _, bare_id, _ = _open_run(bare, {}, "b", uri)
        bare_tags = mlflow.MlflowClient(uri).get_run(bare_id).data.tags
    finally:
        mlflow.set_tracking_uri(None)
    assert PRETRAINED_SHA256_TAG not in bare_tags and PRETRAINED_SOURCE_TAG not in bare_tags
