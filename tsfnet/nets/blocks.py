"""Dimension-agnostic convolution helpers (2D slices or 3D patches)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tsfnet.nets.hyper import HyperConv


def conv(dims: int, *args, **kwargs) -> nn.Module:
    return (nn.Conv2d if dims == 2 else nn.Conv3d)(*args, **kwargs)


class _InstanceNormOnCpuAsGroupNorm:
    """Instance norm computed, on the CPU, as a group norm with one group per channel: the
    same statistics and affine per sample and channel (equal to rounding), and PyTorch's CPU
    group-norm kernel is 4x faster forward and 1.5-2x faster forward + backward in fp32
    (benchmarks/results/cpu_inference_2026-11-29.md). Elsewhere, and for unbatched input,
    the instance norm it is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dim() == self.batched_dims:
            return F.group_norm(x, self.num_features, self.weight, self.bias, self.eps)
        return super().forward(x)


class InstanceNorm2d(_InstanceNormOnCpuAsGroupNorm, nn.InstanceNorm2d):
    batched_dims = 4


class InstanceNorm3d(_InstanceNormOnCpuAsGroupNorm, nn.InstanceNorm3d):
    batched_dims = 5


def instance_norm(dims: int, channels: int, affine: bool = True) -> nn.Module:
    return (InstanceNorm2d if dims == 2 else InstanceNorm3d)(channels, affine=affine)


def activation(negative_slope: float = 0.0) -> nn.Module:
    """ReLU, or LeakyReLU when `negative_slope` is not 0 (the Seq2Seq authors use 0.2)."""
    return nn.LeakyReLU(negative_slope, inplace=True) if negative_slope else nn.ReLU(inplace=True)


def interpolation_mode(x: torch.Tensor) -> str:
    return "bilinear" if x.dim() == 4 else "trilinear"


def resize(x: torch.Tensor, size: tuple[int, ...] | None = None, scale: int | None = None) -> torch.Tensor:
    """Bilinear (trilinear) resampling to `size` or by `scale`. On the CPU without gradients
    (validation, inference) it runs in fp32: PyTorch's bf16 kernel there is about twice as slow
    and rounds to the same values (trilinear to an odd size: within one bf16 step, that kernel
    rounding in between), and the reflect padding that follows wants fp32 anyway. Training
    keeps the input's dtype, so its bf16 gradients and the seeded results stay as they were."""
    if x.device.type == "cpu" and not torch.is_grad_enabled():
        x = x.float()
    return F.interpolate(x, size=size, scale_factor=scale, mode=interpolation_mode(x), align_corners=False)


class Upsample(nn.Module):
    """`resize` by a fixed `scale`, as a layer."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize(x, scale=self.scale)


class ConvNormAct(nn.Sequential):
    def __init__(
        self,
        dims: int,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        act: bool = True,
        negative_slope: float = 0.0,
        affine: bool = True,
    ) -> None:
        layers = [
            conv(dims, cin, cout, kernel, stride=stride, padding=kernel // 2, padding_mode="reflect"),
            instance_norm(dims, cout, affine),
        ]
        if act:
            layers.append(activation(negative_slope))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    def __init__(self, dims: int, channels: int, negative_slope: float = 0.0, affine: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvNormAct(dims, channels, channels, 3, negative_slope=negative_slope, affine=affine),
            ConvNormAct(dims, channels, channels, 3, act=False, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GatedConv(nn.Module):
    """One ConvLSTM layer at sequence length 1 from a zero state, as the Seq2Seq authors run
    theirs on single 2.5D slices: the forget gate and the recurrent kernel never act, so
    h = σ(o) ⊙ tanh(σ(i) ⊙ tanh(g)) with i, o, g from one 3x3 convolution of x."""

    def __init__(self, dims: int, channels: int) -> None:
        super().__init__()
        self.gates = conv(dims, channels, 3 * channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs, outputs, candidate = self.gates(x).chunk(3, dim=1)
        return torch.sigmoid(outputs) * torch.tanh(torch.sigmoid(inputs) * torch.tanh(candidate))


def gated_layers(dims: int, channels: int, count: int) -> nn.Sequential:
    """`network.gated_layers` of them (the authors' 3-layer ConvLSTM; 0 by default)."""
    return nn.Sequential(*(GatedConv(dims, channels) for _ in range(count)))


class HyperConvNormAct(nn.Module):
    def __init__(
        self,
        dims: int,
        cin: int,
        cout: int,
        kernel: int,
        cond_dim: int,
        basis: int,
        act: bool = True,
        negative_slope: float = 0.0,
        affine: bool = True,
    ) -> None:
        super().__init__()
        self.conv = HyperConv(cin, cout, kernel, cond_dim, dims, basis=basis)
        self.norm = instance_norm(dims, cout, affine)
        self.act = activation(negative_slope) if act else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x, cond)))


class HyperResidualBlock(nn.Module):
    def __init__(
        self, dims: int, channels: int, cond_dim: int, basis: int, negative_slope: float = 0.0, affine: bool = True
    ) -> None:
        super().__init__()
        self.first = HyperConvNormAct(
            dims, channels, channels, 3, cond_dim, basis, negative_slope=negative_slope, affine=affine
        )
        self.second = HyperConvNormAct(dims, channels, channels, 3, cond_dim, basis, act=False, affine=affine)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return x + self.second(self.first(x, cond), cond)
