"""Map a function over items in worker processes, with a progress bar."""

from __future__ import annotations

import os
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
    with ProcessPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(track(pool.map(function, items), description, progress, total=len(items)))
