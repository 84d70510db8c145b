"""Typed board failures: each says what went wrong, on which board, and whether a retry may help."""
from __future__ import annotations

from orchestrator.errors import UserError

#: kind -> transient (a retry on this or another board may succeed)
KINDS = {
    "unreachable": True,      # TCP connect/banner failed, or the connection dropped mid-job
    "timeout": True,          # the job ran past its deadline (agent hung or board too slow)
    "agent_crash": True,      # the agent died without its JSON (signal, OOM, internal error)
    "upload": True,           # a file arrived corrupted twice (sha256 on the board differs)
    "thermal": True,          # the board throttled during the window: measure again later
    "auth": False,            # the board refused our key
    "host_key": False,        # unknown or changed host key (never silently accepted)
    "bad_model": False,       # the agent rejected the model or manifest (exit 4)
    "no_power_source": False,  # energy demanded, none on the board (exit 5)
    "missing_runtime": False,  # the board lacks the runtime the job needs (exit 3)
    "usage": False,           # the agent refused its command line (exit 2): a platform bug
    "board": False,           # anything else the board reported
}

#: the agent's exit status -> kind (device_agents/errors.py)
AGENT_EXIT_KINDS = {1: "agent_crash", 2: "usage", 3: "missing_runtime", 4: "bad_model",
                    5: "no_power_source", 6: "agent_crash", 7: "timeout"}


class BoardError(UserError):
    """A failure of one board or job; ``kind`` is one of :data:`KINDS`."""

    def __init__(self, kind: str, board: str, message: str):
        if kind not in KINDS:
            kind = "board"
        self.kind = kind
        self.board = board
        self.message = message
        super().__init__(f"board {board}: {kind}: {message}")

    @property
    def transient(self) -> bool:
        return KINDS[self.kind]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "board": self.board, "message": self.message, "transient": self.transient}
