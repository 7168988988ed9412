"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class DagwireError(Exception):
    """Bad input from the user (a file, a flag, a config): reported as one line, exit code 2."""


class SpecError(DagwireError, ValueError):
    """A graph spec or graph file that is not a valid staged DAG."""


class DataError(DagwireError):
    """A dataset that is unknown, missing, or whose files fail their checks."""


class TrainingDiverged(Exception):
    """The loss became non-finite; the last good checkpoint is kept."""
