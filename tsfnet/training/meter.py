"""The running training loss, kept on the device between log points.

Reading a loss back (`float(loss)`, `torch.isfinite(loss)` in an `if`) waits for the
device to finish the step; summing on the device and reading once per log point keeps
the device busy. Finiteness is checked at that read, so a diverged run still stops
with one clear line, naming the steps the bad loss came from.
"""

from __future__ import annotations

import math

import torch

from tsfnet.errors import TsfnetError


class LossMeter:
    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.total: torch.Tensor | None = None
        self.count = 0
        self.first = 0

    def add(self, loss: torch.Tensor, step: int) -> None:
        """Adds on the device; no host sync."""
        if self.count == 0:
            self.total, self.first = loss.detach().float().clone(), step
        else:
            self.total += loss.detach().float()
        self.count += 1

    def mean(self, step: int) -> float:
        """The mean since the last read (one host sync), then starts over; raises on a non-finite loss."""
        mean = self._read(step)
        self.total, self.count = None, 0
        return mean

    def check(self, step: int) -> None:
        """Raises if a loss since the last read was not finite (one host sync); keeps counting."""
        if self.count:
            self._read(step)

    def _read(self, step: int) -> float:
        if self.total is None:
            raise ValueError("no loss since the last read")
        mean = float(self.total) / self.count
        if not math.isfinite(mean):
            steps = f"step {step}" if self.first == step else f"steps {self.first}-{step}"
            raise TsfnetError(f"{self.stage} {steps}: loss is {mean} (try a lower --lr, or --precision fp32)")
        return mean
