"""Atomic writes: a file either appears complete or not at all, and never replaces
an existing one unless the caller says so."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tsfnet.errors import InputError

TEMPORARY = re.compile(r"^\..+\.tmp(\d+)(\.[^/]*)?$")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries a killed process left behind (its pid no longer runs), so an
    interrupted run leaves nothing half-written once the next run starts."""
    removed = []
    for path in Path(folder).glob(".*.tmp*") if Path(folder).is_dir() else ():
        match = TEMPORARY.match(path.name)
        if match and path.is_file() and not _running(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_writable(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise InputError(path, "already exists (pass --overwrite to replace it)")


@contextmanager
def atomic_path(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path` (same suffixes, so writers infer the format);
    rename it onto `path` only if the block finishes without error."""
    path = Path(path)
    check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffixes = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffixes)] if suffixes else path.name
    tmp = path.with_name(f".{stem}.tmp{os.getpid()}{suffixes}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: Path, write: Callable[[Path], Any], overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite) as tmp:
        write(tmp)
    return Path(path)


def write_json(path: Path, data: Any, overwrite: bool = True) -> Path:
    text = json.dumps(data, indent=2) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text), overwrite)


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid JSON ({exc})") from exc
