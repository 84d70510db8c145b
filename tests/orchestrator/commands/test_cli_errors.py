"""Bad input and failures end in one clear line and exit status 2, never a traceback."""
import pytest

from orchestrator.cli import main
from orchestrator.config import load_config
from orchestrator.errors import UserError
from orchestrator.training import failure_reason, preflight


def test_full_disk_or_unwritable_output_is_one_line(tmp_path, capsys):
    from workers.data.synth import generate_dataset

    generate_dataset(tmp_path / "ds", n_train=4, n_val=1, size=(32, 64), seed=0)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    argv = ["data", "score", "--dataset", "cityscapes", "--root", str(tmp_path / "ds"), "--no-cache",
            "--out", str(blocker / "scores.csv")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dance: error:") and "not_a_folder" in err[0]


def test_eval_rejects_non_positive_batch_size(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(tmp_path), "--batch-size", "0"])
    assert exc.value.code == 2 and "at least 1" in capsys.readouterr().err


def test_export_accepts_only_real_checkpoints(tmp_path, capsys):
    (tmp_path / "ck").mkdir()
    assert main(["export", str(tmp_path / "ck"), "--format", "onnx", "--out", str(tmp_path / "o")]) == 2
    assert "has no model.pt" in capsys.readouterr().err
    (tmp_path / "ck" / "model.pt").write_bytes(b"not a checkpoint")
    assert main(["export", str(tmp_path / "ck"), "--format", "onnx", "--out", str(tmp_path / "o")]) == 2
    assert "model.pt" in capsys.readouterr().err


def test_preflight_catches_worker_side_errors_on_the_driver(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match="train.init_checkpoint"):
        preflight(load_config(None, [f"train.init_checkpoint={bad}"]))
    with pytest.raises(UserError, match="model.pretrained_backbone"):
        preflight(load_config(None, [f"model.pretrained_backbone={tmp_path / 'missing.pth'}"]))


def test_failure_reason_digs_out_the_worker_error():
    from ray.train.v2.api.exceptions import WorkerGroupError

    from workers.data.datasets.base import DatasetError

    inner = DatasetError("/data/x_leftImg8bit.png: unreadable image (truncated)")
    exc = WorkerGroupError("Training failed due to worker errors:\n[Rank 1] long traceback ...",
                           {1: inner, 0: ValueError("no")})
    assert failure_reason(exc) == "ValueError: no"  # the lowest rank's error
    exc = WorkerGroupError("Training failed", {1: inner})
    assert failure_reason(exc) == "DatasetError: /data/x_leftImg8bit.png: unreadable image (truncated)"
