"""The whole network: shared encoder E -> fusion plugin -> head (G or segmentation)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tsfnet.errors import TsfnetError
from tsfnet.fusion.base import FeatureFusion
from tsfnet.nets.seq2seq import Encoder
from tsfnet.registry import registry
from tsfnet.tasks import task_code


@dataclass
class ModelOutput:
    output: torch.Tensor  # G(f̂ + f_A) when the fusion has a residual, else G(f̂)
    base: torch.Tensor | None = None  # G(f̂), only when there is a residual
    weights: torch.Tensor | None = None  # (B, N) ω

    @property
    def tsem(self) -> torch.Tensor | None:
        """Task-specific enhanced map |G(f̂ + f_A) - G(f̂)|: where attention changed the result."""
        return None if self.base is None else (self.output - self.base).abs()


def input_channels(plans: dict, config: str) -> int:
    """2.5D models see `context_slices` adjacent slices as channels."""
    return int(plans["configurations"][config].get("context_slices", 1)) if config == "2d" else 1


def label_classes(plans: dict) -> int:
    """Classes = largest label value + 1 (BraTS 2021 labels ET as 4, so it has 5)."""
    values = [int(v) for v in plans.get("labels", {}).values()]
    return max(2, max(values, default=1) + 1)


class FusionModel(nn.Module):
    def __init__(self, plans: dict, fusion: str, head: str = "synthesis", config: str = "2d") -> None:
        super().__init__()
        if config not in plans["configurations"]:
            raise TsfnetError(f"unknown configuration '{config}'; plans have {', '.join(plans['configurations'])}")
        self.n_sequences = len(plans["channel_names"])
        self.dims = 2 if config == "2d" else 3
        network = plans["network"]
        self.encoder = Encoder(input_channels(plans, config), network, self.dims)
        fusion_cls = registry.get("fusion", fusion)
        if not (isinstance(fusion_cls, type) and issubclass(fusion_cls, FeatureFusion)):
            raise TsfnetError(f"fusion plugin '{fusion}' must be a subclass of tsfnet.fusion.FeatureFusion")
        options = plans["fusion"].get(fusion, {})
        self.fusion = fusion_cls(self.n_sequences, self.encoder.out_channels, self.dims, **options)
        n_labels = label_classes(plans)
        self.head = registry.get("head", head)(network, self.n_sequences, self.dims, n_labels)

    def encode(self, images: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        """E on the sources only: (B, N, Cin, *S) -> (B, N, C, *S'), zeros elsewhere."""
        index = source_mask.bool().nonzero(as_tuple=True)
        features = self.encoder(images[index])
        out = features.new_zeros(*source_mask.shape, *features.shape[1:])
        out[index] = features
        return out

    def forward(
        self,
        images: torch.Tensor,
        source_mask: torch.Tensor,
        target: torch.Tensor | None = None,
        one_to_one: bool = False,
    ) -> ModelOutput | torch.Tensor:
        """Many-to-one: (images, source_mask, target) -> ModelOutput.
        One-to-one (stage 1, `one_to_one=True`): (source image, target) -> G(E(x) | target).
        One entry point, so DistributedDataParallel sees every call."""
        if one_to_one:
            return self.head(self.encoder(images), source_mask)
        assert target is not None
        source_mask = source_mask.to(images.dtype)
        return self.decode(self.encode(images, source_mask), source_mask, target)

    def decode(self, features: torch.Tensor, source_mask: torch.Tensor, target: torch.Tensor) -> ModelOutput:
        """Fusion + head on encoded sources; inference reuses one encoding for every target."""
        fused = self.fusion(features, source_mask, task_code(source_mask, target, self.n_sequences))
        if fused.residual is None:
            return ModelOutput(self.head(fused.fused, target), weights=fused.weights)
        # One head call decodes both f̂ and f̂ + f_A.
        both = self.head(torch.cat([fused.fused, fused.fused + fused.residual]), torch.cat([target, target]))
        base, enhanced = both.chunk(2)
        return ModelOutput(enhanced, base, fused.weights)
