"""Hi-Net (Zhou et al., "Hi-Net: Hybrid-Fusion Network for Multi-Modal MR Image
Synthesis", IEEE TMI 2020) as a fusion plugin.

Faithful: one encoder per sequence (3 levels, 32 base channels), each with its own
reconstruction decoder; at every level a mixed fusion block conv(concat(sum,
product, max)) of the sequences' features, joined with the previous fusion level;
a decoder from the fused representation with skips from the fusion levels; tanh
output; loss GAN + 100·L1(target) + 20·L1(reconstructions).
Adapted: the paper fuses exactly two inputs into one fixed target. Here sum, product
and maximum run over whichever sources a task has (with one source all three are
that source's features), and the decoder has one output channel per sequence, of
which the task's target is used. The discriminator is a conditional PatchGAN on
(zero-imputed inputs, target) with the least-squares loss the other baselines use.
"""

from __future__ import annotations

import operator
from functools import reduce

import torch
import torch.nn.functional as F
from torch import nn

from tsfnet.batch import Batch
from tsfnet.fusion.adversarial import AdversarialTerms, EverySequenceNetwork
from tsfnet.fusion.base import expand_mask
from tsfnet.nets.blocks import ConvNormAct, conv, resize
from tsfnet.nets.gan import PatchGAN
from tsfnet.planning.plans import Plans
from tsfnet.registry import register


def level_widths(base: int, levels: int) -> list[int]:
    return [base * 2**i for i in range(levels)]


class LevelEncoder(nn.Module):
    """Features at `levels` scales (the first at full resolution)."""

    def __init__(self, dims: int, in_channels: int, widths: list[int]) -> None:
        super().__init__()
        previous, self.levels = in_channels, nn.ModuleList()
        for i, width in enumerate(widths):
            self.levels.append(
                nn.Sequential(
                    ConvNormAct(dims, previous, width, 3, stride=1 if i == 0 else 2), ConvNormAct(dims, width, width, 3)
                )
            )
            previous = width

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for level in self.levels:
            x = level(x)
            out.append(x)
        return out


class LevelDecoder(nn.Module):
    """Deepest level up to full resolution, concatenating each level's skip when asked."""

    def __init__(self, dims: int, widths: list[int], out_channels: int, skips: bool) -> None:
        super().__init__()
        deepest, widen = len(widths) - 1, 2 if skips else 1
        self.skips = skips
        self.blocks = nn.ModuleList(
            ConvNormAct(dims, widths[i] * (widen if i < deepest else 1), widths[i - 1], 3)
            for i in range(deepest, 0, -1)
        )
        self.output = conv(dims, widths[0] * widen, out_channels, 3, padding=1)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        x = levels[-1]
        for i, block in zip(range(len(levels) - 1, 0, -1), self.blocks, strict=True):
            x = resize(block(x), size=levels[i - 1].shape[2:])
            if self.skips:
                x = torch.cat([x, levels[i - 1]], dim=1)
        return torch.tanh(self.output(x))


class MixedFusionBlock(nn.Module):
    """conv(concat(sum, product, max)) over the sources, joined with the previous level."""

    def __init__(self, dims: int, width: int, previous: int | None) -> None:
        super().__init__()
        self.mix = ConvNormAct(dims, 3 * width, width, 3)
        self.join = None if previous is None else ConvNormAct(dims, width + previous, width, 3)

    def forward(self, features: torch.Tensor, source_mask: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """features (B, N, C, *S) of every sequence; only the sources count."""
        mask = expand_mask(source_mask, features)
        total = (features * mask).sum(dim=1)
        # A chain of products, not .prod(dim=1): over ReLU features, which hold zeros, prod's
        # backward takes a cumulative-product path that costs a CPU step a tenth of its time.
        product = reduce(operator.mul, torch.where(mask > 0, features, torch.ones_like(features)).unbind(dim=1))
        maximum = features.masked_fill(mask == 0, float("-inf")).amax(dim=1)
        mixed = self.mix(torch.cat([total, product, maximum], dim=1))
        if self.join is None or previous is None:
            return mixed
        previous = (
            F.adaptive_max_pool2d(previous, mixed.shape[2:])
            if mixed.dim() == 4
            else F.adaptive_max_pool3d(previous, mixed.shape[2:])
        )
        return self.join(torch.cat([mixed, previous], dim=1))


@register("fusion", "hinet")
class HiNet(EverySequenceNetwork):
    stages = ("hinet",)

    def __init__(
        self,
        plans: Plans,
        config: str,
        base_channels: int = 32,
        levels: int = 3,
        discriminator_channels: int = 64,
        discriminator_layers: int = 3,
        gan_weight: float = 1.0,
        l1_weight: float = 100.0,
        reconstruction_weight: float = 20.0,
    ) -> None:
        super().__init__(plans, config)
        n, widths = self.n_sequences, level_widths(base_channels, levels)
        self.encoders = nn.ModuleList(LevelEncoder(self.dims, self.context, widths) for _ in range(n))
        self.reconstructors = nn.ModuleList(LevelDecoder(self.dims, widths, 1, skips=False) for _ in range(n))
        self.fusions = nn.ModuleList(
            MixedFusionBlock(self.dims, w, None if i == 0 else widths[i - 1]) for i, w in enumerate(widths)
        )
        self.decoder = LevelDecoder(self.dims, widths, n, skips=True)
        self.discriminator = PatchGAN(
            self.dims, n + 1, 1, discriminator_channels, self.discriminator_layers(discriminator_layers)
        )
        self.gan_weight, self.l1_weight, self.reconstruction_weight = gan_weight, l1_weight, reconstruction_weight

    def sequence_levels(self, images: torch.Tensor, sources: tuple[int, ...] | None = None) -> list[list[torch.Tensor]]:
        """Per sequence, its encoder's features at every level. With `sources` known (inference)
        only theirs run: the fusion masks the other sequences out, so zeros stand in for them."""
        if sources is None:
            return [encoder(images[:, i]) for i, encoder in enumerate(self.encoders)]
        ran = {i: self.encoders[i](images[:, i]) for i in sources}
        blank = [torch.zeros_like(level) for level in ran[sources[0]]]
        return [ran.get(i, blank) for i in range(self.n_sequences)]

    def fuse_and_decode(self, per_sequence: list[list[torch.Tensor]], source_mask: torch.Tensor) -> torch.Tensor:
        fused: list[torch.Tensor] = []
        for level, block in enumerate(self.fusions):
            stacked = torch.stack([levels[level] for levels in per_sequence], dim=1)
            fused.append(block(stacked, source_mask, fused[-1] if fused else None))
        return self.decoder(fused)

    def synthesise_every(
        self, zero_filled: torch.Tensor, source_mask: torch.Tensor, sources: tuple[int, ...] | None = None
    ) -> torch.Tensor:
        return self.fuse_and_decode(self.sequence_levels(zero_filled, sources), source_mask)

    def source_weights(self, source_mask: torch.Tensor) -> torch.Tensor:
        """The mixed fusion treats its sources alike."""
        return source_mask / source_mask.sum(dim=1, keepdim=True)

    def generate(self, batch: Batch, progress: float) -> AdversarialTerms:
        mask = batch.source_mask
        inputs = self.zero_fill(batch.images, mask)
        per_sequence = self.sequence_levels(inputs)
        every = self.fuse_and_decode(per_sequence, mask)
        fake = every[torch.arange(len(batch.target), device=mask.device), batch.target].unsqueeze(1)
        centre = self.centre(inputs)
        reconstructions = torch.cat(
            [dec(levels) for dec, levels in zip(self.reconstructors, per_sequence, strict=True)], 1
        )
        spatial = expand_mask(mask, centre).expand_as(centre)
        rec_l1 = ((reconstructions - centre).abs() * spatial).sum() / spatial.sum().clamp(min=1)
        l1 = (fake - batch.target_image).abs().mean()
        ones = mask.new_ones(len(mask), 1)
        return AdversarialTerms(
            real=torch.cat([centre, batch.target_image], dim=1),
            fake=torch.cat([centre, fake], dim=1),
            fake_label=torch.zeros_like(ones),
            weight=ones,
            reconstruction=self.l1_weight * l1 + self.reconstruction_weight * rec_l1,
        )
