"""TSF: task-specific fusion (Han et al., MICCAI 2023).

Weighted average: ω0 = softmax(c·W + b) + 1e-5, ω = ω0 ⊙ c_src / ⟨ω0, c_src⟩ per
sample, f̂ = Σ ω_i f_i. With one source i, ω_i is exactly 1 and f̂ = f_i, so the
second stage starts where the first ended. `weighting="sigmoid"` uses a sigmoid for
ω0 instead, as the authors' public code does (docs/fidelity.md). Attention:
HyperConv-CBAM on the stacked features gives a residual f_A; the head decodes f̂ and
f̂ + f_A.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from tsfnet.fusion.base import FeatureFusion, FusionResult, weighted_sum
from tsfnet.nets.attention import TaskAttention
from tsfnet.registry import register

EPSILON = 1e-5
WEIGHTINGS = {"softmax": lambda logits: torch.softmax(logits, dim=1), "sigmoid": torch.sigmoid}


class TaskWeighting(nn.Module):
    # Its parameters train at `training.<stage>.weighting_lr` where the plans give one
    # (tsfnet.training.stages.rate_groups): 36 of them, which Adam moves by about the rate a step.
    lr_group: ClassVar[str] = "weighting"

    def __init__(self, n_sequences: int, weighting: str = "softmax") -> None:
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
        self.fc = nn.Linear(2 * n_sequences, n_sequences)
        self.activation = WEIGHTINGS[weighting]

    def forward(self, code: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        with torch.autocast(code.device.type, enabled=False):  # ω is reported: full precision
            omega0 = self.activation(self.fc(code.float())) + EPSILON
        masked = omega0 * source_mask.float()
        return masked / masked.sum(dim=1, keepdim=True)


@register("fusion", "wavg")
class WeightedAverageFusion(FeatureFusion):
    """TSF without f_A (the paper's ablation)."""

    def __init__(self, n_sequences: int, channels: int, dims: int = 2, weighting: str = "softmax") -> None:
        super().__init__(n_sequences, channels, dims)
        self.weighting = TaskWeighting(n_sequences, weighting)

    def forward(self, features: torch.Tensor, source_mask: torch.Tensor, code: torch.Tensor) -> FusionResult:
        weights = self.weighting(code, source_mask)
        return FusionResult(weighted_sum(features, weights), weights=weights)


@register("fusion", "tsf")
class TaskSpecificFusion(WeightedAverageFusion):
    def __init__(
        self,
        n_sequences: int,
        channels: int,
        dims: int = 2,
        hyper_basis: int = 4,
        attention_layers: int = 1,
        attention_kernel: int = 3,
        reduction: int = 16,
        spatial_kernel: int = 7,
        negative_slope: float = 0.2,
        weighting: str = "softmax",
        channel_negative_slope: float = 0.0,
        spatial_bias: bool = True,
        spatial_padding: str = "reflect",
    ) -> None:
        super().__init__(n_sequences, channels, dims, weighting)
        self.attention = TaskAttention(
            n_sequences,
            channels,
            dims,
            attention_layers,
            attention_kernel,
            reduction,
            spatial_kernel,
            hyper_basis,
            negative_slope,
            channel_negative_slope,
            spatial_bias,
            spatial_padding,
        )

    def forward(self, features: torch.Tensor, source_mask: torch.Tensor, code: torch.Tensor) -> FusionResult:
        result = super().forward(features, source_mask, code)
        result.residual = self.attention(features.flatten(1, 2), code, result.fused)
        return result
