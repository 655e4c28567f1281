"""Batches ready on the device before the step asks for them.

On CUDA a background thread turns the loader's arrays into a Batch, pins it and copies it on
a side stream, `depth` batches ahead, so the step never waits for the conversion or the
host-to-device copy (at the demo's size a step takes a few milliseconds, as long as the
copy). On the CPU there is nothing to overlap: batches are converted when asked for.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch

from tsfnet.batch import Batch

PREFETCH_DEPTH = 2
_POLL_S = 0.1  # how often a blocked thread looks whether it should stop


class InlineBatches:
    """Converts each raw batch when asked: the CPU path."""

    def __init__(self, raw: Iterator[dict], convert: Callable[[dict], Batch], device: torch.device) -> None:
        self.raw, self.convert, self.device = raw, convert, device

    def __iter__(self) -> InlineBatches:
        return self

    def __next__(self) -> Batch:
        return self.convert(next(self.raw)).to(self.device)

    def _finish(self) -> None:
        if hasattr(self.raw, "_finish"):
            self.raw._finish()


class DevicePrefetcher(InlineBatches):
    """Converts, pins and copies batches in a background thread, `depth` ahead, in order.
    An error in the thread is raised by the `next` that would have returned its batch."""

    def __init__(
        self,
        raw: Iterator[dict],
        convert: Callable[[dict], Batch],
        device: torch.device,
        depth: int = PREFETCH_DEPTH,
    ) -> None:
        super().__init__(raw, convert, device)
        if hasattr(raw, "_start"):  # batchgenerators' workers are forked from the main thread
            raw._start()
        self.ready: queue.Queue[tuple[Batch | None, Any, BaseException | None]] = queue.Queue(maxsize=depth)
        self.stopping = threading.Event()
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.thread = threading.Thread(target=self._fill, name="tsfnet-prefetch", daemon=True)
        self.thread.start()

    def _prepare(self, raw: dict) -> tuple[Batch, Any]:
        batch = self.convert(raw)
        if self.stream is None:
            return batch.to(self.device), None
        with torch.cuda.stream(self.stream):
            batch = batch.pin_memory().to(self.device)
            copied = torch.cuda.Event()
            copied.record(self.stream)
        return batch, copied

    def _fill(self) -> None:
        if self.stream is not None and self.device.index is not None:  # a thread starts on GPU 0; a DDP rank
            torch.cuda.set_device(self.device)  # may train on another
        while not self.stopping.is_set():
            try:
                item = (*self._prepare(next(self.raw)), None)
            except BaseException as error:  # StopIteration included: handed to the consumer
                item = (None, None, error)
            while not self.stopping.is_set():
                try:
                    self.ready.put(item, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return

    def __next__(self) -> Batch:
        while True:
            try:
                batch, copied, error = self.ready.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if not self.thread.is_alive():
                    raise RuntimeError("the batch prefetch thread stopped") from None
        if error is not None:
            raise error
        assert batch is not None
        if copied is not None:  # the step's stream waits for the copy, and owns the memory from now on
            current = torch.cuda.current_stream(self.device)
            current.wait_event(copied)
            batch.record_stream(current)
        return batch

    def _finish(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10 * _POLL_S + 5)
        super()._finish()


def device_batches(
    raw: Iterator[dict], convert: Callable[[dict], Batch], device: torch.device
) -> InlineBatches | DevicePrefetcher:
    """The runner's batches: prefetched on CUDA, converted inline elsewhere."""
    return DevicePrefetcher(raw, convert, device) if device.type == "cuda" else InlineBatches(raw, convert, device)
