"""Why a trial failed: lost to the infrastructure (Tune retries it) or its own error (kept, not retried).

A sweep's trials retry through Tune (``sweep.max_failures``), never through Ray Train: Train's own
retry budget does not tell a dead node from a bug, and a bug trained again only fails again later.
So each trial runs its ``TorchTrainer`` with Train's retries off and sorts what comes back:

* **lost** — a worker or its node died, the worker group could not start, the controller failed:
  the trial raises :class:`TrialLost` (naming the dead node when Ray knows it) and Tune starts it
  again, which resumes its Train run from the last checkpoint;
* **own error** — the training code raised: the trial writes the error beside its Train run and
  raises :class:`TrialCodeError`; a retry that finds that note raises it again at once, without
  training, so the error is kept as it was first seen.
"""
from __future__ import annotations

import json

OWN_ERROR_FILE = "dance_own_error.json"  # beside the trial's Train run folder (<sweep>/train/<trial id>)


class TrialLost(RuntimeError):
    """The trial's workers (or their node) were lost; Tune retries it from its last checkpoint."""


class TrialCodeError(RuntimeError):
    """The trial's own code failed; not retried (the first error is kept)."""


def _system_failure(exc: BaseException) -> bool:
    """A failure of Ray itself (a died actor or node, a worker group that could not start), not of user code."""
    import ray.exceptions as rex
    from ray.train.v2._internal.exceptions import UserExceptionWithTraceback

    if isinstance(exc, UserExceptionWithTraceback):
        return False
    health = getattr(exc, "health_check_failure", None)  # Train's WorkerHealthCheckFailedError wraps the death
    if health is not None:
        return True
    return isinstance(exc, (rex.RayActorError, rex.NodeDiedError, rex.WorkerCrashedError, rex.ObjectLostError,
                            rex.LocalRayletDiedError, rex.RaySystemError, rex.ActorPlacementGroupRemoved,
                            rex.TaskPlacementGroupRemoved, rex.OutOfDiskError))


def lost_to_infrastructure(error: BaseException) -> bool:
    """True when Ray Train's ``error`` says the trial was lost (any worker died, startup or controller failed),
    False when only the training code raised. One dead rank makes its peers fail with collective errors, so
    one system failure among the workers decides."""
    from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

    if isinstance(error, ControllerError):
        return True
    if isinstance(error, WorkerGroupError):
        return any(_system_failure(e) for e in error.worker_failures.values())
    return _system_failure(error)


def dead_nodes() -> list[str]:
    """The addresses of the nodes Ray lists as dead (empty when it cannot say)."""
    try:
        import ray

        return sorted({n.get("NodeManagerAddress", "?") + f" (node {n.get('NodeID', '?')[:8]})"
                       for n in ray.nodes() if not n.get("Alive", True)})
    except Exception:  # the GCS may itself be what failed
        return []


def actor_node(text: str) -> str | None:
    """The node (address and short id) of the first actor ``text`` names, as Ray's state API recorded it; None
    when it cannot say. A lost trial's error names the actor before Ray has marked its node dead."""
    import re

    found = re.search(r"actor ([0-9a-f]{32})", text)
    if found is None:
        return None
    try:
        import ray
        from ray.util.state import get_actor

        address = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
        actor = get_actor(found.group(1), address=address, timeout=5)
    except Exception:  # no dashboard, or it did not answer in time
        return None
    if actor is None or not getattr(actor, "node_id", None):
        return None
    try:
        ip = next((n.get("NodeManagerAddress") for n in ray.nodes() if n.get("NodeID") == actor.node_id), None)
    except Exception:
        ip = None
    return f"{ip or '?'} (node {actor.node_id[:8]})"


# Ray Train's controller notices a dead worker at its next poll (0.5 s, orchestrator.training), often before
# Ray has marked the worker's node dead: a lost trial waits this long for that, to name the node.
NODE_DEATH_WAIT_S = 15.0


def _dead_nodes_within(wait_s: float) -> list[str]:
    """``dead_nodes()``, waiting up to ``wait_s`` for one to appear (no wait without a Ray connection)."""
    import time

    try:
        import ray

        connected = ray.is_initialized()
    except Exception:
        connected = False
    deadline = time.monotonic() + (wait_s if connected else 0.0)
    while True:
        nodes = dead_nodes()
        if nodes or time.monotonic() >= deadline:
            return nodes
        time.sleep(0.5)


def lost_message(trial_id: str, error: BaseException, wait_s: float = NODE_DEATH_WAIT_S) -> str:
    """What the user reads for a lost trial: which node died (if one did) and what happens next."""
    first = str(error).strip().splitlines()[0:3]
    nodes = _dead_nodes_within(wait_s)
    if nodes:
        where = f"node(s) {', '.join(nodes)} died; "
    else:  # no node is dead: the worker alone died, or Ray has not decided yet; name the worker's node if known
        node = actor_node(str(error))
        where = f"its workers on node {node} died or stopped answering; " if node else "its workers died; "
    return (f"trial {trial_id} lost to the infrastructure: {where}Tune retries it from its last checkpoint "
            f"(sweep.max_failures). Ray said: {' '.join(first)[:400]}")


def own_error_text(error: BaseException) -> str:
    """The training code's error as the user should read it: the workers' tracebacks when Train kept them."""
    from ray.train.v2.api.exceptions import WorkerGroupError

    if isinstance(error, WorkerGroupError) and error.worker_failures:
        return "\n".join(f"rank {rank}: {exc}" for rank, exc in sorted(error.worker_failures.items()))
    return f"{type(error).__name__}: {error}"


def note_own_error(storage, trial_id: str, text: str) -> None:
    """Keep the trial's own error beside its Train run, so a retry (or ``--resume``) does not train again."""
    storage.write_bytes(storage.join(trial_id, OWN_ERROR_FILE), json.dumps({"trial": trial_id, "error": text}).encode())


def noted_own_error(storage, trial_id: str) -> str | None:
    """The own error an earlier attempt of this trial kept, if any."""
    try:
        return json.loads(storage.read_bytes(storage.join(trial_id, OWN_ERROR_FILE)).decode())["error"]
    except (OSError, ValueError, KeyError):
        return None
