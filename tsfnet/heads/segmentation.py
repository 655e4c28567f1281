"""The segmentation head: tumour labels from fused features (the paper's stated extension)."""

from __future__ import annotations

import torch
from torch import nn

from tsfnet.nets.blocks import ConvNormAct, Upsample, conv
from tsfnet.registry import register


@register("head", "segmentation")
class SegmentationHead(nn.Module):
    conditioned_on_target = False
    stages = ("segment",)  # the registered stages that train a model with this head, in order

    def __init__(self, network: dict, n_sequences: int, dims: int = 2, n_labels: int = 4) -> None:
        super().__init__()
        widths, strides = network["encoder_widths"], network["strides"]
        layers: list[nn.Module] = []
        for level in range(len(widths) - 1, 0, -1):
            if strides[level] > 1:
                layers.append(Upsample(strides[level]))
            layers.append(ConvNormAct(dims, widths[level], widths[level - 1], 3))
        layers.append(conv(dims, widths[0], max(2, n_labels), 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return self.layers(features)
