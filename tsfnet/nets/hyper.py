"""HyperConv and HyperLinear: layers whose weights are generated from a condition.

weight = P · φ(s), with a learned basis P (one column per basis vector) and
φ = Linear(s -> 4b) -> Linear(4b -> b); the bias likewise. Each sample of a batch
gets its own kernel, applied in one grouped convolution (on the CPU, a layer of few
outputs convolves with the basis instead: see HyperConv._basis_form), so one network serves
every task without a Python loop over the batch. A condition with one row is shared
by the whole batch: one kernel and a plain (dense) convolution (on the CPU in inference, a
one-output layer sums a depthwise convolution instead: HyperConv._channelwise_form). The
caller knows on the host whether its batch shares a task and passes one row then, so no
layer has to compare conditions on the device (a host sync and a torch.compile graph break).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CONV = {2: F.conv2d, 3: F.conv3d}
# Up to this many output channels a CPU HyperConv over a batch of tasks convolves with its
# basis instead of grouping per-sample kernels (see HyperConv._basis_form; at 4 outputs the
# grouped convolution was the faster again).
BASIS_FORM_MAX_OUT = 3


class WeightGenerator(nn.Module):
    """Maps a condition vector to `numel` weights through a rank-`basis` factorisation."""

    def __init__(self, cond_dim: int, numel: int, basis: int, std: float) -> None:
        super().__init__()
        self.mapper = nn.Sequential(nn.Linear(cond_dim, 4 * basis), nn.Linear(4 * basis, basis))
        self.basis = nn.Parameter(torch.empty(numel, basis))
        # Unit-scale basis coefficients for unit-scale conditions, then weights of std `std`.
        nn.init.normal_(self.mapper[0].weight, std=1.0 / math.sqrt(cond_dim))
        nn.init.normal_(self.mapper[1].weight, std=1.0 / math.sqrt(4 * basis))
        nn.init.zeros_(self.mapper[0].bias)
        nn.init.zeros_(self.mapper[1].bias)
        nn.init.normal_(self.basis, std=std / math.sqrt(basis))

    def coefficients(self, cond: torch.Tensor) -> torch.Tensor:
        """φ(s): each condition's weights on the basis vectors, (B, basis)."""
        return self.mapper(cond)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.coefficients(cond) @ self.basis.t()


class HyperConv(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        cond_dim: int,
        dims: int = 2,
        stride: int = 1,
        basis: int = 16,
        padding_mode: str = "reflect",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_shape = (kernel_size,) * dims
        self.dims, self.stride, self.padding_mode = dims, stride, padding_mode
        fan_in = in_channels * kernel_size**dims
        self.weight = WeightGenerator(cond_dim, out_channels * fan_in, basis, math.sqrt(2.0 / fan_in))
        self.bias = WeightGenerator(cond_dim, out_channels, basis, 0.0) if bias else None

    def kernels(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-sample kernel (B, out, in, *k) and bias (B, out)."""
        batch = cond.shape[0]
        weight = self.weight(cond).view(batch, self.out_channels, self.in_channels, *self.kernel_shape)
        bias = self.bias(cond) if self.bias is not None else None
        return weight, bias

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, in, *S); cond (B, D), or (1, D) shared by the batch."""
        batch = x.shape[0]
        pad = self.kernel_shape[0] // 2
        if pad:
            mode = self.padding_mode if min(x.shape[2:]) > pad else "replicate"
            x = F.pad(x, (pad,) * (2 * self.dims), mode=mode if mode != "zeros" else "constant")
        if cond.shape[0] == 1:
            # One task for the whole batch (always so in inference): one kernel and a plain
            # convolution, up to 3x faster than the grouped one on CPUs (bf16).
            weight, bias = self.kernels(cond)
            if x.device.type == "cpu" and self.out_channels == 1 and not torch.is_grad_enabled():
                return self._channelwise_form(x, weight[0], None if bias is None else bias[0])
            return CONV[self.dims](x, weight[0], None if bias is None else bias[0], stride=self.stride)
        if x.device.type == "cpu" and self.out_channels <= BASIS_FORM_MAX_OUT:
            return self._basis_form(x, cond)
        weight, bias = self.kernels(cond)
        grouped = x.reshape(1, batch * self.in_channels, *x.shape[2:])
        out = CONV[self.dims](
            grouped,
            weight.reshape(batch * self.out_channels, self.in_channels, *self.kernel_shape),
            None if bias is None else bias.reshape(-1),
            stride=self.stride,
            groups=batch,
        )
        return out.view(batch, self.out_channels, *out.shape[2:])

    def _channelwise_form(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """A one-output convolution as each input channel convolved with its own kernel
        (depthwise), summed over the channels: the same sum of products in another order. In
        oneDNN a dense convolution with one output costs as much as one with 16, and the
        synthesis output layer is one (15 % of CPU inference); this form is 4x faster forward
        in fp32 and 5x under bf16, but slower backward, so it serves inference only
        (benchmarks/results/cpu_inference_2026-11-29.md)."""
        depthwise = weight.reshape(self.in_channels, 1, *self.kernel_shape)
        out = CONV[self.dims](x, depthwise, stride=self.stride, groups=self.in_channels).sum(1, keepdim=True)
        return out if bias is None else out + bias.view(1, 1, *([1] * self.dims)).to(out.dtype)

    def _basis_form(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The same per-sample convolution by linearity: x convolved with every basis kernel in
        one dense convolution, then each sample's mix of them. `basis` times the multiply-adds,
        yet on the CPU a grouped convolution with one or a few outputs per group (the synthesis
        output layer) is so slow in oneDNN, its backward most of all, that this is 5x faster
        in fp32 there (a third of a training step; benchmarks/results/hyper_output_layer_2026-11-29.md)."""
        batch, rank = x.shape[0], self.weight.basis.shape[1]
        kernels = self.weight.basis.t().reshape(rank * self.out_channels, self.in_channels, *self.kernel_shape)
        responses = CONV[self.dims](x, kernels, stride=self.stride)
        responses = responses.view(batch, rank, self.out_channels, *responses.shape[2:])
        out = torch.einsum("bk,bko...->bo...", self.weight.coefficients(cond).to(responses.dtype), responses)
        if self.bias is None:
            return out
        return out + self.bias(cond).view(batch, self.out_channels, *([1] * self.dims)).to(out.dtype)


class HyperLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, cond_dim: int, basis: int = 16) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = WeightGenerator(cond_dim, out_features * in_features, basis, math.sqrt(2.0 / in_features))
        self.bias = WeightGenerator(cond_dim, out_features, basis, 0.0)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, in); cond (B, D), or (1, D) shared by the batch."""
        weight = self.weight(cond).view(-1, self.out_features, self.in_features)
        return (weight @ x.unsqueeze(-1)).squeeze(-1) + self.bias(cond)
