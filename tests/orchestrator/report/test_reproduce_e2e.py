"""The synthetic protocol end to end at toy size, through the real commands: two sets of
different styles, `dance train` (pretraining), `dance sweep` (baseline and DANCE adapting
from the pretrained checkpoint), `dance report` with Table 12 timed on the trials' own
checkpoints. Slow (Ray starts twice): run with -m slow."""
from __future__ import annotations

import json

import pytest

from orchestrator.cli import main

pytestmark = pytest.mark.slow


def test_pretrain_adapt_sweep_and_report(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for name, seed, style in (("day", 0, "day"), ("dusk", 1, "dusk")):
        assert main(["data", "synth", str(tmp_path / name), "--train", "8", "--val", "4", "--size", "64x128",
                     "--seed", str(seed), "--style", style]) == 0
    common = f"""
model: {{name: deeplabv3plus, variant: small}}
optim: {{lr: 0.02}}
train: {{epochs: 2, batch_size: 2, eval_batch_size: 4, size_quantum: 32, max_failures: 0, \
storage_path: {tmp_path / 'results'}}}
scaling: {{num_workers: 1, cpus_per_worker: 0.99}}
"""
    (tmp_path / "pre.yaml").write_text(f"name: pre\ndata: {{root: {tmp_path / 'day'}, cache_dir: {tmp_path / 'c'}}}\n"
                                       "ans: {enabled: false}\nslimming: {cad: false, casd: false, cal: false}\n"
                                       + common)
    assert main(["train", str(tmp_path / "pre.yaml"), "--tracking-uri", uri, "--json", str(tmp_path / "pre.json")]) == 0
    ckpt = json.loads((tmp_path / "pre.json").read_text())["checkpoint"]
    (tmp_path / "sweep.yaml").write_text(
        f"name: adapt\ndata: {{root: {tmp_path / 'dusk'}, cache_dir: {tmp_path / 'c'}}}\n"
        "ans: {stages: 2, l1_lambda: 1.0e-3}\n" + common + """
sweep:
  name: e2e
  space:
    .trial: {grid: [{label: baseline, ans: {enabled: false}, slimming: {cad: false, casd: false, cal: false}}, \
{label: DANCE}]}
  scheduler: {kind: none}
  register_models: false
""")
    assert main(["sweep", str(tmp_path / "sweep.yaml"), "--plain", "--tracking-uri", uri,
                 "--set", f"train.init_checkpoint={ckpt}"]) == 0
    capsys.readouterr()
    out = tmp_path / "report"
    assert main(["report", "e2e", "--out", str(out), "--tracking-uri", uri, "--rounds", "2"]) == 0
    text = (out / "report.md").read_text()
    assert "| 1 | baseline | 1 |" in text and "| 7 | ANS+CAD+CAL+CASD | 1 |" in text
    t12 = text.split("### Table 12", 1)[1].split("###", 1)[0]
    assert "| backbone |" in t12 and "| header: multi-scale aggregation |" in t12 and "not in this sweep" not in t12
    for title in ("Table 4", "Table 6", "Fig. 4"):
        assert "not in this sweep" in text.split(f"### {title}", 1)[1].split("###", 1)[0]
    assert (out / "table12.png").is_file() and (out / "tradeoff.png").is_file()
    assert "report: " in capsys.readouterr().out
