"""Attention pooling: each position weighs the sources by a learned score.

A minimal example of a third-party fusion: subclass FeatureFusion, return a
FusionResult, declare the entry point in pyproject.toml. Nothing in tsfnet changes.
"""

from __future__ import annotations

import torch
from torch import nn

from tsfnet.fusion import FeatureFusion, FusionResult


class AttentionPoolFusion(FeatureFusion):
    def __init__(self, n_sequences: int, channels: int, dims: int = 2) -> None:
        super().__init__(n_sequences, channels, dims)
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.score = conv(channels, 1, kernel_size=1)

    def forward(self, features: torch.Tensor, source_mask: torch.Tensor, code: torch.Tensor) -> FusionResult:
        batch, n = source_mask.shape
        scores = self.score(features.flatten(0, 1)).view(batch, n, *features.shape[3:])
        spatial = (1,) * (features.dim() - 3)
        scores = scores.masked_fill(source_mask.view(batch, n, *spatial) == 0, float("-inf"))
        attention = scores.softmax(dim=1)  # (B, N, *S), zero for non-sources
        fused = (attention.unsqueeze(2) * features).sum(dim=1)
        return FusionResult(fused, weights=attention.flatten(2).mean(dim=2))
