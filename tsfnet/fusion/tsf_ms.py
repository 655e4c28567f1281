"""`tsf-ms`: TSF at every encoder scale, the fused features feeding G through skips.

Not the paper's method (that is `tsf`): an extension for the same benchmark. TSF
fuses only E's bottleneck (stride 4), so G has to rebuild full-resolution detail
from it; U-Net-style networks (Hi-Net, and the authors' later nnSeq2Seq) keep
full-resolution skips. Here:

* E is Seq2Seq's encoder; its features after each level (full, 1/2, ... resolution)
  are scales 0 .. S-1, the last one after the residual blocks (the bottleneck).
* Every scale s has its own task-specific weighting, as TSF's:
  ω_s = softmax(FC_s(code)) + 1e-5, masked by the sources and renormalised per
  sample (the `weighting` option as `tsf`'s), f̂_s = Σ_i ω_s,i f_s,i.
* At the bottleneck, TSF itself (`tsf`'s weighting and HyperConv-CBAM residual f_A).
* G is Seq2Seq's HyperConv decoder with, after each upsampling, the fused skip of
  that scale concatenated and merged by a HyperConv(3) + norm + activation.
  X' = G(f̂ | f̂_0..S-2), X'_A = G(f̂ + f_A | f̂_0..S-2), TSEM = |X'_A − X'|.

Stage 1 (`pretrain`) trains E and G one-to-one with a source's own features as the
skips; with one source every ω_s is exactly 1, so stage 2 (`finetune`) starts where
stage 1 ended. `ModelOutput.weights` (B, N) is the mean of ω over the scales (it
still sums to 1 over the sources): what the weights JSON and `tsfnet explain`
report; `MultiScaleOutput.scale_weights` (B, S, N) holds each scale's ω, finest
first, and `scale_task_weights` lists them for every task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tsfnet.fusion.base import ModelOutput, gather_sources, weighted_sum
from tsfnet.fusion.tsf import TaskSpecificFusion, TaskWeighting
from tsfnet.model import FusionModel, Seq2SeqCore
from tsfnet.nets.blocks import HyperConvNormAct, resize
from tsfnet.nets.seq2seq import Encoder, HyperDecoder, block_options
from tsfnet.planning.plans import Plans, as_plans
from tsfnet.registry import register
from tsfnet.tasks import all_tasks, task_code


@dataclass
class MultiScaleOutput(ModelOutput):
    scale_weights: torch.Tensor | None = None  # (B, S, N): ω at every scale, finest first


@dataclass
class MultiScaleResult:
    fused: list[torch.Tensor]  # f̂_s per scale, finest first; the last is the bottleneck
    residual: torch.Tensor  # f_A at the bottleneck
    weights: torch.Tensor  # (B, N): ω averaged over the scales
    scale_weights: torch.Tensor  # (B, S, N)


def encoder_levels(encoder: Encoder, x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """E's features after each of its `levels` strided convolutions, the last one after
    the residual blocks that follow: [full, 1/2, ..., bottleneck] for strides 1, 2, 2."""
    out = []
    for i, layer in enumerate(encoder.layers):
        x = layer(x)
        if i < levels - 1:
            out.append(x)
    return [*out, x]


class SkipDecoder(HyperDecoder):
    """Seq2Seq's G with a skip at every scale: after upsampling to scale s, concat(x, f̂_s)
    goes through a HyperConv(3) + norm + activation back to that scale's width."""

    def __init__(self, network: dict, cond_dim: int, dims: int = 2) -> None:
        super().__init__(network, cond_dim, 1, dims)
        widths, basis = network["encoder_widths"], network["hyper_basis"]
        self.merges = nn.ModuleList(
            HyperConvNormAct(
                dims, 2 * widths[level - 1], widths[level - 1], 3, cond_dim, basis, **block_options(network)
            )
            for level in range(len(widths) - 1, 0, -1)
        )

    def forward(self, levels: list[torch.Tensor], cond: torch.Tensor) -> torch.Tensor:
        x = levels[-1]
        for block in self.residual:
            x = block(x, cond)
        skips = levels[-2::-1]  # coarsest skip first
        for upsample, layer, merge, skip in zip(self.upsample, self.up_convs, self.merges, skips, strict=True):
            x = layer(upsample(x), cond)
            if x.shape[2:] != skip.shape[2:]:  # odd sizes: E rounded up
                x = resize(x, size=skip.shape[2:])
            x = merge(torch.cat([x, skip], dim=1), cond)
        return torch.tanh(self.output(x, cond))


class SkipSynthesisHead(nn.Module):
    """The synthesis head (target one-hot -> embedding -> G) with `SkipDecoder` as G."""

    conditioned_on_target = True

    def __init__(self, network: dict, n_sequences: int, dims: int = 2) -> None:
        super().__init__()
        self.n_sequences = n_sequences
        self.embed = nn.Linear(n_sequences, network["code_embedding"], bias=False)
        nn.init.normal_(self.embed.weight, std=1.0)
        self.decoder = SkipDecoder(network, network["code_embedding"], dims)

    def forward(self, levels: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(target.long(), self.n_sequences).to(levels[-1].dtype)
        return self.decoder(levels, self.embed(onehot))


class MultiScaleFusion(nn.Module):
    """One task-specific weighting per skip scale, and TSF (ω and f_A) at the bottleneck."""

    def __init__(self, n_sequences: int, widths: list[int], dims: int, weighting: str = "softmax", **tsf) -> None:
        super().__init__()
        self.skips = nn.ModuleList(TaskWeighting(n_sequences, weighting) for _ in widths[:-1])
        self.bottleneck = TaskSpecificFusion(n_sequences, widths[-1], dims, weighting=weighting, **tsf)

    def forward(
        self, levels: list[torch.Tensor] | torch.Tensor, source_mask: torch.Tensor, code: torch.Tensor
    ) -> MultiScaleResult:
        """levels: (B, N, C_s, *S_s) per scale, finest first. A lone tensor is taken as the
        bottleneck (`tsfnet explain` passes one): ω depends on the code alone."""
        levels = [levels] if isinstance(levels, torch.Tensor) else list(levels)
        bottom = self.bottleneck(levels[-1], source_mask, code)
        skip_weights = [weighting(code, source_mask) for weighting in self.skips]
        fused = [weighted_sum(f, w) for f, w in zip(levels[:-1], skip_weights[: len(levels) - 1], strict=True)]
        assert bottom.residual is not None and bottom.weights is not None
        scale_weights = torch.stack([*skip_weights, bottom.weights], dim=1)
        return MultiScaleResult([*fused, bottom.fused], bottom.residual, scale_weights.mean(dim=1), scale_weights)

    def scale_weights(self, code: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        """ω at every scale, finest first: (B, S, N). It depends on the code alone."""
        weightings = [*self.skips, self.bottleneck.weighting]
        return torch.stack([weighting(code, source_mask) for weighting in weightings], dim=1)


@register("fusion", "tsf-ms")
class MultiScaleTSF(FusionModel):
    """E -> per-scale TSF -> G with skips; trained by `pretrain` then `finetune` like `tsf`.
    Options (`fusion.tsf-ms` in the plans) are `tsf`'s; widths come from the plans' network."""

    def __init__(self, plans: Plans | dict, config: str, **options) -> None:
        plans = as_plans(plans)
        Seq2SeqCore.__init__(self, plans, config, "synthesis")  # E, dims, stages; G is replaced below
        network = plans.network
        self.levels = len(network["encoder_widths"])
        # Each scale's stride relative to the input, finest first (1, 2, 4 for strides 1, 2, 2).
        self.scale_strides = [math.prod(network["strides"][: i + 1]) for i in range(self.levels)]
        self.head = SkipSynthesisHead(network, self.n_sequences, self.dims)
        self.fusion = MultiScaleFusion(self.n_sequences, list(network["encoder_widths"]), self.dims, **options)

    def encode(
        self, images: torch.Tensor, source_mask: torch.Tensor, sources: tuple[int, ...] | None = None
    ) -> list[torch.Tensor]:
        """E on the sources only: per scale (B, N, C_s, *S_s), zeros where not a source."""
        chosen, scatter = gather_sources(images, source_mask, sources)
        return [scatter(features) for features in encoder_levels(self.encoder, chosen, self.levels)]

    def decode(self, features: list[torch.Tensor], source_mask: torch.Tensor, target: torch.Tensor) -> ModelOutput:
        code = task_code(source_mask[: len(target)], target, self.n_sequences)
        fused = self.fusion(features, source_mask, code)
        # One head call decodes f̂ and f̂ + f_A, both with the same fused skips.
        targets = target if len(target) == 1 else torch.cat([target, target])
        skips = [torch.cat([f, f]) for f in fused.fused[:-1]]
        bottom = fused.fused[-1]
        base, enhanced = self.head([*skips, torch.cat([bottom, bottom + fused.residual])], targets).chunk(2)
        return MultiScaleOutput(enhanced, base, fused.weights, fused.scale_weights)

    def one_to_one(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Stage 1: G(E(x) | target) with the source's own features as the skips."""
        return self.head(encoder_levels(self.encoder, images, self.levels), target)


def scale_task_weights(model: MultiScaleTSF, names: list[str]) -> list[dict]:
    """ω at every scale for every (sources, target) task, finest scale first:
    [{"target", "sources", "strides", "weights": {source: [ω_0, ..., ω_S-1]}}]."""
    device = next(model.parameters()).device
    n, rows = len(names), []
    for sources, target in all_tasks(list(range(n))):
        mask = torch.zeros(1, n, device=device)
        mask[0, list(sources)] = 1
        with torch.no_grad():
            weights = model.fusion.scale_weights(task_code(mask, torch.tensor([target], device=device), n), mask)[0]
        rows.append(
            {
                "target": names[target],
                "sources": [names[s] for s in sources],
                "strides": model.scale_strides,
                "weights": {names[s]: [float(w) for w in weights[:, s]] for s in sources},
            }
        )
    return rows
