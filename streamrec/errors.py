"""The one error type a command turns into a clear message and a non-zero exit."""


class UserError(Exception):
    """Bad input or a missing prerequisite; the message says what and how to fix it."""
