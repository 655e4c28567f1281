"""Seq2Seq's shared encoder E and target-conditioned decoder G (Han et al. 2023).

Optional `network` fields: `negative_slope` (0: ReLU, the default; the authors use
LeakyReLU 0.2), `instance_norm_affine` (true by default; the authors' instance norms
have no affine parameters), `gated_layers` (0 by default; the authors' ConvLSTM,
3 layers after E's residual blocks and 3 before G's, see `GatedConv`) and
`predict_context` (false by default: G predicts the centre slice; true: every context
slice, as the authors' G, see `tsfnet.model.Seq2SeqCore`)."""

from __future__ import annotations

import torch
from torch import nn

from tsfnet.nets.blocks import ConvNormAct, HyperConvNormAct, HyperResidualBlock, ResidualBlock, Upsample, gated_layers
from tsfnet.nets.hyper import HyperConv


def block_options(network: dict) -> dict:
    """Activation and normalisation options shared by E's and G's blocks."""
    return {
        "negative_slope": float(network.get("negative_slope", 0.0)),
        "affine": bool(network.get("instance_norm_affine", True)),
    }


class Encoder(nn.Module):
    """Plain convolutions, shared by every sequence: image (B, Cin, *S) -> features."""

    def __init__(self, in_channels: int, network: dict, dims: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        options = block_options(network)
        previous = in_channels
        for width, kernel, stride in zip(
            network["encoder_widths"], network["encoder_kernels"], network["strides"], strict=True
        ):
            layers.append(ConvNormAct(dims, previous, width, kernel, stride, **options))
            previous = width
        layers += [ResidualBlock(dims, previous, **options) for _ in range(network["residual_blocks"])]
        layers += gated_layers(dims, previous, network.get("gated_layers", 0))
        self.layers = nn.Sequential(*layers)
        self.out_channels = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class HyperDecoder(nn.Module):
    """Every layer a HyperConv conditioned on `cond`, mirroring the encoder; tanh output."""

    def __init__(self, network: dict, cond_dim: int, out_channels: int = 1, dims: int = 2) -> None:
        super().__init__()
        widths, kernels, strides = network["encoder_widths"], network["encoder_kernels"], network["strides"]
        basis = network["hyper_basis"]
        options = block_options(network)
        self.gated = gated_layers(dims, widths[-1], network.get("gated_layers", 0))
        self.residual = nn.ModuleList(
            HyperResidualBlock(dims, widths[-1], cond_dim, basis, **options) for _ in range(network["residual_blocks"])
        )
        self.upsample = nn.ModuleList()
        self.up_convs = nn.ModuleList()
        for level in range(len(widths) - 1, 0, -1):
            self.upsample.append(Upsample(strides[level]) if strides[level] > 1 else nn.Identity())
            self.up_convs.append(
                HyperConvNormAct(dims, widths[level], widths[level - 1], kernels[level], cond_dim, basis, **options)
            )
        self.output = HyperConv(widths[0], out_channels, kernels[0], cond_dim, dims, basis=basis)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self.gated(x)
        for block in self.residual:
            x = block(x, cond)
        for upsample, layer in zip(self.upsample, self.up_convs, strict=True):
            x = layer(upsample(x), cond)
        return torch.tanh(self.output(x, cond))
