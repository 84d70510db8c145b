"""`dance data synth|stats|score` end to end through the console entry point, and its errors."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from orchestrator.cli import main


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    assert main(["data", "synth", str(root), "--train", "12", "--val", "4", "--size", "64x128", "--seed", "3"]) == 0
    return root


def test_stats_json_counts_classes(synth_root, capsys):
    assert main(["data", "stats", "--dataset", "cityscapes", "--root", str(synth_root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 12 and out["sizes"] == {"64x128": 12}
    assert "road" in out["class_pixels"] and out["class_pixels"]["road"] > 0
    total = sum(out["class_pixels"].values()) + out["ignored_pixels"]
    assert total == 12 * 64 * 128


def test_score_writes_csv_and_prints_fit(synth_root, tmp_path, capsys):
    out_csv = tmp_path / "scores.csv"
    args = ["data", "score", "--dataset", "cityscapes", "--root", str(synth_root), "--out", str(out_csv)]
    env_cache = ["--no-cache"]
    assert main(args + env_cache) == 0
    text = capsys.readouterr().out
    assert "loc=" in text and "scale=" in text
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 12 and set(rows[0]) == {"image", "sc_mean", "p"}
    sc = np.array([float(r["sc_mean"]) for r in rows])
    p = np.array([float(r["p"]) for r in rows])
    assert (p >= 0).all() and (p <= 1).all()
    order = np.argsort(sc)
    assert (np.diff(p[order]) >= -1e-12).all()  # p is monotone in SC


def test_score_from_config(synth_root, tmp_path, capsys):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"data:\n  kind: cityscapes\n  root: {synth_root}\n  cache_dir: {tmp_path / 'cache'}\n")
    assert main(["data", "score", str(cfg)]) == 0
    assert "Maxwell CDF (fitted on train)" in capsys.readouterr().out
    assert list((tmp_path / "cache" / "complexity").glob("*.npz"))


def test_score_val_uses_the_train_cdf(synth_root, tmp_path, capsys):
    """p of a val image comes from the CDF fitted on TRAIN (the one the model uses), not a fresh fit on val."""
    from workers.dance.cdf import MaxwellCDF
    from workers.data.datasets import open_dataset
    from workers.data.scoring import score_dataset

    out_csv = tmp_path / "val.csv"
    assert main(["data", "score", "--dataset", "cityscapes", "--root", str(synth_root), "--split", "val",
                 "--out", str(out_csv), "--no-cache"]) == 0
    assert "fitted on train" in capsys.readouterr().out
    rows = list(csv.DictReader(out_csv.open()))
    sc_train = score_dataset(open_dataset("cityscapes", synth_root, "train"), use_cache=False)
    sc_val = np.array([float(r["sc_mean"]) for r in rows])
    train_cdf, val_cdf = MaxwellCDF.fit(sc_train), MaxwellCDF.fit(sc_val)
    got = np.array([float(r["p"]) for r in rows])
    np.testing.assert_allclose(got, train_cdf.p(sc_val), atol=2e-6)
    assert np.abs(val_cdf.p(sc_val) - got).max() > 1e-3   # a fresh fit on val would differ


@pytest.mark.parametrize("argv,needle", [
    (["data", "stats", "--dataset", "cityscapes", "--root", "/nonexistent/dir"], "/nonexistent/dir"),
    (["data", "score", "--dataset", "nosuchkind", "--root", "."], "unknown dataset kind"),
    (["data", "score"], "name a dataset"),
])
def test_bad_input_gives_one_clear_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dance: error:") and needle in err


def test_bad_yaml_names_file_and_line(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("data:\n  kind: cityscapes\n   root: [unclosed\n")
    assert main(["data", "score", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "line" in err


def test_bad_value_names_yaml_path(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("slimming:\n  cad_range: {lo: 0.9, hi: 0.2}\ndata:\n  score_batch: 0\n")
    assert main(["data", "score", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "slimming.cad_range" in err and "data.score_batch" in err


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "data", "score", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "--out" in out.stdout


def test_score_with_a_checkpoints_cdf(synth_root, tmp_path, capsys):
    import torch

    from workers.checkpoint import save_checkpoint
    from workers.dance.cdf import MaxwellCDF
    from workers.models import build_model

    torch.manual_seed(0)
    cdf = MaxwellCDF(1.0, 17.0)
    ckpt = save_checkpoint(tmp_path / "c.pt", build_model("deeplabv3plus", num_classes=19, variant="small"), cdf=cdf)
    out_csv = tmp_path / "val.csv"
    assert main(["data", "score", "--dataset", "cityscapes", "--root", str(synth_root), "--split", "val",
                 "--checkpoint", str(ckpt), "--out", str(out_csv), "--no-cache"]) == 0
    assert f"from {ckpt}" in capsys.readouterr().out
    rows = list(csv.DictReader(out_csv.open()))
    sc = np.array([float(r["sc_mean"]) for r in rows])
    np.testing.assert_allclose([float(r["p"]) for r in rows], cdf.p(sc), atol=2e-6)
    no_cdf = save_checkpoint(tmp_path / "n.pt", build_model("deeplabv3plus", num_classes=19, variant="small"))
    assert main(["data", "score", "--dataset", "cityscapes", "--root", str(synth_root),
                 "--checkpoint", str(no_cdf)]) == 2
    assert "no CDF" in capsys.readouterr().err
