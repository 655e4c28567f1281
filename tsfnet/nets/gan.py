"""The image-to-image GAN parts the baselines share: pix2pix's U-Net generator and
PatchGAN discriminator (Isola et al., CVPR 2017), 2D or 3D.

Adapted: instance norm in place of batch norm (batches of one are common here), and
the U-Net pads its input to a multiple of 2^levels so any crop size works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tsfnet.nets.blocks import conv, instance_norm


def conv_transpose(dims: int, *args, **kwargs) -> nn.Module:
    return (nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d)(*args, **kwargs)


class UNet(nn.Module):
    """`levels` stride-2 4-wide convolutions down, transposed convolutions up, skip
    connections at every level, tanh output."""

    def __init__(
        self, dims: int, in_channels: int, out_channels: int, base: int = 64, levels: int = 4, max_width: int = 512
    ) -> None:
        super().__init__()
        widths = [min(base * 2**i, max_width) for i in range(levels)]
        self.levels = levels
        self.down = nn.ModuleList()
        previous = in_channels
        for i, width in enumerate(widths):
            norm = [instance_norm(dims, width)] if 0 < i < levels - 1 else []
            self.down.append(nn.Sequential(conv(dims, previous, width, 4, 2, 1), *norm, nn.LeakyReLU(0.2, True)))
            previous = width
        self.up = nn.ModuleList()
        for i in range(levels - 1, 0, -1):
            cin = widths[i] if i == levels - 1 else 2 * widths[i]
            self.up.append(
                nn.Sequential(
                    conv_transpose(dims, cin, widths[i - 1], 4, 2, 1), instance_norm(dims, widths[i - 1]), nn.ReLU(True)
                )
            )
        self.output = nn.Sequential(conv_transpose(dims, 2 * widths[0], out_channels, 4, 2, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        multiple = 2**self.levels
        pad = [(-s) % multiple for s in size]
        if any(pad):
            x = F.pad(x, [p for amount in reversed(pad) for p in (0, amount)], mode="replicate")
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        x = skips.pop()
        for layer in self.up:
            x = torch.cat([layer(x), skips.pop()], dim=1)
        x = self.output(x)
        return x[(slice(None), slice(None), *[slice(0, s) for s in size])]


class PatchGAN(nn.Module):
    """`layers` stride-2 4-wide convolutions, one stride-1, then `out_maps` score maps:
    each output pixel judges one patch (70×70 with the default 3 layers)."""

    def __init__(self, dims: int, in_channels: int, out_maps: int = 1, base: int = 64, layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [conv(dims, in_channels, base, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = base
        for i in range(1, layers + 1):
            nxt = min(base * 2**i, 8 * base)
            stride = 2 if i < layers else 1
            blocks += [conv(dims, width, nxt, 4, stride, 1), instance_norm(dims, nxt), nn.LeakyReLU(0.2, True)]
            width = nxt
        blocks.append(conv(dims, width, out_maps, 4, 1, 1))
        self.layers = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
