"""Training stages (registered as `trainer` plugins).

`pretrain` is Seq2Seq's stage 1: E and G one-to-one. `finetune` is TSF's stage 2:
E frozen, fusion and G trained many-to-one on both G(f̂) and G(f̂ + f_A).
`segment` trains E, fusion and the segmentation head on tumour labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tsfnet.model import FusionModel
from tsfnet.registry import register
from tsfnet.training.batch import Batch


class Stage:
    name = ""
    many_to_one = True  # how tasks are sampled
    needs_labels = False

    def prepare(self, model: FusionModel) -> list[nn.Parameter]:
        """Freeze what this stage does not train; return what it does."""
        for p in model.parameters():
            p.requires_grad_(True)
        return list(model.parameters())

    def loss(self, model: nn.Module, batch: Batch, criterion: nn.Module) -> torch.Tensor:
        raise NotImplementedError


@register("trainer", "pretrain")
class PretrainStage(Stage):
    name = "pretrain"
    many_to_one = False

    def prepare(self, model: FusionModel) -> list[nn.Parameter]:
        for p in model.parameters():
            p.requires_grad_(False)
        trained = [*model.encoder.parameters(), *model.head.parameters()]
        for p in trained:
            p.requires_grad_(True)
        return trained

    def loss(self, model: nn.Module, batch: Batch, criterion: nn.Module) -> torch.Tensor:
        source = batch.source_mask.argmax(dim=1)
        images = batch.images[torch.arange(len(source), device=source.device), source]
        return criterion(model(images, batch.target, one_to_one=True), batch.target_image)


@register("trainer", "finetune")
class FinetuneStage(Stage):
    name = "finetune"

    def prepare(self, model: FusionModel) -> list[nn.Parameter]:
        for p in model.parameters():
            p.requires_grad_(True)
        for p in model.encoder.parameters():
            p.requires_grad_(False)
        return [*model.fusion.parameters(), *model.head.parameters()]

    def loss(self, model: nn.Module, batch: Batch, criterion: nn.Module) -> torch.Tensor:
        out = model(batch.images, batch.source_mask, batch.target)
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
        out = model(batch.images, batch.source_mask, batch.target)
        assert batch.label is not None
        loss = F.cross_entropy(out.output, batch.label) + soft_dice_loss(out.output, batch.label)
        if out.base is not None:
            loss = loss + F.cross_entropy(out.base, batch.label) + soft_dice_loss(out.base, batch.label)
        return loss
