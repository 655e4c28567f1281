"""What the image-level GAN baselines share: zero imputation of the missing inputs and
the pieces the `AdversarialStage` drives (generator and discriminator)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from tsfnet.batch import Batch
from tsfnet.fusion.base import ModelOutput, Network, expand_mask, per_sample
from tsfnet.planning.plans import Plans, as_plans


@dataclass
class AdversarialTerms:
    """One generator pass, ready for the least-squares GAN losses."""

    real: torch.Tensor  # discriminator input from real images
    fake: torch.Tensor  # discriminator input holding the synthesis (gradients reach G)
    fake_label: torch.Tensor  # (B, maps): what the discriminator should answer for `fake` (0 = synthesised)
    weight: torch.Tensor  # (B, maps): which score maps count (0 = no real image to judge against)
    reconstruction: torch.Tensor  # the generator's weighted non-adversarial loss
    groups: torch.Tensor | None = None  # (B,) which discriminator judges each sample (pix2pix)


class AdversarialNetwork(Network):
    """An image-level network with its own discriminator(s) (attribute names starting
    with `discriminator`); encode is zero imputation of the non-sources."""

    phases = ("synthesise", "generate", "discriminate")
    gan_weight = 1.0

    def __init__(self, plans: Plans, config: str) -> None:
        super().__init__()
        plans = as_plans(plans)
        configuration = plans.configuration(config)
        self.n_sequences = plans.n_sequences
        self.dims = configuration.dims
        self.context = configuration.context_slices
        self.patch_size = configuration.patch_size

    def zero_fill(self, images: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        """Missing inputs are zero-filled (MM-GAN's imputation; images live in [-1, 1])."""
        return images * expand_mask(source_mask.to(images.dtype), images)

    def encode(
        self, images: torch.Tensor, source_mask: torch.Tensor, sources: tuple[int, ...] | None = None
    ) -> torch.Tensor:
        return self.zero_fill(images, source_mask)

    def centre(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N, Cin, *S) -> (B, N, *S): the slice being synthesised (2.5D inputs have context)."""
        return images[:, :, self.context // 2]

    def discriminator_layers(self, wanted: int) -> int:
        """PatchGAN depth that the smallest patch side supports (two 4-wide stride-1 convs follow)."""
        return max(1, min(wanted, int(math.log2(min(self.patch_size))) - 2))

    def generator_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("discriminator")]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name.startswith("discriminator")]

    def generate(self, batch: Batch, progress: float) -> AdversarialTerms:
        """One generator pass on a training batch; `progress` in [0, 1] drives curricula."""
        raise NotImplementedError

    def discriminate(self, images: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
        """Score maps; `groups` picks per-sample discriminators where there are several."""
        return self.discriminator(images)


class EverySequenceNetwork(AdversarialNetwork):
    """A network that synthesises every sequence at once whatever the target (MM-GAN, Hi-Net).
    `encode` runs it and `decode` picks the target's channel, so inference runs it once for
    all the targets of a source set, not once per target."""

    def synthesise_every(
        self, zero_filled: torch.Tensor, source_mask: torch.Tensor, sources: tuple[int, ...] | None = None
    ) -> torch.Tensor:
        """(B, N, Cin, *S) zero-filled inputs -> (B, N, *S), every sequence synthesised."""
        raise NotImplementedError

    def source_weights(self, source_mask: torch.Tensor) -> torch.Tensor | None:
        """What `decode` reports as ω: nothing, unless the network weighs its sources."""
        return None

    def encode(
        self, images: torch.Tensor, source_mask: torch.Tensor, sources: tuple[int, ...] | None = None
    ) -> torch.Tensor:
        return self.synthesise_every(self.zero_fill(images, source_mask), source_mask, sources)

    def decode(self, features: torch.Tensor, source_mask: torch.Tensor, target: torch.Tensor) -> ModelOutput:
        target = per_sample(target, len(features))
        chosen = features[torch.arange(len(target), device=target.device), target].unsqueeze(1)
        return ModelOutput(chosen, weights=self.source_weights(source_mask))
