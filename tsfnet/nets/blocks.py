"""Dimension-agnostic convolution helpers (2D slices or 3D patches)."""

from __future__ import annotations

import torch
from torch import nn

from tsfnet.nets.hyper import HyperConv


def conv(dims: int, *args, **kwargs) -> nn.Module:
    return (nn.Conv2d if dims == 2 else nn.Conv3d)(*args, **kwargs)


def instance_norm(dims: int, channels: int) -> nn.Module:
    return (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)(channels, affine=True)


class ConvNormAct(nn.Sequential):
    def __init__(self, dims: int, cin: int, cout: int, kernel: int, stride: int = 1, act: bool = True) -> None:
        layers = [
            conv(dims, cin, cout, kernel, stride=stride, padding=kernel // 2, padding_mode="reflect"),
            instance_norm(dims, cout),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    def __init__(self, dims: int, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvNormAct(dims, channels, channels, 3), ConvNormAct(dims, channels, channels, 3, act=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class HyperConvNormAct(nn.Module):
    def __init__(
        self, dims: int, cin: int, cout: int, kernel: int, cond_dim: int, basis: int, act: bool = True
    ) -> None:
        super().__init__()
        self.conv = HyperConv(cin, cout, kernel, cond_dim, dims, basis=basis)
        self.norm = instance_norm(dims, cout)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x, cond)))


class HyperResidualBlock(nn.Module):
    def __init__(self, dims: int, channels: int, cond_dim: int, basis: int) -> None:
        super().__init__()
        self.first = HyperConvNormAct(dims, channels, channels, 3, cond_dim, basis)
        self.second = HyperConvNormAct(dims, channels, channels, 3, cond_dim, basis, act=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return x + self.second(self.first(x, cond), cond)
