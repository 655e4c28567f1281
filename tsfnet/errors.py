"""User-facing errors: the CLI prints them as one line and exits with their exit code.

Every class here survives a round trip through pickle, because errors raised in
worker processes (planning and preprocessing run in a process pool) travel back to
the parent that way; an error that cannot be unpickled breaks the whole pool.
"""

from __future__ import annotations

import signal
from pathlib import Path


class TsfnetError(Exception):
    """A problem the user can fix (bad input, wrong option); never a bug in tsfnet."""

    exit_code = 1


class InputError(TsfnetError):
    """A problem with one file or folder; the message always starts with its path."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self) -> tuple:
        return type(self), (str(self.path), self.problem)


class TrainingInterrupted(TsfnetError):
    """Training stopped on SIGINT or SIGTERM after saving a checkpoint to resume from.

    The exit code follows the shell's convention, 128 + the signal number (130 for
    Ctrl-C, 143 for a scheduler's SIGTERM), so job scripts can tell pre-emption apart.
    """

    def __init__(self, message: str, signum: int = int(signal.SIGINT)) -> None:
        self.signum = int(signum)
        super().__init__(message)

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return 128 + self.signum

    def __reduce__(self) -> tuple:
        return type(self), (str(self), self.signum)
