"""The one exception type the CLI turns into a clean one-line error."""


class UserError(Exception):
    """Bad input from the user (arguments, config, files); the message says what and where."""
