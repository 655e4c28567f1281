"""MM-GAN (Sharma & Hamarneh, "Missing MRI Pulse Sequence Synthesis Using Multi-Modal
Generative Adversarial Network", IEEE TMI 2019) as a fusion plugin.

Faithful: image-level fusion; a pix2pix U-Net with N inputs and N outputs, missing
inputs zero-imputed; implicit conditioning (the real inputs are pasted back into the
output before the discriminator, and L1 counts only the imputed channels); a PatchGAN
with one score map per sequence; least-squares GAN loss; generator loss
0.1·GAN + 0.9·L1; Adam 2e-4, β = (0.5, 0.999); a curriculum from scenarios with more
inputs to fewer.
Adapted: instance norm and input padding (see tsfnet.nets.gan); the curriculum is
by training progress (at most one missing input at the start, any number from
`curriculum` of the steps on) rather than by epoch; channels a training case lacks
are neither imputed against nor judged.
"""

from __future__ import annotations

import torch

from tsfnet.batch import Batch
from tsfnet.fusion.adversarial import AdversarialTerms, EverySequenceNetwork
from tsfnet.fusion.base import expand_mask
from tsfnet.nets.gan import PatchGAN, UNet
from tsfnet.planning.plans import Plans
from tsfnet.registry import register


def present(batch: Batch) -> torch.Tensor:
    """(B, N) the sequences each sample's case has (all, for a batch that does not say)."""
    return batch.available if batch.available is not None else torch.ones_like(batch.source_mask)


@register("fusion", "mmgan")
class MMGAN(EverySequenceNetwork):
    stages = ("mmgan",)

    def __init__(
        self,
        plans: Plans,
        config: str,
        base_channels: int = 64,
        levels: int = 4,
        discriminator_channels: int = 64,
        discriminator_layers: int = 3,
        gan_weight: float = 0.1,
        l1_weight: float = 0.9,
        curriculum: float = 0.5,
    ) -> None:
        super().__init__(plans, config)
        n = self.n_sequences
        self.generator = UNet(self.dims, n * self.context, n, base_channels, levels)
        self.discriminator = PatchGAN(
            self.dims, n, n, discriminator_channels, self.discriminator_layers(discriminator_layers)
        )
        self.gan_weight, self.l1_weight, self.curriculum = gan_weight, l1_weight, curriculum

    def synthesise_every(
        self, zero_filled: torch.Tensor, source_mask: torch.Tensor, sources: tuple[int, ...] | None = None
    ) -> torch.Tensor:
        return self.generator(zero_filled.flatten(1, 2))

    def scenario(self, batch: Batch, progress: float) -> torch.Tensor:
        """The curriculum: early on, keep more of the case's sequences as inputs so at
        most `allowed` are missing (the target always is)."""
        n = self.n_sequences
        if self.curriculum <= 0 or progress >= self.curriculum:
            return batch.source_mask
        allowed = 1 + int(progress / self.curriculum * (n - 2))
        mask = batch.source_mask.clone()
        available = present(batch)
        for b in range(len(mask)):
            missing = [i for i in range(n) if available[b, i] > 0 and mask[b, i] == 0 and i != int(batch.target[b])]
            surplus = len(missing) + 1 - allowed
            if surplus > 0:
                chosen = torch.randperm(len(missing))[:surplus]
                mask[b, [missing[int(i)] for i in chosen]] = 1
        return mask

    def generate(self, batch: Batch, progress: float) -> AdversarialTerms:
        mask = self.scenario(batch, progress)
        real = self.centre(batch.images)
        fake = self.encode(batch.images, mask)
        available = present(batch)
        imputed = available * (1 - mask)  # channels synthesised that have a real counterpart
        spatial = expand_mask(imputed, real)
        l1 = ((fake - real).abs() * spatial).sum() / (spatial.expand_as(real).sum().clamp(min=1))
        is_source = expand_mask(mask, real) > 0
        completed = torch.where(is_source, real, fake)  # implicit conditioning
        # A channel the case lacks has no real image: the synthesis stands in on both sides.
        real_set = torch.where(expand_mask(available, real) > 0, real, fake.detach())
        return AdversarialTerms(
            real=real_set,
            fake=completed,
            fake_label=mask,
            weight=available,
            reconstruction=self.l1_weight * l1,
        )
