"""The one exception the CLI turns into a one-line message and exit code 2."""


class HarnessError(Exception):
    """Bad input or environment, said for a person: what was wrong, what was expected, how to fix it."""
