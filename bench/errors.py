"""User-facing errors: the CLI prints them as one line and exits with status 2."""


class BenchError(Exception):
    """A problem with what the user asked for (bad value, unknown name, unusable path)."""
