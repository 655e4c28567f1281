"""The runner's device batches: prefetched in order, errors surfaced, the thread stopped."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from tsfnet.batch import Batch
from tsfnet.training.prefetch import DevicePrefetcher, InlineBatches, device_batches

CPU = torch.device("cpu")


def convert(raw: dict) -> Batch:
    images = torch.from_numpy(raw["data"])
    return Batch(
        images=images,
        source_mask=torch.ones(1, 2),
        target=torch.zeros(1, dtype=torch.long),
        target_image=images[:, :1, 0],
        brain_mask=torch.ones(1, 1, 4, 4, dtype=torch.bool),
        shared_sources=(0, 1),
    )


class Source:
    """Raw batches 0, 1, 2, ... (then an error at `fail_at`), counting how many were taken."""

    def __init__(self, count: int = 100, fail_at: int | None = None) -> None:
        self.count, self.fail_at, self.taken, self.finished = count, fail_at, 0, False
        self.lock = threading.Lock()

    def __iter__(self) -> Source:
        return self

    def __next__(self) -> dict:
        with self.lock:
            index = self.taken
            if index == self.fail_at:
                raise ValueError(f"bad case file at batch {index}")
            if index >= self.count:
                raise StopIteration
            self.taken += 1
        return {"data": np.full((1, 2, 1, 4, 4), index, np.float32)}

    def _finish(self) -> None:
        self.finished = True


def values(batches, n: int) -> list[int]:
    return [int(next(batches).images[0, 0, 0, 0, 0]) for _ in range(n)]


def test_prefetched_batches_come_in_order_and_equal_the_inline_ones():
    prefetched, inline = DevicePrefetcher(Source(), convert, CPU), InlineBatches(Source(), convert, CPU)
    try:
        assert values(prefetched, 10) == values(inline, 10) == list(range(10))
        batch = next(prefetched)
        assert batch.shared_sources == (0, 1) and batch.brain_mask.dtype == torch.bool  # the Batch, whole
    finally:
        prefetched._finish()


def test_prefetch_runs_at_most_depth_batches_ahead():
    source = Source()
    batches = DevicePrefetcher(source, convert, CPU, depth=2)
    try:
        values(batches, 3)
        time.sleep(0.5)  # let the thread fill its queue
        assert source.taken == 3 + 2 + 1  # the ones used, the queue, one waiting to be queued
    finally:
        batches._finish()


def test_an_error_while_prefetching_is_raised_by_the_step_that_needs_that_batch():
    batches = DevicePrefetcher(Source(fail_at=3), convert, CPU)
    try:
        assert values(batches, 3) == [0, 1, 2]  # the batches before it arrive first
        with pytest.raises(ValueError, match="batch 3"):
            next(batches)
    finally:
        batches._finish()


def test_the_end_of_the_source_ends_the_batches():
    batches = DevicePrefetcher(Source(count=2), convert, CPU)
    try:
        assert values(batches, 2) == [0, 1]
        with pytest.raises(StopIteration):
            next(batches)
    finally:
        batches._finish()


def test_finish_stops_the_thread_and_the_source():
    source = Source()
    batches = DevicePrefetcher(source, convert, CPU)
    next(batches)
    batches._finish()
    assert not batches.thread.is_alive() and source.finished


def test_the_cpu_converts_inline_and_cuda_prefetches():
    assert type(device_batches(Source(), convert, CPU)) is InlineBatches
    if torch.cuda.is_available():  # the GPU path: pinned, copied on a side stream
        batches = device_batches(Source(), convert, torch.device("cuda"))
        try:
            assert isinstance(batches, DevicePrefetcher) and next(batches).images.is_cuda
            assert convert(next(Source())).pin_memory().images.is_pinned()
        finally:
            batches._finish()


def test_to_keeps_every_field():
    batch = convert(next(Source()))
    moved = batch.to(CPU)
    assert moved.shared_sources == batch.shared_sources and torch.equal(moved.images, batch.images)
    assert moved.label is None  # absent fields stay absent
