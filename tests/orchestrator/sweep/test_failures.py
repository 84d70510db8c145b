"""How a failed trial is sorted: lost to the infrastructure (retried) or its own error (kept, not retried)."""
from __future__ import annotations

import pytest

pytest.importorskip("ray")

from orchestrator.storage import Storage  # noqa: E402
from orchestrator.sweep.failures import (  # noqa: E402
    lost_message,
    lost_to_infrastructure,
    note_own_error,
    noted_own_error,
    own_error_text,
)


def _user(exc: BaseException):
    from ray.train.v2._internal.exceptions import UserExceptionWithTraceback

    # as Train builds it on the worker: the traceback text ends with the exception's own line
    return UserExceptionWithTraceback(exc, f"Traceback (most recent call last):\n  ...\n{type(exc).__name__}: {exc}\n")


def _group(failures: dict):
    from ray.train.v2.api.exceptions import WorkerGroupError

    return WorkerGroupError("workers failed", failures)


def test_a_dead_worker_or_node_is_infrastructure_and_a_raised_error_is_the_trials_own():
    import ray.exceptions as rex
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError
    from ray.train.v2.api.exceptions import ControllerError

    assert lost_to_infrastructure(_group({0: rex.ActorDiedError()}))
    assert lost_to_infrastructure(_group({0: rex.NodeDiedError("node 10.0.0.7 died")}))
    assert not lost_to_infrastructure(_group({0: _user(RuntimeError("shape mismatch"))}))
    # one rank's death makes its peers fail in collectives (user-level errors): the death decides
    assert lost_to_infrastructure(_group({0: rex.ActorDiedError(), 1: _user(RuntimeError("gloo: connection closed"))}))
    assert lost_to_infrastructure(ControllerError(WorkerGroupStartupTimeoutError(num_workers=2)))
    assert not lost_to_infrastructure(ValueError("bad value"))


def test_the_own_error_is_kept_beside_the_train_run_for_the_retry(tmp_path):
    runs = Storage(str(tmp_path / "train"))
    assert noted_own_error(runs, "t1") is None
    text = own_error_text(_group({0: _user(RuntimeError("shape mismatch"))}))
    assert text.startswith("rank 0:") and "shape mismatch" in text
    note_own_error(runs, "t1", text)
    assert noted_own_error(runs, "t1") == text and noted_own_error(runs, "t2") is None


def test_a_lost_trial_says_what_happens_next():
    import ray.exceptions as rex

    msg = lost_message("abc_00001", _group({0: rex.ActorDiedError()}))
    assert msg.startswith("trial abc_00001 lost to the infrastructure") and "retries it from its last checkpoint" in msg


def _failed_trial(tmp_path, exc, *, stored=None):
    """A trial as Tune leaves it after ``handle_error``: the error files in the driver's staging folder, and
    storage holding ``stored`` (an earlier attempt's, or nothing yet: Tune copies there only at its next sync)."""
    from types import SimpleNamespace

    import cloudpickle
    import ray.exceptions as rex

    wrapped = rex.RayTaskError("ImplicitFunc.train", f"Traceback ...\n{type(exc).__module__}."
                               f"{type(exc).__name__}: {exc}", exc).as_instanceof_cause()
    pickled, text = tmp_path / "error.pkl", tmp_path / "error.txt"
    pickled.write_bytes(cloudpickle.dumps(wrapped))
    text.write_text(f"Failure # 1 (occurred at 2026-12-04_22-38-28)\n{wrapped}\n")
    return SimpleNamespace(pickled_error_file=str(pickled), error_file=str(text),
                           get_pickled_error=lambda: stored, get_error=lambda: None)


def test_the_error_tag_is_the_trials_verdict_even_before_tune_copies_its_error_to_storage(tmp_path):
    from orchestrator.sweep.failures import TrialCodeError, TrialLost
    from orchestrator.sweep.tracking import trial_error_text

    verdict = "trial t1 failed in its own code (not retried):\nrank 0: fault injection: rank 0 raised at epoch 1"
    trial = _failed_trial(tmp_path, TrialCodeError(verdict))  # storage has nothing yet (seen in CI)
    assert trial_error_text(trial) == verdict
    # storage holds the first attempt's error (lost); the driver's copy is this attempt's: it wins
    trial = _failed_trial(tmp_path, TrialCodeError(verdict), stored=TrialLost("trial t1 lost to the infrastructure"))
    assert trial_error_text(trial) == verdict
    # the pickle cannot be read (its class is not importable here): the verdict, all its lines, from the text
    (tmp_path / "error.pkl").write_bytes(b"not a pickle")
    assert trial_error_text(trial) == verdict


def test_an_error_that_is_not_a_verdict_reads_as_its_last_line(tmp_path):
    from orchestrator.sweep.tracking import trial_error_text

    trial = _failed_trial(tmp_path, ValueError("bad value"))
    (tmp_path / "error.pkl").unlink()
    assert trial_error_text(trial).endswith("ValueError: bad value")
