"""Parameter-free fusions (Hi-Net-style operations): mean and max over the sources."""

from __future__ import annotations

import torch

from tsfnet.fusion.base import FeatureFusion, FusionResult, weighted_sum
from tsfnet.registry import register


@register("fusion", "mean")
class MeanFusion(FeatureFusion):
    """Equal weights for every source."""

    def forward(self, features: torch.Tensor, source_mask: torch.Tensor, code: torch.Tensor) -> FusionResult:
        weights = source_mask / source_mask.sum(dim=1, keepdim=True)
        return FusionResult(weighted_sum(features, weights), weights=weights)


@register("fusion", "max")
class MaxFusion(FeatureFusion):
    """Element-wise maximum over the sources; its 'weights' are the share of elements
    each source won, so the explanation is comparable to the weighted fusions'."""

    def forward(self, features: torch.Tensor, source_mask: torch.Tensor, code: torch.Tensor) -> FusionResult:
        shape = (*source_mask.shape, *([1] * (features.dim() - 2)))
        masked = features.masked_fill(source_mask.view(shape) == 0, float("-inf"))
        fused, winner = masked.max(dim=1)
        wins = torch.nn.functional.one_hot(winner.flatten(1), self.n_sequences).float().mean(dim=1)
        return FusionResult(fused, weights=wins)
