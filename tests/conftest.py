"""Shared test setup: one torch thread, and the `integration` marker kept honest."""
import os
import subprocess

import pytest
import torch

# What makes a test an integration test (`make test-fast` leaves them out): it starts Ray, sshd,
# an MLflow server, an S3 server or a browser.
SERVER_PROGRAMS = {"sshd", "ray", "mlflow", "moto_server", "chromium", "chromedriver"}
SERVER_MODULES = {"mlflow", "moto.server", "ray.scripts.scripts"}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread per test process: on 2 cores, OpenMP barriers stall when another process holds a core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


STRAY_GCS_WAIT_S = 30


@pytest.fixture(autouse=True, scope="module")
def _no_stray_ray(request):
    """A module with Ray tests starts with no Ray instance on the machine: a GCS left by an earlier test makes
    Ray's State API (which Ray Train's placement-group clean-up uses) refuse to guess the cluster, and the
    next test leaks CPUs. Waits for a GCS that is still shutting down; names the one that does not."""
    if not any(i.get_closest_marker("ray") for i in request.session.items if i.module is request.module):
        yield
        return
    import psutil

    def gcs() -> list[str]:
        found = []
        for p in psutil.process_iter(["name", "cmdline"]):
            if p.info["name"] == "gcs_server":
                found.append(f"pid {p.pid}: {' '.join(p.info['cmdline'] or [])[:300]}")
        return found

    import time

    deadline = time.monotonic() + STRAY_GCS_WAIT_S
    while gcs() and time.monotonic() < deadline:
        time.sleep(0.5)
    left = gcs()
    if left:
        pytest.fail("a Ray instance from an earlier test is still running:\n" + "\n".join(left), pytrace=False)
    yield


def _server_in(argv) -> str | None:
    """The server program ``argv`` starts, or None."""
    words = argv.split() if isinstance(argv, (str, bytes)) else [str(a) for a in argv]
    if not words:
        return None
    exe = os.path.basename(str(words[0]))
    if exe in SERVER_PROGRAMS:
        return exe
    if exe.startswith("python") and len(words) > 2 and words[1] == "-m" and words[2] in SERVER_MODULES:
        return words[2]
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """An unmarked test that starts Ray or a server fails at that point, naming the marker it lacks.

    Wrapped around the whole protocol of a test (setup included), so a module-scoped fixture that
    starts Ray for the first test of a module is caught too. An `integration` test that starts Ray in
    this process without the `ray` marker fails the same way: `make test` runs the `ray` tests in their own
    pytest process, one at a time, beside the rest, so an unmarked one would run beside another Ray.
    """
    import ray

    if item.get_closest_marker("integration") is not None:
        if item.get_closest_marker("ray") is not None:
            yield
            return
        real_ray_init = ray.init

        def unmarked_ray(*a, **kw):
            raise RuntimeError("this test starts Ray: mark it @pytest.mark.ray (and integration)")

        ray.init = unmarked_ray
        try:
            yield
        finally:
            ray.init = real_ray_init
        return

    real_popen_init, real_ray_init = subprocess.Popen.__init__, ray.init

    def guarded_popen_init(self, args, *a, **kw):
        server = _server_in(args)
        if server is not None:
            raise RuntimeError(f"this test starts {server}: mark it @pytest.mark.integration")
        real_popen_init(self, args, *a, **kw)

    def no_ray(*a, **kw):
        raise RuntimeError("this test starts Ray: mark it @pytest.mark.integration")

    subprocess.Popen.__init__, ray.init = guarded_popen_init, no_ray
    try:
        yield
    finally:
        subprocess.Popen.__init__, ray.init = real_popen_init, real_ray_init
