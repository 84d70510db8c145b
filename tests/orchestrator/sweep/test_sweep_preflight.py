"""What `dance sweep` (and `dance train`) check before the dataset is scored or Ray starts; a sweep named
by its id or its parent run id alike; a trial labelled "stopped by the scheduler" only on its decision.

No Ray here: an unmarked test that reached ``ray.init`` would fail (tests/conftest.py), so a
command that exits 2 in these tests provably stopped before Ray.
"""
from __future__ import annotations

import http.server
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.sweep.preflight import (
    TrackingTarget,
    check_space_size,
    check_storage,
    check_tracking,
    preflight_sweep,
)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from workers.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("preflightdata") / "synth"
    generate_dataset(root, n_train=4, n_val=2, size=(32, 64), seed=3)
    return root


def sweep_file(tmp_path: Path, data_root: Path, storage: Path | str, space: str = "{optim.lr: {grid: [0.01]}}"):
    f = tmp_path / "s.yaml"
    f.write_text(f"name: pre\ndata: {{root: {data_root}}}\nmodel: {{name: deeplabv3plus, variant: small}}\n"
                 f"train: {{epochs: 2, batch_size: 2, storage_path: {storage}}}\nans: {{enabled: false}}\n"
                 f"sweep:\n  space: {space}\n")
    return f


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_server():
    """A socket that accepts connections and never answers: a hung server."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


@pytest.fixture
def health_server():
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_tracking_probe_names_the_flag_and_is_short(silent_server, health_server, tmp_path):
    refused = f"http://127.0.0.1:{closed_port()}"
    t0 = time.perf_counter()
    why = check_tracking(TrackingTarget(refused, "--tracking-uri"))
    assert time.perf_counter() - t0 < 3
    assert why and "does not answer" in why and "--tracking-uri" in why and "MLFLOW_TRACKING_URI" in why
    t0 = time.perf_counter()
    why = check_tracking(TrackingTarget(silent_server, "$MLFLOW_TRACKING_URI"), timeout=0.5)
    assert time.perf_counter() - t0 < 4 and "$MLFLOW_TRACKING_URI" in why
    assert check_tracking(TrackingTarget(health_server, "--tracking-uri")) is None
    why = check_tracking(TrackingTarget(health_server + "/not-mlflow", "--tracking-uri"))
    assert why and "HTTP 404" in why  # something answers, but not MLflow
    assert check_tracking(TrackingTarget(f"sqlite:///{tmp_path / 'm.db'}", "--tracking-uri")) is None
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    why = check_tracking(TrackingTarget(f"sqlite:///{blocker / 'sub' / 'm.db'}", "--tracking-uri"))
    assert why and "cannot write" in why


def test_storage_path_is_probed_and_named_by_its_key(tmp_path):
    assert check_storage(str(tmp_path / "new" / "results")) is None
    assert (tmp_path / "new" / "results").is_dir() and not list((tmp_path / "new" / "results").iterdir())
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    why = check_storage(str(blocker / "results"))
    assert why.startswith("train.storage_path: ") and "not writable" in why


def test_empty_space_needs_allow_empty():
    from orchestrator.sweep.schema import SweepConfig

    assert "--allow-empty" in check_space_size(SweepConfig(), allow_empty=False)
    assert check_space_size(SweepConfig(), allow_empty=True) is None


def test_every_problem_at_once_exit_2_within_seconds(tmp_path, data_root, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    f = sweep_file(tmp_path, data_root, blocker / "results", space="{}")
    uri = f"http://127.0.0.1:{closed_port()}"
    for argv in (["sweep", str(f), "--tracking-uri", uri, "--dry-run"], ["sweep", str(f), "--tracking-uri", uri]):
        t0 = time.perf_counter()
        assert main(argv) == 2  # the real run too: before scoring, before Ray (conftest forbids ray.init here)
        assert time.perf_counter() - t0 < 8  # seconds, not the minutes of a late failure
        err = capsys.readouterr().err
        assert "3 problem(s)" in err
        assert "--tracking-uri" in err and "train.storage_path:" in err and "--allow-empty" in err
    # --allow-empty takes the one-trial sweep; a good tracking store and storage pass
    good = sweep_file(tmp_path, data_root, tmp_path / "results", space="{}")
    assert main(["sweep", str(good), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--allow-empty",
                 "--dry-run"]) == 0
    assert "1 trial(s)" in capsys.readouterr().out


def test_config_problems_and_ans_feasibility_come_with_the_others(tmp_path, data_root):
    f = tmp_path / "s.yaml"
    f.write_text(f"data: {{root: {data_root}}}\nmodel: {{name: deeplabv3plus, variant: small}}\n"
                 "train: {epochs: 1, batch_size: 2}\nans: {enabled: true, stages: 1}\n"
                 "sweep:\n  space: {ans.stages: {grid: [1, 4]}}\n")
    with pytest.raises(UserError) as exc:
        preflight_sweep(f, tracking_uri=f"http://127.0.0.1:{closed_port()}")
    text = str(exc.value)
    assert "ans.stages=4 needs 4 separate training steps" in text and "does not answer" in text
    f.write_text(f"data: {{root: {data_root}}}\ntrain: {{epochs: 0}}\nsweep:\n  space: {{}}\n")
    with pytest.raises(UserError) as exc:
        preflight_sweep(f, tracking_uri=f"http://127.0.0.1:{closed_port()}")
    assert "train.epochs" in str(exc.value) and "does not answer" in str(exc.value)  # invalid base: tracking too


def test_resume_needs_a_saved_sweep(tmp_path, data_root):
    f = sweep_file(tmp_path, data_root, tmp_path / "results")
    with pytest.raises(UserError) as exc:
        preflight_sweep(f, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", resume="no-such-sweep")
    assert "--resume no-such-sweep: no saved sweep" in str(exc.value)


def test_train_checks_tracking_and_storage_before_ray(tmp_path, data_root, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = tmp_path / "t.yaml"
    cfg.write_text(f"data: {{root: {data_root}}}\ntrain: {{storage_path: {blocker / 'r'}}}\n")
    assert main(["train", str(cfg), "--tracking-uri", f"http://127.0.0.1:{closed_port()}"]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "train.storage_path:" in err and "--tracking-uri" in err


def test_a_sweep_is_found_by_its_id_and_by_its_parent_run_id(tmp_path, capsys):
    import mlflow

    from orchestrator.runs.schema import KIND_SWEEP, KIND_TAG, KIND_TRIAL, SWEEP_ID_TAG, TRIAL_ID_TAG
    from orchestrator.runs.tracking import find_sweep_run, setup

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = setup(uri, "found")
    client = mlflow.MlflowClient(uri)
    parent = client.create_run(exp, tags={KIND_TAG: KIND_SWEEP, SWEEP_ID_TAG: "sw-1"}).info.run_id
    client.create_run(exp, tags={KIND_TAG: KIND_TRIAL, SWEEP_ID_TAG: "sw-1", TRIAL_ID_TAG: "t_00000"})
    other = client.create_run(exp, tags={KIND_TAG: KIND_TRIAL}).info.run_id
    assert find_sweep_run(client, "sw-1").info.run_id == parent
    assert find_sweep_run(client, parent).info.run_id == parent
    assert find_sweep_run(client, None).info.run_id == parent  # the newest sweep
    with pytest.raises(UserError, match="not a sweep's parent run"):
        find_sweep_run(client, other)
    with pytest.raises(UserError, match="neither a sweep's parent run id nor a sweep id"):
        find_sweep_run(client, "sw-2")
    with pytest.raises(UserError, match="no such run"):
        find_sweep_run(client, "0123456789abcdef0123456789abcdef")
    for target in ("sw-1", parent):
        assert main(["runs", target, "--tracking-uri", uri]) == 0
        assert "t_00000" in capsys.readouterr().out
    assert main(["runs", "found", "--tracking-uri", uri]) == 0  # an experiment name still works
    assert main(["runs", "nothing-here", "--tracking-uri", uri]) == 2
    assert "nor an experiment name" in capsys.readouterr().err


class FakeClient:
    def __init__(self):
        self.tags, self.status = {}, None

    def set_tag(self, rid, key, value):
        self.tags[key] = value

    def set_terminated(self, rid, status):
        self.status = status

    def get_metric_history(self, rid, name):
        return []


def test_stopped_by_the_scheduler_only_on_its_decision(monkeypatch):
    from orchestrator.runs.schema import STOP_REASON_TAG
    from orchestrator.sweep import tracking
    from orchestrator.sweep.runner import DecidingASHA

    spec = SimpleNamespace(resolve=lambda c: SimpleNamespace(train=SimpleNamespace(epochs=3)))
    tracker = tracking.SweepTracker(tracking_uri="x", experiment_id="0", parent_run_id="p", sweep_id="s", spec=spec,
                                    storage=None, prepared_cdf=None)
    client = FakeClient()
    tracker._client = client
    monkeypatch.setattr(tracker, "_ensure_run", lambda trial: trial.trial_id)
    monkeypatch.setattr(tracker, "newest_checkpoint", lambda trial: None)
    monkeypatch.setattr(tracker, "_log_artifacts", lambda client, p, rid: [])
    tracker.writer._run_ids.update(a="r", b="r", c="r")  # the inline writer (no runner): calls made at once

    def ended(trial_id: str, epoch: int):
        client.__init__()
        trial = SimpleNamespace(trial_id=trial_id, last_result={"epoch": epoch}, config={})
        tracker.on_trial_complete(0, [], trial)
        return client.status, client.tags.get(STOP_REASON_TAG, "")

    assert ended("a", 2) == ("FINISHED", "")
    status, why = ended("b", 0)
    assert status == "KILLED" and "no scheduler stopped it" in why and "scheduler after" not in why
    asha = DecidingASHA(metric="miou", mode="max", time_attr="training_iteration", max_t=3, grace_period=1,
                        reduction_factor=2)
    monkeypatch.setattr(type(asha).__mro__[1], "on_trial_result", lambda self, c, t, r: "STOP")
    asha.on_trial_result(None, SimpleNamespace(trial_id="c"), {"miou": 0.125})
    status, why = ended("c", 0)
    assert status == "KILLED" and why.startswith("stopped by the scheduler after epoch 1 of 3 (asha: miou 0.125")
    tracking.SCHEDULER_STOPS.pop("c", None)


def test_a_failed_join_says_what_to_try(monkeypatch):
    from orchestrator.sweep import runner

    def refuse(address, verbose=False):
        raise ConnectionError("Failed to connect to GCS at address 10.0.0.9:6379 within 20 seconds.")

    monkeypatch.setattr(runner, "ensure_ray", refuse)
    with pytest.raises(UserError) as exc:
        runner.join_ray("10.0.0.9:6379")
    text = str(exc.value)
    assert "10.0.0.9:6379" in text and "Failed to connect" in text
    assert "RAY_AUTH_MODE=token" in text and "ray status --address" in text and "Python 3." in text


def test_sigterm_and_sigint_reach_tunes_handler_and_are_recorded():
    import os
    import signal

    from orchestrator.sweep.interrupt import InterruptWatch, forget, handlers_restored, received

    calls = []
    before = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or a test runner's own handler
    with handlers_restored():
        signal.signal(signal.SIGINT, lambda s, f: calls.append(s))  # stands in for Tune's own handler
        InterruptWatch("sw-sig").setup()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert received("sw-sig") == signal.SIGTERM and calls == [signal.SIGINT]
        with pytest.raises(KeyboardInterrupt):  # a second signal stops waiting for the clean-up
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
    forget("sw-sig")
    assert received("sw-sig") is None and signal.getsignal(signal.SIGTERM) == before


def test_an_interrupted_sweep_prints_its_resume_command_and_exits_128_plus_signal(tmp_path, data_root, capsys,
                                                                                   monkeypatch):
    import signal

    from orchestrator.sweep import runner

    f = sweep_file(tmp_path, data_root, tmp_path / "results")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    for signum, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        def interrupted(spec, **kw):
            raise runner.SweepInterrupted("sweep sw interrupted", sweep_id="sw", signum=signum)

        monkeypatch.setattr(runner, "run_sweep", interrupted)
        assert main(["sweep", str(f), "--set", "optim.lr=0.5", "--tracking-uri", uri, "--plain"]) == status
        err = capsys.readouterr().err
        assert f"resume with: dance sweep {f} --set optim.lr=0.5 --tracking-uri {uri} --resume sw --plain" in err
