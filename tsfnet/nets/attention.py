"""Task-specific attention G_A: CBAM (Woo et al. 2018) whose layers are HyperConv /
HyperLinear conditioned on the task code, as TSF-Seq2Seq prescribes.

Defaults follow CBAM's channel MLP (ReLU); the authors' code differs in small ways
that the options reproduce (LeakyReLU 0.2 in the channel MLP, a bias-free spatial
convolution with zero padding; see docs/fidelity.md)."""

from __future__ import annotations

import torch
from torch import nn

from tsfnet.nets.hyper import HyperConv, HyperLinear


class HyperChannelAttention(nn.Module):
    """Average- and max-pooled channel descriptors through one shared hyper-MLP."""

    def __init__(self, channels: int, cond_dim: int, reduction: int, basis: int, negative_slope: float = 0.0) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.down = HyperLinear(channels, hidden, cond_dim, basis)
        self.up = HyperLinear(hidden, channels, cond_dim, basis)
        self.act = nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU()

    def mlp(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x, cond)), cond)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        logits = self.mlp(flat.mean(-1), cond) + self.mlp(flat.amax(-1), cond)
        return torch.sigmoid(logits).view(*x.shape[:2], *([1] * (x.dim() - 2)))


class HyperSpatialAttention(nn.Module):
    """Channel-mean and channel-max maps through a hyper 7x7 (x7) convolution."""

    def __init__(
        self, cond_dim: int, kernel: int, basis: int, dims: int, bias: bool = True, padding: str = "reflect"
    ) -> None:
        super().__init__()
        self.conv = HyperConv(2, 1, kernel, cond_dim, dims, basis=basis, padding_mode=padding, bias=bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        maps = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(maps, cond))


class TaskAttentionLayer(nn.Module):
    def __init__(
        self,
        cin: int,
        channels: int,
        cond_dim: int,
        kernel: int,
        reduction: int,
        spatial_kernel: int,
        basis: int,
        negative_slope: float,
        dims: int,
        channel_negative_slope: float = 0.0,
        spatial_bias: bool = True,
        spatial_padding: str = "reflect",
    ) -> None:
        super().__init__()
        self.conv = HyperConv(cin, channels, kernel, cond_dim, dims, basis=basis)
        self.act = nn.LeakyReLU(negative_slope)
        self.channel = HyperChannelAttention(channels, cond_dim, reduction, basis, channel_negative_slope)
        self.spatial = HyperSpatialAttention(cond_dim, spatial_kernel, basis, dims, spatial_bias, spatial_padding)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv(x, cond))
        x = self.channel(x, cond) * x
        return self.spatial(x, cond) * x


class TaskAttention(nn.Module):
    """Stacked per-sequence features (B, N*C, *S) and fused f̂ -> residual f_A (B, C, *S).

    The first layer sees the stacked features, each later one f̂ plus the residual so far;
    f_A is the sum of the layers' outputs (the authors' x = x + res; res = x)."""

    def __init__(
        self,
        n_sequences: int,
        channels: int,
        dims: int = 2,
        layers: int = 1,
        kernel: int = 3,
        reduction: int = 16,
        spatial_kernel: int = 7,
        basis: int = 4,
        negative_slope: float = 0.2,
        channel_negative_slope: float = 0.0,
        spatial_bias: bool = True,
        spatial_padding: str = "reflect",
    ) -> None:
        super().__init__()
        cond_dim = 2 * n_sequences
        self.layers = nn.ModuleList(
            TaskAttentionLayer(
                n_sequences * channels if i == 0 else channels,
                channels,
                cond_dim,
                kernel,
                reduction,
                spatial_kernel,
                basis,
                negative_slope,
                dims,
                channel_negative_slope,
                spatial_bias,
                spatial_padding,
            )
            for i in range(layers)
        )

    def forward(self, stacked: torch.Tensor, code: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        x, residual = stacked, None
        for layer in self.layers:
            out = layer(x, code)
            residual = out if residual is None else residual + out
            x = fused + residual
        assert residual is not None
        return residual
