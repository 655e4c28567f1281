"""The fusion plugin interface.

A fusion receives the features of every sequence (zeros where a sequence is not a
source), the source mask and the task code, and returns what the head decodes plus
its explanations. Subclass `FeatureFusion`, register it with
`@register("fusion", "name")` (or an entry point in the group `tsfnet.fusion`), and
`tsfnet train --fusion name` uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class FusionResult:
    fused: torch.Tensor  # (B, C, *S): what the head decodes
    residual: torch.Tensor | None = None  # (B, C, *S): f_A; the head also decodes fused + residual
    weights: torch.Tensor | None = None  # (B, N): how much each sequence contributed


class FeatureFusion(nn.Module):
    """Base class. Constructor arguments come from plans["fusion"][name]."""

    def __init__(self, n_sequences: int, channels: int, dims: int = 2) -> None:
        super().__init__()
        self.n_sequences, self.channels, self.dims = n_sequences, channels, dims

    def forward(self, features: torch.Tensor, source_mask: torch.Tensor, code: torch.Tensor) -> FusionResult:
        """features (B, N, C, *S); source_mask (B, N) in {0, 1}; code (B, 2N)."""
        raise NotImplementedError


def weighted_sum(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_i w_i f_i over the sequence axis."""
    shape = (*weights.shape, *([1] * (features.dim() - 2)))
    return (features * weights.view(shape)).sum(dim=1)
