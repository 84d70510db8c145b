"""The `integration` marker is kept honest (tests/conftest.py): an unmarked test cannot start Ray or a server."""
from __future__ import annotations

import subprocess
import sys

import pytest


def test_an_unmarked_test_cannot_start_ray_or_a_server():
    import ray

    with pytest.raises(RuntimeError, match="starts Ray: mark it @pytest.mark.integration"):
        ray.init()
    for argv in (["/usr/sbin/sshd", "-D"], [sys.executable, "-m", "mlflow", "server"], ["ray", "start", "--head"]):
        with pytest.raises(RuntimeError, match="mark it @pytest.mark.integration"):
            subprocess.Popen(argv)
    assert subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True, text=True).stdout == "1\n"


@pytest.mark.integration
def test_a_marked_test_may_start_one():
    """The guard steps aside for marked tests (the real subprocess is built; it exits at once)."""
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "--version"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    assert proc.wait(timeout=120) == 0


@pytest.mark.integration
def test_an_integration_test_that_starts_ray_needs_the_ray_marker():
    """Ray tests run one at a time (their xdist group); one without the marker would run beside another Ray."""
    import ray

    with pytest.raises(RuntimeError, match="mark it @pytest.mark.ray"):
        ray.init()
