"""User-facing errors: the CLI prints them as one line and exits with status 2."""


class BenchError(Exception):
    """A problem with what the user asked for (bad value, unknown name, unusable path)."""


EXIT_USAGE = 2  # the exit code of every refused input: one line on stderr, nothing written
