"""The GAN baselines' training stage: alternate least-squares discriminator and
generator updates (Mao et al. 2017), two Adam optimizers with β = (0.5, 0.999) as
pix2pix, MM-GAN and Hi-Net use. The network supplies the terms (AdversarialTerms);
this module only optimises them."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from tsfnet.batch import Batch
from tsfnet.devices import autocast
from tsfnet.fusion.adversarial import AdversarialNetwork
from tsfnet.registry import register
from tsfnet.training.stages import Stage, adam

BETAS = (0.5, 0.999)


def least_squares(scores: torch.Tensor, label: torch.Tensor | float, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean of (D(x) − label)² over score maps; weight and label are (B, maps)."""
    if not isinstance(label, torch.Tensor):
        label = torch.full_like(weight, label)
    spatial = (1,) * (scores.dim() - 2)
    error = (scores.float() - label.view(*label.shape, *spatial)) ** 2
    per_map = error.flatten(2).mean(dim=2)
    return (per_map * weight).sum() / weight.sum().clamp(min=1)


class AdversarialStage(Stage):
    uses_criterion = False  # the network weighs its own reconstruction terms
    defaults: ClassVar[dict] = {"steps": 20000, "lr": 2e-4, "schedule": "constant"}  # the papers' Adam 2e-4

    def optimizers(
        self, model: AdversarialNetwork, lr: float, weighting_lr: float | None = None
    ) -> dict[str, torch.optim.Optimizer]:
        """`weighting_lr` has nothing to act on: the GAN baselines have no task weighting."""
        self.prepare(model)  # trains every parameter
        return {
            "generator": adam(model.generator_parameters(), lr, betas=BETAS),
            "discriminator": adam(model.discriminator_parameters(), lr, betas=BETAS),
        }

    def step(
        self,
        model: nn.Module,
        batch: Batch,
        criterion: nn.Module | None,
        optimizers: dict[str, torch.optim.Optimizer],
        progress: float,
    ) -> torch.Tensor:
        network = model.module if hasattr(model, "module") else model
        generator, discriminator = optimizers["generator"], optimizers["discriminator"]
        with autocast(batch.images.device, self.precision):
            terms = model(batch, progress, phase="generate")
            real = model(terms.real, terms.groups, phase="discriminate")
            fake = model(terms.fake.detach(), terms.groups, phase="discriminate")
            d_loss = 0.5 * (
                least_squares(real, 1.0, terms.weight) + least_squares(fake, terms.fake_label, terms.weight)
            )
        discriminator.zero_grad(set_to_none=True)
        d_loss.backward()
        discriminator.step()
        with autocast(batch.images.device, self.precision):
            judged = model(terms.fake, terms.groups, phase="discriminate")
            g_loss = network.gan_weight * least_squares(judged, 1.0, terms.weight) + terms.reconstruction
        generator.zero_grad(set_to_none=True)
        g_loss.backward()
        generator.step()
        return g_loss.detach()


@register("stage", "mmgan")
class MMGANStage(AdversarialStage):
    """MM-GAN's own stage."""


@register("stage", "hinet")
class HiNetStage(AdversarialStage):
    """Hi-Net's own stage."""


@register("stage", "pix2pix")
class Pix2PixStage(AdversarialStage):
    sampling = "pairs"
