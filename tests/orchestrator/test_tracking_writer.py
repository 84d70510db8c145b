"""The sweep's MLflow writer against a real MLflow sqlite store that stops answering for a while.

No Ray, no server: a wrapper client raises ``ConnectionError`` while it is "down" (what MLflow's REST
client raises when nobody listens is a 500-coded MlflowException; both count as an outage).
"""
from __future__ import annotations

import threading
import time

import pytest

from orchestrator.runs.schema import SWEEP_ID_TAG, TRIAL_ID_TAG
from orchestrator.runs.writer import TrackingWriter, transient


class Flaky:
    """An MlflowClient that is down while ``down`` is set (every call raises), and records what got through."""

    def __init__(self, real) -> None:
        self.real, self.down, self.batches = real, False, []
        self.land_then_fail = 0  # the next N log_batch calls land, then raise (the answer was lost)

    def __getattr__(self, name):
        fn = getattr(self.real, name)

        def call(*args, **kwargs):
            if self.down:
                raise ConnectionError(f"Connection refused ({name})")
            out = fn(*args, **kwargs)
            if name == "log_batch" and kwargs.get("metrics"):
                self.batches.append([(m.key, m.step) for m in kwargs["metrics"]])
                if self.land_then_fail > 0:
                    self.land_then_fail -= 1
                    raise ConnectionError("connection reset after the write")
            return out
        return call


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import mlflow

    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    mlflow.MlflowClient(uri).search_experiments()  # create the schema once for the module
    return uri


@pytest.fixture
def exp(store, request):
    import mlflow

    client = mlflow.MlflowClient(store)
    return client, client.create_experiment(request.node.name)


def _writer(flaky, spool, lines, **kw) -> TrackingWriter:
    return TrackingWriter(lambda: flaky, uri="http://mlflow:5000", spool=spool, print_fn=lines.append,
                          backoff_cap_s=0.2, **kw)


def _start_run(w: TrackingWriter, exp_id: str, key: str = "t1") -> None:
    w.run(key, exp_id, f"run {key}", {SWEEP_ID_TAG: "s", TRIAL_ID_TAG: key}, {SWEEP_ID_TAG: "s", TRIAL_ID_TAG: key},
          {"lr": "0.01"})


def _history(client, exp_id: str, key: str = "t1") -> tuple[str, dict[str, list[int]]]:
    (run,) = client.search_runs([exp_id], filter_string=f"tags.`{TRIAL_ID_TAG}` = '{key}'")
    rid = run.info.run_id
    return rid, {k: [m.step for m in client.get_metric_history(rid, k)] for k in ("a/miou", "b/loss")}


def test_an_outage_is_one_line_and_every_point_lands_once_in_order(exp, tmp_path):
    client, exp_id = exp
    flaky, lines = Flaky(client), []
    w = _writer(flaky, tmp_path / "spool.sqlite", lines)
    _start_run(w, exp_id)
    w.metrics("t1", {"a/miou": 0.1, "b/loss": 1.0}, 0)
    assert w.drain(30)
    flaky.down = True
    worst = 0.0
    for step in range(1, 6):  # reported while MLflow is down: submit returns at once
        t0 = time.perf_counter()
        w.metrics("t1", {"a/miou": 0.1 * step, "b/loss": 1.0 / step}, step)
        worst = max(worst, time.perf_counter() - t0)
        time.sleep(0.1)
    w.tags("t1", {"note": "x"})
    w.end("t1", "FINISHED")
    time.sleep(0.5)
    assert w.pending() >= 7 and worst < 0.1, (w.pending(), worst)
    flaky.down = False
    assert w.close(30)
    rid, hist = _history(client, exp_id)
    assert hist == {"a/miou": [0, 1, 2, 3, 4, 5], "b/loss": [0, 1, 2, 3, 4, 5]}
    assert [b[0][1] for b in flaky.batches] == [0, 1, 2, 3, 4, 5]  # landed in order, each once
    run = client.get_run(rid)
    assert run.info.status == "FINISHED" and run.data.tags["note"] == "x" and run.data.params["lr"] == "0.01"
    down = [ln for ln in lines if "not answering" in ln]
    up = [ln for ln in lines if "answering again" in ln]
    assert len(down) == 1 and len(up) == 1 and len(lines) == 2, lines
    assert "http://mlflow:5000" in down[0] and "spooling" in down[0] and "will replay" in down[0]
    assert not (tmp_path / "spool.sqlite").exists()  # complete: no spool left behind


def test_a_crash_with_pending_calls_is_replayed_once_by_the_next_writer(exp, tmp_path):
    client, exp_id = exp
    spool = tmp_path / "spool.sqlite"
    flaky, lines = Flaky(client), []
    w = _writer(flaky, spool, lines)
    _start_run(w, exp_id)
    w.metrics("t1", {"a/miou": 0.0, "b/loss": 1.0}, 0)
    assert w.drain(30)
    flaky.land_then_fail = 1  # step 1 reaches the store, its answer is lost ...
    w.metrics("t1", {"a/miou": 0.1, "b/loss": 0.5}, 1)
    time.sleep(0.3)
    flaky.down = True  # ... and MLflow goes down before the retry
    for step in (2, 3):
        w.metrics("t1", {"a/miou": 0.1 * step, "b/loss": 1.0 / step}, step)
    w.end("t1", "FINISHED")
    assert not w.close(0.5)  # the driver ends with MLflow down: the spool stays
    assert spool.exists()

    again, lines2 = Flaky(client), []
    w2 = _writer(again, spool, lines2)  # `dance sweep --resume`: the new driver's writer
    assert w2.replayed == 4
    assert w2.close(30)
    rid, hist = _history(client, exp_id)
    assert hist == {"a/miou": [0, 1, 2, 3], "b/loss": [0, 1, 2, 3]}  # step 1 once, though it was sent twice
    assert [b[0][1] for b in again.batches] == [2, 3]  # the replay checked step 1 and skipped it
    assert client.get_run(rid).info.status == "FINISHED"
    assert not spool.exists()


def test_the_queue_is_bounded_and_the_rest_waits_in_the_spool_in_order(exp, tmp_path):
    client, exp_id = exp
    flaky, lines = Flaky(client), []
    flaky.down = True
    w = _writer(flaky, tmp_path / "spool.sqlite", lines, max_queue=3)
    _start_run(w, exp_id)
    for step in range(20):
        w.metrics("t1", {"a/miou": step / 20, "b/loss": 1.0}, step)
        assert w._queue.qsize() <= 3
    assert w.pending() == 21
    flaky.down = False
    for step in range(20, 25):  # submitted while the thread reads the spool back: still in order
        w.metrics("t1", {"a/miou": step / 25, "b/loss": 1.0}, step)
    assert w.close(30)
    _, hist = _history(client, exp_id)
    assert hist["a/miou"] == list(range(25))
    assert [b[0][1] for b in flaky.batches] == list(range(25))


def test_submit_never_waits_for_a_call_that_hangs(exp, tmp_path):
    client, exp_id = exp
    gate = threading.Event()

    class Hanging(Flaky):
        def __getattr__(self, name):
            fn = super().__getattr__(name)

            def call(*a, **kw):
                gate.wait(10)  # a server that accepts the connection and never answers
                return fn(*a, **kw)
            return call

    w = _writer(Hanging(client), tmp_path / "spool.sqlite", [])
    t0 = time.perf_counter()
    _start_run(w, exp_id)
    for step in range(50):
        w.metrics("t1", {"a/miou": 0.5, "b/loss": 1.0}, step)
    assert time.perf_counter() - t0 < 2.0 and w.pending() == 51
    gate.set()
    assert w.close(30)
    assert _history(client, exp_id)[1]["a/miou"] == list(range(50))


def test_a_refused_call_is_said_once_and_does_not_stop_the_rest(exp, tmp_path):
    client, exp_id = exp
    lines: list[str] = []
    w = _writer(Flaky(client), tmp_path / "spool.sqlite", lines)
    _start_run(w, exp_id)
    w.metrics("t1", {"a/miou": 0.1}, 0)
    w.metrics("t1", {"bad name!": 0.1}, 0)  # a name MLflow refuses
    w.metrics("t1", {"a/miou": 0.2}, 1)
    assert w.drain(30)
    assert len(lines) == 1 and "refused" in lines[0], lines
    assert _history(client, exp_id)[1]["a/miou"] == [0, 1]
    assert w.close(1)  # nothing left to replay (a replay would be refused again) ...
    assert (tmp_path / "spool.sqlite").exists()  # ... but the spool is kept: it holds the refused call


def test_what_counts_as_an_outage():
    from mlflow.exceptions import MlflowException

    assert transient(ConnectionRefusedError()) and transient(TimeoutError())
    assert transient(MlflowException("API request to http://x failed with exception ... Connection refused"))
    assert not transient(MlflowException.invalid_parameter_value("Changing param values is not allowed"))
    assert not transient(FileNotFoundError("no checkpoint")) and not transient(KeyError("x"))


def test_a_sweep_that_ends_with_mlflow_down_says_where_the_spool_is(exp, tmp_path):
    from types import SimpleNamespace

    from orchestrator.sweep.runner import TrackingIncomplete, _SweepRuns

    client, exp_id = exp
    flaky = Flaky(client)
    flaky.down = True
    spool = tmp_path / "results" / "s" / "mlflow-spool.sqlite"
    w = _writer(flaky, spool, [])
    _start_run(w, exp_id)
    runs = _SweepRuns(client, exp_id, "p", "s", SimpleNamespace(source="my.yaml"), writer=w)
    t0 = time.monotonic()
    with pytest.raises(TrackingIncomplete) as err:
        runs.close_writer(down_s=1.0)
    assert time.monotonic() - t0 < 10
    text = str(err.value)
    assert str(spool) in text and "--resume s" in text and "1 tracking call(s)" in text
    assert spool.exists()  # kept for the replay
