"""Errors the agent reports in its JSON, each with its own exit status."""

#: error kind -> process exit status
EXIT_CODES = {
    "internal": 1,
    "usage": 2,
    "missing_runtime": 3,
    "bad_model": 4,
    "no_power_source": 5,
    "workload_failed": 6,
    "interrupted": 7,
}


class AgentError(Exception):
    """A failure with a kind (see EXIT_CODES) and a message meant for a person."""

    def __init__(self, kind, message):
        Exception.__init__(self, message)
        if kind not in EXIT_CODES:
            kind = "internal"
        self.kind = kind
        self.message = message

    @property
    def exit_code(self):
        return EXIT_CODES[self.kind]

    def __str__(self):
        return self.message
