"""`dance data premise DATASET --checkpoint CKPT` end to end on a tiny synthetic set, and its errors."""
from __future__ import annotations

import json

import pytest

from orchestrator.cli import main
from orchestrator.config import load_config
from workers.premise import PREMISE_MIOU_DROP, VERDICTS, verdict_phrase
from workers.prepare import worker_config
from workers.train_loop import CHECKPOINT_FILE, run_local


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """16 train / 12 val synthetic images at 64x128 and a small model trained one epoch on them (no Ray)."""
    from workers.data.synth import generate_dataset

    tmp = tmp_path_factory.mktemp("premise_cli")
    generate_dataset(tmp / "synth", n_train=16, n_val=12, size=(64, 128), seed=4)
    cfg = load_config(None, [f"data.root={tmp / 'synth'}", f"data.cache_dir={tmp / 'cache'}", "model.variant=small",
                             "ans.enabled=false", "optim.lr=0.02", "train.epochs=1", "train.batch_size=4",
                             "train.eval_batch_size=4", "scaling.num_workers=1"])
    rt = run_local(worker_config(cfg), checkpoint_root=tmp / "ckpt")
    return tmp, rt.checkpoints[-1] / CHECKPOINT_FILE


def test_premise_prints_a_verdict_writes_json_and_logs_a_run(trained, capsys):
    tmp, ckpt = trained
    out_json, uri = tmp / "premise.json", f"sqlite:///{tmp / 'mlflow.db'}"
    assert main(["data", "premise", str(tmp / "synth"), "--checkpoint", str(ckpt), "--resamples", "200",
                 "--json", str(out_json), "--tracking-uri", uri, "--experiment", "premise-test"]) == 0
    text = capsys.readouterr().out
    lines = [line for line in text.splitlines() if line.startswith("verdict: the premise ")]
    said = lines[0].removeprefix("verdict: the premise ")
    assert len(lines) == 1 and said.startswith(tuple(f"{verdict_phrase(v)} on this data" for v in VERDICTS))
    assert "rule: the premise holds when" in text and "tercile" in text
    res = json.loads(out_json.read_text())
    assert {"premise_spearman", "premise_spearman_lo", "premise_spearman_hi", *PREMISE_MIOU_DROP, "verdict",
            "verdict_line", "rule", "terciles", "per_image", "images", "split"} <= set(res)
    assert res["images"] == 12 and res["split"] == "val" and res["verdict"] in VERDICTS
    assert [t["images"] for t in res["terciles"]] == [4, 4, 4]
    # 64x128 at 0.5x on the model's grid (output stride 16): 32x64
    assert res["terciles"][0]["input_sizes"] == ["64x128->32x64"]
    lo, hi = res["premise_spearman_lo"], res["premise_spearman_hi"]
    assert -1 <= lo <= res["premise_spearman"] <= hi <= 1
    for t, name in zip(res["terciles"], PREMISE_MIOU_DROP):
        assert t["miou_drop"] == pytest.approx(res[name]) and t["miou_drop"] == pytest.approx(
            t["miou_full"] - t["miou_scaled"])
    assert res["verdict_line"] in text
    import mlflow

    run = mlflow.MlflowClient(uri).get_run(res["mlflow_run_id"])
    assert run.data.tags["dance.kind"] == "premise" and run.data.tags["dance.premise.verdict"] == res["verdict"]
    assert run.data.metrics["premise_spearman"] == pytest.approx(res["premise_spearman"])
    assert {"premise_spearman_lo", "premise_spearman_hi", *PREMISE_MIOU_DROP} <= set(run.data.metrics)


@pytest.mark.parametrize("what,needle", [
    ("no dataset", "no such dataset folder or config file"),
    ("no checkpoint", "neither a checkpoint file/folder nor an MLflow run id"),
    ("corrupt checkpoint", "not a readable checkpoint"),
    ("folder without model", f"folder has no {CHECKPOINT_FILE}"),
    ("wrong kind", "unknown dataset kind"),
])
def test_bad_input_exits_2_with_one_line(trained, tmp_path, capsys, what, needle):
    tmp, ckpt = trained
    dataset, checkpoint, extra = str(tmp / "synth"), str(ckpt), []
    if what == "no dataset":
        dataset = str(tmp_path / "nowhere")
    elif what == "no checkpoint":
        checkpoint = str(tmp_path / "missing.pt")
    elif what == "corrupt checkpoint":
        (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
        checkpoint = str(tmp_path / "bad.pt")
    elif what == "folder without model":
        checkpoint = str(tmp_path)
    else:
        extra = ["--kind", "nosuchkind"]
    assert main(["data", "premise", dataset, "--checkpoint", checkpoint, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dance: error:") and needle in err and "\n" not in err
