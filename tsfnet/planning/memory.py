"""A rough estimate of training memory, used only to pick batch and patch sizes.

It counts the activations a TSF training step keeps for backward: encoder passes
for the sources, two decoder passes (G(f) and G(f + f_A)), the per-sample kernels
HyperConv generates, and the perceptual network on both outputs. It errs high:
a batch that fits the estimate fits the GPU.
"""

from __future__ import annotations

import math

BYTES = 4  # fp32 activations; bf16 autocast roughly halves this, kept as headroom
TENSORS_PER_CONV = 4  # conv output, norm output, activation, saved input
GATED_TENSORS = 8  # a gated layer (ConvLSTM at length 1): three gates, their activations, the cell, the output
VGG_ELEMENTS_PER_PIXEL = 2 * (64 * 2 + 128 * 2 / 4 + 256 * 4 / 16 + 512 * 4 / 64 + 512 * 4 / 256)


def activation_elements_per_sample(patch: list[int], network: dict, n_sources: int = 3) -> float:
    voxels = math.prod(patch)
    dims = len(patch)
    widths, strides = network["encoder_widths"], network["strides"]
    per_pass, scale = 0.0, 1.0
    for width, stride in zip(widths, strides, strict=True):
        scale /= stride**dims
        per_pass += TENSORS_PER_CONV * width * voxels * scale
    per_pass += 2 * network["residual_blocks"] * TENSORS_PER_CONV * widths[-1] * voxels * scale
    per_pass += network.get("gated_layers", 0) * GATED_TENSORS * widths[-1] * voxels * scale
    encoder = n_sources * per_pass
    decoder = 2 * per_pass
    perceptual = 2 * VGG_ELEMENTS_PER_PIXEL * voxels
    return encoder + decoder + perceptual


def generated_kernel_elements_per_sample(network: dict) -> float:
    """Decoder kernels HyperConv materialises for every sample (and their gradients)."""
    widths, kernels = network["encoder_widths"], network["encoder_kernels"]
    k = kernels[-1] ** 2
    residual = 2 * network["residual_blocks"] * widths[-1] ** 2 * k
    upsampling = sum(a * b * k for a, b in zip(widths[1:], widths[:-1], strict=True))
    return 2 * (residual + upsampling)


def estimate_gb(patch: list[int], batch_size: int, network: dict) -> float:
    per_sample = activation_elements_per_sample(patch, network) + generated_kernel_elements_per_sample(network)
    return batch_size * per_sample * BYTES / 1024**3 + 1.0  # + weights, optimiser state, CUDA context
