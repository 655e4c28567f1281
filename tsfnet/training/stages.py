"""Training stages (registered as `trainer` plugins).

`pretrain` is Seq2Seq's stage 1: E and G one-to-one. `finetune` is TSF's stage 2:
E frozen, fusion and G trained many-to-one on both G(f̂) and G(f̂ + f_A).
`segment` trains E, fusion and the segmentation head on tumour labels. A stage says
how tasks are sampled, what is trained with which optimizers, and what one step does;
the runner owns everything else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tsfnet.devices import autocast
from tsfnet.fusion.base import Network
from tsfnet.registry import register
from tsfnet.training.batch import Batch


class Stage:
    name = ""
    sampling = "many_to_one"  # a function of tsfnet.tasks.SAMPLERS: how a task is drawn
    needs_labels = False
    uses_criterion = True  # the runner's reconstruction + perceptual loss
    precision = "fp32"  # the runner sets it: bf16 on CUDA unless --precision fp32

    def prepare(self, model: Network) -> list[nn.Parameter]:
        """Freeze what this stage does not train; return what it does."""
        for p in model.parameters():
            p.requires_grad_(True)
        return list(model.parameters())

    def optimizers(self, model: Network, lr: float) -> dict[str, torch.optim.Optimizer]:
        return {"model": torch.optim.Adam(self.prepare(model), lr=lr)}

    def loss(self, model: nn.Module, batch: Batch, criterion: nn.Module) -> torch.Tensor:
        raise NotImplementedError

    def step(
        self,
        model: nn.Module,
        batch: Batch,
        criterion: nn.Module | None,
        optimizers: dict[str, torch.optim.Optimizer],
        progress: float,
    ) -> torch.Tensor:
        """One optimisation step; returns the loss to log, still on the device. `progress` is
        step / steps. Nothing here reads the device: the runner checks the loss when it logs."""
        (optimizer,) = optimizers.values()
        with autocast(batch.images.device, self.precision):
            loss = self.loss(model, batch, criterion)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()


@register("trainer", "pretrain")
class PretrainStage(Stage):
    name = "pretrain"
    sampling = "one_to_one"

    def prepare(self, model: Network) -> list[nn.Parameter]:
        for p in model.parameters():
            p.requires_grad_(False)
        trained = [*model.encoder.parameters(), *model.head.parameters()]
        for p in trained:
            p.requires_grad_(True)
        return trained

    def loss(self, model: nn.Module, batch: Batch, criterion: nn.Module) -> torch.Tensor:
        source = batch.source_mask.argmax(dim=1)
        images = batch.images[torch.arange(len(source), device=source.device), source]
        return criterion(model(images, batch.task_target, phase="one_to_one"), batch.target_image)


@register("trainer", "finetune")
class FinetuneStage(Stage):
    name = "finetune"

    def prepare(self, model: Network) -> list[nn.Parameter]:
        for p in model.parameters():
            p.requires_grad_(True)
        for p in model.encoder.parameters():
            p.requires_grad_(False)
        return [*model.fusion.parameters(), *model.head.parameters()]

    def loss(self, model: nn.Module, batch: Batch, criterion: nn.Module) -> torch.Tensor:
        out = model(batch.images, batch.source_mask, batch.task_target)
        loss = criterion(out.output, batch.target_image)
        if out.base is not None:
            loss = loss + criterion(out.base, batch.target_image)
        return loss


def soft_dice_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    probabilities = logits.softmax(dim=1)
    onehot = F.one_hot(label, logits.shape[1]).movedim(-1, 1).to(probabilities.dtype)
    dims = tuple(range(2, logits.dim()))
    intersection = (probabilities * onehot).sum(dims)
    total = probabilities.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * intersection + 1) / (total + 1))[:, 1:].mean()


@register("trainer", "segment")
class SegmentStage(Stage):
    name = "segment"
    needs_labels = True

    def loss(self, model: nn.Module, batch: Batch, criterion: nn.Module) -> torch.Tensor:
        out = model(batch.images, batch.source_mask, batch.task_target)
        assert batch.label is not None
        loss = F.cross_entropy(out.output, batch.label) + soft_dice_loss(out.output, batch.label)
        if out.base is not None:
            loss = loss + F.cross_entropy(out.base, batch.label) + soft_dice_loss(out.base, batch.label)
        return loss
