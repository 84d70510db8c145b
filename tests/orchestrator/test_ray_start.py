"""Starting or joining Ray fails clearly: a local dashboard that starts late is waited for (a bounded number
of tries, a line each), and a joined cluster without the State API is refused with what to do."""
from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from orchestrator.errors import UserError  # noqa: E402
from orchestrator.training import DASHBOARD_TRIES, ensure_ray  # noqa: E402


def _fake_init(monkeypatch, failures: int, message: str) -> list[dict]:
    calls: list[dict] = []

    def init(**kwargs):
        calls.append(kwargs)
        if len(calls) <= failures:
            raise Exception(message)

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


def test_a_late_dashboard_is_tried_again_with_a_line_each_time(monkeypatch, caplog):
    calls = _fake_init(monkeypatch, DASHBOARD_TRIES - 1, "Failed to start the dashboard, return code 1")
    ensure_ray()
    assert len(calls) == DASHBOARD_TRIES and all(c["include_dashboard"] for c in calls)
    assert len([r for r in caplog.records if "dashboard did not start in time" in r.getMessage()]) == \
        DASHBOARD_TRIES - 1


def test_a_dashboard_that_never_starts_is_one_clear_error(monkeypatch):
    calls = _fake_init(monkeypatch, 99, "Failed to start the dashboard, return code 1")
    with pytest.raises(UserError, match=f"dashboard did not start in {DASHBOARD_TRIES} tries"):
        ensure_ray()
    assert len(calls) == DASHBOARD_TRIES


def test_another_start_failure_is_not_retried(monkeypatch):
    calls = _fake_init(monkeypatch, 99, "object store memory too large")
    with pytest.raises(Exception, match="object store memory"):
        ensure_ray()
    assert len(calls) == 1


def test_a_joined_cluster_without_the_state_api_is_refused(monkeypatch):
    import ray.util.state

    from orchestrator.sweep.runner import check_dashboard

    def no_api(**kwargs):
        raise ConnectionError("Failed to connect to API server at http://127.0.0.1:8265")

    monkeypatch.setattr(ray.util.state, "list_nodes", no_api)
    with pytest.raises(UserError, match="--include-dashboard=true"):
        check_dashboard("10.0.0.1:6379")
    monkeypatch.setattr(ray.util.state, "list_nodes", lambda **kw: [])
    check_dashboard("10.0.0.1:6379")  # it answers: nothing to say
