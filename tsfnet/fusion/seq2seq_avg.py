"""Seq2Seq averaging: the paper's comparison of TSF with its own stage 1. The
one-to-one Seq2Seq model (Han et al. 2023) synthesises the target from each source
alone and the outputs are averaged with equal weights. Trained by stage 1 only."""

from __future__ import annotations

import torch

from tsfnet.fusion.base import ModelOutput, per_sample
from tsfnet.model import Seq2SeqCore
from tsfnet.planning.plans import Plans
from tsfnet.registry import register


@register("fusion", "seq2seq-avg")
class Seq2SeqAverage(Seq2SeqCore):
    def __init__(self, plans: Plans, config: str) -> None:
        super().__init__(plans, config, "synthesis")
        self.stages = ("pretrain",)

    def decode(self, features: torch.Tensor, source_mask: torch.Tensor, target: torch.Tensor) -> ModelOutput:
        target = per_sample(target, len(source_mask))
        index = source_mask.bool().nonzero(as_tuple=True)
        outputs = self.head(features[index], target[index[0]])
        total = outputs.new_zeros(len(target), *outputs.shape[1:]).index_add_(0, index[0], outputs)
        weights = source_mask / source_mask.sum(dim=1, keepdim=True)
        count = source_mask.sum(dim=1).view(-1, *([1] * (total.dim() - 1)))
        return ModelOutput(total / count, weights=weights)
