"""The synthesis head: Seq2Seq's decoder G, conditioned on the target sequence."""

from __future__ import annotations

import torch
from torch import nn

from tsfnet.nets.seq2seq import HyperDecoder
from tsfnet.registry import register


@register("head", "synthesis")
class SynthesisHead(nn.Module):
    conditioned_on_target = True
    stages = ("pretrain", "finetune")  # the registered stages that train a model with this head, in order

    def __init__(self, network: dict, n_sequences: int, dims: int = 2, n_labels: int = 0) -> None:
        super().__init__()
        self.n_sequences = n_sequences
        self.embed = nn.Linear(n_sequences, network["code_embedding"], bias=False)
        nn.init.normal_(self.embed.weight, std=1.0)  # unit-scale condition for HyperConv
        # `output_slices`: the context slices G predicts (the authors' 3 with `network.predict_context`).
        self.output_slices = int(network.get("output_slices", 1))
        self.decoder = HyperDecoder(network, network["code_embedding"], out_channels=self.output_slices, dims=dims)

    def forward(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(target.long(), self.n_sequences).to(features.dtype)
        return self.decoder(features, self.embed(onehot))
