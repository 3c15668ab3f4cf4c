"""Errors a user can cause. The CLI turns each into one line on stderr and an exit code."""

import shlex
import signal
from pathlib import Path


def shell_word(path) -> str:
    """A path as it goes into a command a message gives to copy: quoted where the shell would split it
    ('my runs/x' -> "'my runs/x'"), as it is otherwise."""
    return shlex.quote(str(path))


def first_line(e: BaseException) -> str:
    """An exception as one line: its message's first non-blank line, else its type's name."""
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)


def one_line(text: str) -> str:
    """text with its line breaks written as \\n: a message holding a path or value the user gave
    with one (a directory named 'a<newline>b') stays one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def signal_name(signum: int | None) -> str:
    """How an interruption names its signal: 'SIGTERM', or 'a signal' when it is not known."""
    return signal.Signals(signum).name if signum else "a signal"


def counted(n: float, noun: str) -> str:
    """n and its noun, plural but for one: '1 trial', '3 trials', '0.5 GPUs' (a float as :g writes it)."""
    number = f"{n:g}" if isinstance(n, float) else str(n)
    return f"{number} {noun}{'' if n == 1 else 's'}"


def in_run(e: BaseException, path: Path | None) -> BaseException:
    """e, carrying as e.run_dir the run, study or sweep directory it stopped (None: no directory
    held a summary yet, or a refused resume left it as it was), for the cnnlab command to print
    last, as it prints a finished one's."""
    e.run_dir = path
    return e


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
