"""User-facing errors: the CLI prints them as one line and exits with code 1."""

from __future__ import annotations

from pathlib import Path


class TsfnetError(Exception):
    """A problem the user can fix (bad input, wrong option); never a bug in tsfnet."""


class InputError(TsfnetError):
    """A problem with one file or folder; the message always starts with its path."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
