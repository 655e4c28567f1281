"""The networks `tsfnet train --fusion NAME` builds.

For a feature fusion (the method): shared encoder E -> fusion plugin -> head (G or
segmentation). A fusion plugin that is a whole `Network` (the baselines) is built
from the plans as it is.
"""

from __future__ import annotations

import torch

from tsfnet.errors import TsfnetError
from tsfnet.fusion.base import FeatureFusion, ModelOutput, Network
from tsfnet.nets.seq2seq import Encoder
from tsfnet.registry import registry
from tsfnet.tasks import task_code

__all__ = ["FusionModel", "ModelOutput", "Network", "Seq2SeqCore", "build_model", "input_channels"]

STAGES = {"synthesis": ("pretrain", "finetune"), "segmentation": ("segment",)}


def input_channels(plans: dict, config: str) -> int:
    """2.5D models see `context_slices` adjacent slices as channels."""
    return int(plans["configurations"][config].get("context_slices", 1)) if config == "2d" else 1


def label_classes(plans: dict) -> int:
    """Classes = largest label value + 1 (BraTS 2021 labels ET as 4, so it has 5)."""
    values = [int(v) for v in plans.get("labels", {}).values()]
    return max(2, max(values, default=1) + 1)


def check_config(plans: dict, config: str) -> None:
    if config not in plans["configurations"]:
        raise TsfnetError(f"unknown configuration '{config}'; plans have {', '.join(plans['configurations'])}")


class Seq2SeqCore(Network):
    """Seq2Seq's shared encoder E and a head; stage 1 trains them one-to-one."""

    phases = ("synthesise", "one_to_one")

    def __init__(self, plans: dict, config: str, head: str = "synthesis") -> None:
        super().__init__()
        check_config(plans, config)
        self.n_sequences = len(plans["channel_names"])
        self.dims = 2 if config == "2d" else 3
        self.encoder = Encoder(input_channels(plans, config), plans["network"], self.dims)
        self.head = registry.get("head", head)(plans["network"], self.n_sequences, self.dims, label_classes(plans))
        self.stages = STAGES.get(head, ("segment",))

    def encode(self, images: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        """E on the sources only: (B, N, Cin, *S) -> (B, N, C, *S'), zeros elsewhere."""
        index = source_mask.bool().nonzero(as_tuple=True)
        features = self.encoder(images[index])
        out = features.new_zeros(*source_mask.shape, *features.shape[1:])
        out[index] = features
        return out

    def one_to_one(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Stage 1: (source image (B, Cin, *S), target) -> G(E(x) | target)."""
        return self.head(self.encoder(images), target)


class FusionModel(Seq2SeqCore):
    """E -> feature fusion -> head: X' = G(f̂), X'_A = G(f̂ + f_A)."""

    def __init__(self, plans: dict, fusion: str, head: str = "synthesis", config: str = "2d") -> None:
        super().__init__(plans, config, head)
        fusion_cls = registry.get("fusion", fusion)
        options = plans["fusion"].get(fusion, {})
        self.fusion = fusion_cls(self.n_sequences, self.encoder.out_channels, self.dims, **options)

    def decode(self, features: torch.Tensor, source_mask: torch.Tensor, target: torch.Tensor) -> ModelOutput:
        # A (1,) target means the batch shares one task: one code row, dense HyperConvs.
        code = task_code(source_mask[: len(target)], target, self.n_sequences)
        fused = self.fusion(features, source_mask, code)
        if fused.residual is None:
            return ModelOutput(self.head(fused.fused, target), weights=fused.weights)
        # One head call decodes both f̂ and f̂ + f_A.
        targets = target if len(target) == 1 else torch.cat([target, target])
        both = self.head(torch.cat([fused.fused, fused.fused + fused.residual]), targets)
        base, enhanced = both.chunk(2)
        return ModelOutput(enhanced, base, fused.weights)


def build_model(plans: dict, fusion: str, head: str = "synthesis", config: str = "2d") -> Network:
    """The network for `--fusion NAME --head HEAD --config CONFIG`, options from plans["fusion"][NAME]."""
    fusion_cls = registry.get("fusion", fusion)
    if isinstance(fusion_cls, type) and issubclass(fusion_cls, FeatureFusion):
        return FusionModel(plans, fusion, head, config)
    if isinstance(fusion_cls, type) and issubclass(fusion_cls, Network):
        if head != "synthesis":
            raise TsfnetError(f"fusion '{fusion}' is a whole synthesis network; it has no '{head}' head")
        check_config(plans, config)
        return fusion_cls(plans, config, **plans["fusion"].get(fusion, {}))
    raise TsfnetError(f"fusion plugin '{fusion}' must subclass tsfnet.fusion.FeatureFusion or tsfnet.fusion.Network")
