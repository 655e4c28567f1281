"""Map a function over items in worker processes, with a progress bar."""

from __future__ import annotations

import functools
import os
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tsfnet.progress import track

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1)))


def parallel_map(
    function: Callable[[T], R],
    items: Sequence[T],
    description: str,
    workers: int | None = None,
    progress: bool = True,
) -> list[R]:
    """Order-preserving map; runs in-process when one worker (or one item) suffices."""
    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(items) <= 1:
        return list(track((function(item) for item in items), description, progress, total=len(items)))
    pool = ProcessPoolExecutor(max_workers=min(workers, len(items)))
    try:
        calls = pool.map(functools.partial(_call_in_worker, function), items)
        return list(track(calls, description, progress, total=len(items)))
    finally:  # on the first error, the items not yet started are dropped, not run
        pool.shutdown(wait=True, cancel_futures=True)


def _call_in_worker(function: Callable[[T], R], item: T) -> R:
    """Run one item; an exception that could not travel back to the parent (one that does
    not survive pickling) would break the whole pool, so it is sent as a RuntimeError."""
    try:
        return function(item)
    except Exception as exc:
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from None
        raise
