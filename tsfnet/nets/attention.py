"""Task-specific attention G_A: CBAM (Woo et al. 2018) whose layers are HyperConv /
HyperLinear conditioned on the task code, as TSF-Seq2Seq prescribes."""

from __future__ import annotations

import torch
from torch import nn

from tsfnet.nets.hyper import HyperConv, HyperLinear


class HyperChannelAttention(nn.Module):
    """Average- and max-pooled channel descriptors through one shared hyper-MLP."""

    def __init__(self, channels: int, cond_dim: int, reduction: int, basis: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.down = HyperLinear(channels, hidden, cond_dim, basis)
        self.up = HyperLinear(hidden, channels, cond_dim, basis)
        self.act = nn.ReLU()

    def mlp(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x, cond)), cond)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        logits = self.mlp(flat.mean(-1), cond) + self.mlp(flat.amax(-1), cond)
        return torch.sigmoid(logits).view(*x.shape[:2], *([1] * (x.dim() - 2)))


class HyperSpatialAttention(nn.Module):
    """Channel-mean and channel-max maps through a hyper 7x7 (x7) convolution."""

    def __init__(self, cond_dim: int, kernel: int, basis: int, dims: int) -> None:
        super().__init__()
        self.conv = HyperConv(2, 1, kernel, cond_dim, dims, basis=basis)

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
    ) -> None:
        super().__init__()
        self.conv = HyperConv(cin, channels, kernel, cond_dim, dims, basis=basis)
        self.act = nn.LeakyReLU(negative_slope)
        self.channel = HyperChannelAttention(channels, cond_dim, reduction, basis)
        self.spatial = HyperSpatialAttention(cond_dim, spatial_kernel, basis, dims)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv(x, cond))
        x = self.channel(x, cond) * x
        return self.spatial(x, cond) * x


class TaskAttention(nn.Module):
    """Stacked per-sequence features (B, N*C, *S) -> residual f_A (B, C, *S)."""

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
            )
            for i in range(layers)
        )

    def forward(self, stacked: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        x = stacked
        for layer in self.layers:
            x = layer(x, code)
        return x
