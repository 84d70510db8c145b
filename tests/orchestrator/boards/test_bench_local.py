"""`dance bench RUN_ID` on the embedded-style local board: the training run's checkpoint artifact is
benched and the figures land in that same run; no power source → latency only, energy absent."""
import io
import re
from contextlib import redirect_stdout

import mlflow
import yaml

from orchestrator.cli import main as dance
from workers.checkpoint import save_checkpoint
from workers.dance.cdf import MaxwellCDF
from workers.models import build_model


def test_bench_a_run_id_logs_into_that_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ck = tmp_path / "ckpt"
    ck.mkdir()
    save_checkpoint(ck / "model.pt", build_model("bisenet", num_classes=3, variant="small").eval(),
                    cdf=MaxwellCDF(2.0, 5.0))
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("train-exp", artifact_location=(tmp_path / "art").as_uri())
    run_id = client.create_run(exp, run_name="a-training-run").info.run_id
    client.log_artifacts(run_id, str(ck), "checkpoint")  # what `dance train` logs
    boards = tmp_path / "boards.yaml"
    boards.write_text(yaml.safe_dump({
        "known_hosts": str(tmp_path / "kh"),
        "measure": {"duration": 0.3, "repeats": 2, "idle": 0.2, "warmup": 0.1, "min_samples": 5, "threads": 1},
        "boards": [{"name": "here", "transport": "local", "power": "none", "workdir": str(tmp_path / "work")}]}))
    out = io.StringIO()
    with redirect_stdout(out):
        rc = dance(["bench", run_id, "--boards", str(boards), "--buckets", "64x128", "--tracking-uri", uri, "--no-ray"])
    assert rc == 0, out.getvalue()
    assert f"mlflow: run {run_id}" in out.getvalue() and "here  infer    64x128" in out.getvalue()
    m = client.get_run(run_id).data.metrics
    assert m["device.here.latency_ms_p50"] > 0 and m["device.here.b64x128.latency_ms_p90"] > 0
    assert not [k for k in m if "energy" in k]  # nothing measured energy: absent, not 0
    assert len(client.search_runs([exp])) == 1  # no second run for a run id
    assert list((tmp_path / "work" / "jobs").iterdir()) == []

    def bench(*extra):
        out = io.StringIO()
        with redirect_stdout(out):
            assert dance(["bench", run_id, "--boards", str(boards), "--buckets", "64x128", "--tracking-uri", uri,
                          "--no-ray", *extra]) == 0
        return out.getvalue()

    assert "0 job(s) run on boards, 1 answered from the cache, no board contacted" in bench()
    # --fresh measures again: one job, or two when the quality gate re-measured a spread over its limit
    # (measurements disagree more while other tests load the 2 cores)
    again = bench("--fresh")
    assert re.search(r"\b[12] job\(s\) run on boards, 0 answered from the cache", again), again


def test_bench_refuses_what_is_neither_a_checkpoint_nor_a_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = dance(["bench", "no-such-thing", "--no-ray"])
    assert rc == 2 and "neither a checkpoint file/folder nor an MLflow run id" in capsys.readouterr().err
    rc = dance(["bench", "0" * 32, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--no-ray"])
    assert rc == 2 and "not found" in capsys.readouterr().err
