"""Seq2Seq with early fusion: an ablation, not a method of the paper.

Seq2Seq's encoder E and target-conditioned decoder G, but E sees every input at once:
the sources stacked as channels (non-sources zero-filled, as MM-GAN imputes them) and
the source mask as constant planes, so that it can tell a missing input from a dark one.
It keeps E's and G's layers and widths and moves where the inputs meet: before E (here),
not after it (`mean`, `tsf`: the feature average). It is trained many-to-one from scratch
by the `joint` stage, in place of stage 1 (one-to-one) and stage 2 (E frozen). It tests
whether what per-sequence encoding misses is a tissue told apart only by its intensities
in several sequences at once
(benchmarks/results/quality_1mm_per_sample_mean+seq2seq-early_2026-11-27.md).
"""

from __future__ import annotations

import torch

from tsfnet.fusion.base import ModelOutput, Network, expand_mask
from tsfnet.nets.seq2seq import Encoder
from tsfnet.planning.plans import Plans, as_plans
from tsfnet.registry import register, registry


@register("fusion", "seq2seq-early")
class EarlyFusionSeq2Seq(Network):
    stages = ("joint",)

    def __init__(self, plans: Plans | dict, config: str) -> None:
        super().__init__()
        plans = as_plans(plans)
        configuration = plans.configuration(config)
        self.n_sequences = n = plans.n_sequences
        self.dims = configuration.dims
        self.encoder = Encoder(n * configuration.context_slices + n, plans.network, self.dims)
        self.head = registry.get("head", "synthesis")(plans.network, n, self.dims, plans.label_classes)

    def encode(
        self, images: torch.Tensor, source_mask: torch.Tensor, sources: tuple[int, ...] | None = None
    ) -> torch.Tensor:
        """(B, N, Cin, *S) -> E([sources, zeros elsewhere; the mask as N planes])."""
        mask = source_mask.to(images.dtype)
        stacked = (images * expand_mask(mask, images)).flatten(1, 2)
        planes = mask.view(*mask.shape, *([1] * self.dims)).expand(*mask.shape, *images.shape[3:])
        return self.encoder(torch.cat([stacked, planes], dim=1))

    def decode(self, features: torch.Tensor, source_mask: torch.Tensor, target: torch.Tensor) -> ModelOutput:
        return ModelOutput(self.head(features, target))
