"""Losses: reconstruction (L1 / SmoothL1) and the VGG19 perceptual loss.

The perceptual loss needs VGG19 weights from the local disk (see tsfnet.weights).
Without them, training uses the reconstruction term alone and says so once.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from tsfnet.registry import register, registry
from tsfnet.weights import HOW_TO_SUPPLY, find_weights, load_state_dict

log = logging.getLogger("tsfnet")

# relu1_2, relu2_2, relu3_4, relu4_4, relu5_4 of torchvision's vgg19().features, weighted
# coarse-to-fine as in pix2pixHD's perceptual loss.
VGG19_LAYERS = (3, 8, 17, 26, 35)
VGG19_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
# The variants `training.loss.perceptual` chooses (docs/fidelity.md, Losses): pix2pixHD's, and the
# one in the authors' later nnSeq2Seq (max-pooling made average-pooling, the unweighted sum of
# the MSE after every one of VGG19's 16 ReLUs).
PERCEPTUAL_VARIANTS = ("pix2pixhd", "nnseq2seq")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


register("loss", "l1")(nn.L1Loss)
register("loss", "smooth_l1")(nn.SmoothL1Loss)


class PerceptualLoss(nn.Module):
    """Σ_l w_l · distance(φ_l(x), φ_l(y)) on a frozen backbone, the distance the mean absolute
    (`squared` false) or squared difference; 3D inputs go slice by slice."""

    def __init__(
        self,
        backbone: nn.Sequential,
        layers: tuple[int, ...],
        layer_weights: tuple[float, ...],
        squared: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone[: max(layers) + 1].eval()
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)
        self.layers, self.layer_weights, self.squared = layers, layer_weights, squared
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() == 5:  # (B, 1, X, Y, Z) -> slices (B*Z, 1, X, Y)
            x = x.permute(0, 4, 1, 2, 3).flatten(0, 1)
        if x.shape[1] > 1:  # several context slices (`output_slices`): each a grey image
            x = x.flatten(0, 1).unsqueeze(1)
        x = ((x + 1) / 2).expand(-1, 3, -1, -1)  # [-1, 1] grey -> [0, 1] RGB
        x = (x - self.mean) / self.std
        out = []
        for index, layer in enumerate(self.backbone):
            x = layer(x)
            if index in self.layers:
                out.append(x)
        return out

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_features = self.features(target)
        loss = prediction.new_zeros(())
        for weight, a, b in zip(self.layer_weights, self.features(prediction), target_features, strict=True):
            difference = a - b
            loss = loss + weight * (difference.square() if self.squared else difference.abs()).mean()
        return loss


def vgg19_perceptual(weights_path: Path, variant: str = "pix2pixhd") -> PerceptualLoss:
    from torchvision.models import vgg19

    state = load_state_dict(weights_path)
    features_only = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier")}
    backbone = vgg19(weights=None).features
    backbone.load_state_dict(features_only)
    if variant == "pix2pixhd":
        return PerceptualLoss(backbone, VGG19_LAYERS, VGG19_LAYER_WEIGHTS)
    if variant != "nnseq2seq":
        raise ValueError(f"perceptual variant must be one of {', '.join(PERCEPTUAL_VARIANTS)}, got {variant!r}")
    for index, layer in enumerate(backbone):
        if isinstance(layer, nn.MaxPool2d):
            backbone[index] = nn.AvgPool2d(kernel_size=2, stride=2)
    relus = tuple(i for i, layer in enumerate(backbone) if isinstance(layer, nn.ReLU))
    return PerceptualLoss(backbone, relus, (1.0,) * len(relus), squared=True)


def build_perceptual(explicit: Path | None, weight: float, variant: str = "pix2pixhd") -> PerceptualLoss | None:
    if weight <= 0:
        return None
    path = find_weights(explicit, "vgg19")
    if path is None:
        log.warning(
            "VGG19 weights not found: training with the L1 term only (no perceptual loss). To add it, "
            + HOW_TO_SUPPLY.format(file="vgg19-dcbb9e9d.pth", flag="--perceptual-weights")
        )
        return None
    return vgg19_perceptual(path, variant)


class SynthesisCriterion(nn.Module):
    """λr · reconstruction + λp · perceptual (the paper: λr = 10, λp = 0.01). It also carries
    the authors' extra terms for the stages to add: `source_reconstruction` (both stages)
    and `cycle_weight` (stage 1's cycle term, reconstruction only)."""

    def __init__(
        self,
        reconstruction: str = "l1",
        rec_weight: float = 10.0,
        perceptual: PerceptualLoss | None = None,
        perceptual_weight: float = 0.01,
        source_reconstruction: bool = False,
        cycle_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.reconstruction = registry.get("loss", reconstruction)()
        self.rec_weight, self.perceptual_weight = rec_weight, perceptual_weight
        self.perceptual = perceptual
        self.source_reconstruction, self.cycle_weight = source_reconstruction, cycle_weight

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.rec_weight * self.reconstruction(prediction, target)
        if self.perceptual is not None:
            loss = loss + self.perceptual_weight * self.perceptual(prediction.float(), target.float())
        return loss
