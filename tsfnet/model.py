"""The networks `tsfnet train --fusion NAME` builds.

For a feature fusion (the method): shared encoder E -> fusion plugin -> head (G or
segmentation); the head names the stages that train it (its `stages`). A fusion
plugin that is a whole `Network` (the baselines) is built from the plans as it is.
"""

from __future__ import annotations

import torch
from torch import nn

from tsfnet.errors import TsfnetError
from tsfnet.fusion.base import FeatureFusion, ModelOutput, Network, gather_sources
from tsfnet.nets.seq2seq import Encoder
from tsfnet.planning.plans import Plans, as_plans
from tsfnet.registry import registry
from tsfnet.tasks import task_code

__all__ = ["FusionModel", "ModelOutput", "Network", "Seq2SeqCore", "build_model"]


def head_stages(head: str) -> tuple[str, ...]:
    """The stages a head declares (its `stages`), e.g. synthesis: pretrain, finetune."""
    stages = getattr(registry.get("head", head), "stages", None)
    if not stages:
        raise TsfnetError(f"head '{head}' declares no training stages (a `stages` tuple of registered stages)")
    return tuple(stages)


class Seq2SeqCore(Network):
    """Seq2Seq's shared encoder E and a head; stage 1 trains them one-to-one."""

    phases = ("synthesise", "one_to_one")

    def __init__(self, plans: Plans | dict, config: str, head: str = "synthesis") -> None:
        super().__init__()
        plans = as_plans(plans)
        configuration = plans.configuration(config)
        self.n_sequences = plans.n_sequences
        self.dims = configuration.dims
        self.encoder = Encoder(configuration.context_slices, plans.network, self.dims)
        # `network.predict_context`: G predicts every context slice, as the authors' decoder
        # does (the losses take them all; inference keeps the centre one).
        slices = configuration.context_slices if plans.network.get("predict_context") else 1
        network = {**plans.network, "output_slices": slices}
        self.head = registry.get("head", head)(network, self.n_sequences, self.dims, plans.label_classes)
        self.output_slices = getattr(self.head, "output_slices", 1)  # a segmentation head: its labels
        self.stages = head_stages(head)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"encoder": list(self.encoder.parameters()), "head": list(self.head.parameters())}

    def encode(
        self, images: torch.Tensor, source_mask: torch.Tensor, sources: tuple[int, ...] | None = None
    ) -> torch.Tensor:
        """E on the sources only: (B, N, Cin, *S) -> (B, N, C, *S'), zeros elsewhere."""
        chosen, scatter = gather_sources(images, source_mask, sources)
        return scatter(self.encoder(chosen))

    def one_to_one(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Stage 1: (source image (B, Cin, *S), target) -> G(E(x) | target)."""
        return self.head(self.encoder(images), target)


class FusionModel(Seq2SeqCore):
    """E -> feature fusion -> head: X' = G(f̂), X'_A = G(f̂ + f_A)."""

    def __init__(self, plans: Plans | dict, fusion: str, head: str = "synthesis", config: str = "2d") -> None:
        plans = as_plans(plans)
        super().__init__(plans, config, head)
        fusion_cls = registry.get("fusion", fusion)
        options = plans.fusion_options(fusion)
        self.fusion = fusion_cls(self.n_sequences, self.encoder.out_channels, self.dims, **options)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {**super().parameter_groups(), "fusion": list(self.fusion.parameters())}

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


def build_model(plans: Plans | dict, fusion: str, head: str = "synthesis", config: str = "2d") -> Network:
    """The network for `--fusion NAME --head HEAD --config CONFIG`, options from `plans.fusion_options(NAME)`.
    A whole `Network` plugin is constructed as `cls(plans, config, **options)` with the typed view."""
    plans = as_plans(plans)
    fusion_cls = registry.get("fusion", fusion)  # a FeatureFusion or a Network: checked when registered
    if issubclass(fusion_cls, FeatureFusion):
        return FusionModel(plans, fusion, head, config)
    if head != "synthesis":
        raise TsfnetError(f"fusion '{fusion}' is a whole synthesis network; it has no '{head}' head")
    plans.configuration(config)  # an unknown configuration is an error before the network sees it
    return fusion_cls(plans, config, **plans.fusion_options(fusion))
