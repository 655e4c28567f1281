"""What a training step receives."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Batch:
    images: torch.Tensor  # (B, N, Cin, *S); non-sources are never encoded
    source_mask: torch.Tensor  # (B, N) float 0/1
    target: torch.Tensor  # (B,) long
    target_image: torch.Tensor  # (B, 1, *S)
    brain_mask: torch.Tensor  # (B, 1, *S) bool
    label: torch.Tensor | None = None  # (B, *S) long
    available: torch.Tensor | None = None  # (B, N) float 0/1: the sequences the case has

    def to(self, device: torch.device) -> Batch:
        moved = {
            f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device, non_blocking=True)
            for f in fields(self)
        }
        return Batch(**moved)
