"""The fusion plugin interface: two kinds of plugin, one registry kind (`fusion`).

* `FeatureFusion` (the method and its ablations): receives the features of every
  sequence from the shared encoder E (zeros where a sequence is not a source), the
  source mask and the task code, and returns what the head decodes plus its
  explanations. tsfnet wraps it with E and the head into a `FusionModel`.
* `Network` (the baselines): a whole network that brings its own encoders, fusion
  and decoder (MM-GAN, Hi-Net, pix2pix, Seq2Seq averaging) and names the training
  stages it needs.

Register either with `@register("fusion", "name")` (or an entry point in the group
`tsfnet.fusion`), and `tsfnet train --fusion name` uses it; anything else is refused
when it registers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class FusionResult:
    fused: torch.Tensor  # (B, C, *S): what the head decodes
    residual: torch.Tensor | None = None  # (B, C, *S): f_A; the head also decodes fused + residual
    weights: torch.Tensor | None = None  # (B, N): how much each sequence contributed


@dataclass
class ModelOutput:
    output: torch.Tensor  # G(f̂ + f_A) when the fusion has a residual, else G(f̂)
    base: torch.Tensor | None = None  # G(f̂), only when there is a residual
    weights: torch.Tensor | None = None  # (B, N) ω

    @property
    def tsem(self) -> torch.Tensor | None:
        """Task-specific enhanced map |G(f̂ + f_A) - G(f̂)|: where attention changed the result."""
        return None if self.base is None else (self.output - self.base).abs()


class FeatureFusion(nn.Module):
    """Base class. Constructor arguments come from the plans (`Plans.fusion_options(name)`)."""

    def __init__(self, n_sequences: int, channels: int, dims: int = 2) -> None:
        super().__init__()
        self.n_sequences, self.channels, self.dims = n_sequences, channels, dims

    def forward(self, features: torch.Tensor, source_mask: torch.Tensor, code: torch.Tensor) -> FusionResult:
        """features (B, N, C, *S); source_mask (B, N) in {0, 1}; code (B, 2N)."""
        raise NotImplementedError


class Network(nn.Module):
    """What training and inference drive, whatever the fusion.

    Inference encodes the sources once (`encode`) and decodes every target from that
    (`decode`); training calls `forward(..., phase=NAME)`, which runs the method of
    that name, so DistributedDataParallel sees every call. `stages` names the
    registered `stage` plugins that train it, in order; `parameter_groups` names the
    parts a stage may train alone (a stage with `trains` set picks groups by name).
    """

    stages: tuple[str, ...] = ()
    phases: tuple[str, ...] = ("synthesise",)
    n_sequences: int
    dims: int
    output_slices: int = 1  # a synthesis of every context slice, inference keeping the centre one

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named parts, e.g. encoder / fusion / head; by default the whole network."""
        return {"network": list(self.parameters())}

    def encode(
        self, images: torch.Tensor, source_mask: torch.Tensor, sources: tuple[int, ...] | None = None
    ) -> torch.Tensor:
        """(B, N, Cin, *S) images -> whatever `decode` consumes. `sources`: the source indices
        when every sample shares them (known on the host; see `gather_sources`), else None."""
        raise NotImplementedError

    def decode(self, features: torch.Tensor, source_mask: torch.Tensor, target: torch.Tensor) -> ModelOutput:
        """target (B,), or (1,) when the whole batch shares one task (sources and target):
        the caller knows that on the host, and task-conditioned layers then run dense."""
        raise NotImplementedError

    def synthesise(
        self,
        images: torch.Tensor,
        source_mask: torch.Tensor,
        target: torch.Tensor,
        sources: tuple[int, ...] | None = None,
    ) -> ModelOutput:
        source_mask = source_mask.to(images.dtype)
        return self.decode(self.encode(images, source_mask, sources), source_mask, target)

    def forward(self, *args, phase: str = "synthesise", **kwargs):
        if phase not in self.phases:
            raise ValueError(f"{type(self).__name__} has no phase '{phase}'; it has {', '.join(self.phases)}")
        return getattr(self, phase)(*args, **kwargs)


def gather_sources(
    images: torch.Tensor, source_mask: torch.Tensor, sources: tuple[int, ...] | None
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """The source images of every sample, flattened to (B·k, Cin, *S), and the function that
    puts per-source results back as (B, N, ...) with zeros for non-sources. With `sources`
    known on the host the indexing is static; from the mask alone it needs `nonzero`, a
    device-to-host sync and a torch.compile graph break."""
    if sources is not None:
        index, grouped = (slice(None), list(sources)), (images.shape[0], len(sources))
    else:
        index, grouped = source_mask.bool().nonzero(as_tuple=True), (-1,)
    chosen = images[index].reshape(-1, *images.shape[2:])

    def scatter(features: torch.Tensor) -> torch.Tensor:
        out = features.new_zeros(*source_mask.shape, *features.shape[1:])
        out[index] = features.view(*grouped, *features.shape[1:])
        return out

    return chosen, scatter


def weighted_sum(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_i w_i f_i over the sequence axis."""
    shape = (*weights.shape, *([1] * (features.dim() - 2)))
    return (features * weights.view(shape)).sum(dim=1)


def per_sample(target: torch.Tensor, batch: int) -> torch.Tensor:
    """A target shared by the batch ((1,)) as one per sample ((B,)), for networks that index by it."""
    return target.expand(batch)


def expand_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, N) -> (B, N, 1, ...) broadcastable against `like` (B, N, ...)."""
    return mask.view(*mask.shape, *([1] * (like.dim() - mask.dim())))
