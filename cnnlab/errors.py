"""Errors a user can cause. The CLI turns each into one line on stderr and an exit code."""


class CnnlabError(Exception):
    """A user-caused failure: printed as one line, never as a traceback."""

    exit_code = 1


class ConfigError(CnnlabError):
    """Bad config file, unknown key, invalid value, malformed override: a usage error."""

    exit_code = 2


class DataError(CnnlabError):
    """Dataset files missing, unreadable or corrupt."""

    exit_code = 1


class RunError(CnnlabError):
    """A run directory that can't be written, or a path that is not a run."""

    exit_code = 1
