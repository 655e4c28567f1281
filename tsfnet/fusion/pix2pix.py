"""pix2pix (Isola et al., "Image-to-Image Translation with Conditional Adversarial
Networks", CVPR 2017) as the paper's one-to-one baseline.

Faithful: one conditional GAN per (source, target) pair, each a U-Net generator and a
PatchGAN judging (source, image) pairs; loss GAN + 100·L1; Adam 2e-4, β = (0.5,
0.999). A multi-input task averages the outputs of its sources' generators, as the
TSF paper compares it.
Adapted: least-squares GAN loss, instance norm, and narrower networks by default
(base 32) because N·(N−1) pairs are trained at once; every pair draws its samples
from the same training loop.
"""

from __future__ import annotations

import torch
from torch import nn

from tsfnet.batch import Batch
from tsfnet.fusion.adversarial import AdversarialNetwork, AdversarialTerms
from tsfnet.fusion.base import ModelOutput, per_sample
from tsfnet.nets.gan import PatchGAN, UNet
from tsfnet.planning.plans import Plans
from tsfnet.registry import register


def by_group(modules: nn.ModuleList, x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """modules[g] applied to the samples of group g, one call per group, results in batch order."""
    out: torch.Tensor | None = None
    for group in groups.unique():
        chosen = groups == group
        y = modules[int(group)](x[chosen])
        out = y.new_zeros(len(x), *y.shape[1:]) if out is None else out
        out[chosen] = y
    assert out is not None
    return out


@register("fusion", "pix2pix")
class Pix2Pix(AdversarialNetwork):
    stages = ("pix2pix",)

    def __init__(
        self,
        plans: Plans,
        config: str,
        base_channels: int = 32,
        levels: int = 4,
        discriminator_channels: int = 32,
        discriminator_layers: int = 3,
        gan_weight: float = 1.0,
        l1_weight: float = 100.0,
    ) -> None:
        super().__init__(plans, config)
        n = self.n_sequences
        self.pairs = [(s, t) for s in range(n) for t in range(n) if s != t]
        self.generators = nn.ModuleList(UNet(self.dims, self.context, 1, base_channels, levels) for _ in self.pairs)
        layers = self.discriminator_layers(discriminator_layers)
        self.discriminators = nn.ModuleList(
            PatchGAN(self.dims, 2, 1, discriminator_channels, layers) for _ in self.pairs
        )
        self.gan_weight, self.l1_weight = gan_weight, l1_weight

    def pair_index(self, source, target):
        """(s, t) -> position in self.pairs: s·(N−1) + t, minus one when t > s (ints or tensors)."""
        return source * (self.n_sequences - 1) + target - (target > source) * 1

    def decode(self, features: torch.Tensor, source_mask: torch.Tensor, target: torch.Tensor) -> ModelOutput:
        """Average of G_{s→t}(x_s) over the sources s of each sample."""
        target = per_sample(target, len(source_mask))
        total = features.new_zeros(len(target), 1, *features.shape[3:])
        for source in range(self.n_sequences):
            for t in target.unique().tolist():
                chosen = (source_mask[:, source] > 0) & (target == t)
                if t != source and chosen.any():
                    total[chosen] += self.generators[self.pair_index(source, t)](features[chosen, source])
        count = source_mask.sum(dim=1)
        weights = source_mask / count[:, None]
        return ModelOutput(total / count.view(-1, *([1] * (total.dim() - 1))), weights=weights)

    def generate(self, batch: Batch, progress: float) -> AdversarialTerms:
        """Pair sampling: each sample has exactly one source."""
        source = batch.source_mask.argmax(dim=1)
        groups = self.pair_index(source, batch.target)
        rows = torch.arange(len(source), device=source.device)
        inputs = batch.images[rows, source]  # (B, Cin, *S)
        fake = by_group(self.generators, inputs, groups)
        condition = inputs[:, self.context // 2 : self.context // 2 + 1]
        ones = batch.source_mask.new_ones(len(source), 1)
        return AdversarialTerms(
            real=torch.cat([condition, batch.target_image], dim=1),
            fake=torch.cat([condition, fake], dim=1),
            fake_label=torch.zeros_like(ones),
            weight=ones,
            reconstruction=self.l1_weight * (fake - batch.target_image).abs().mean(),
            groups=groups,
        )

    def discriminate(self, images: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
        assert groups is not None
        return by_group(self.discriminators, images, groups)
