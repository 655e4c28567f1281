"""Training stages (registered as `stage` plugins).

`pretrain` is Seq2Seq's stage 1: E and G one-to-one. `finetune` is TSF's stage 2:
E frozen, fusion and G trained many-to-one on both G(f̂) and G(f̂ + f_A). `joint`
trains a whole network many-to-one from scratch (the early-fusion ablation).
`segment` trains E, fusion and the segmentation head on tumour labels. A stage says
how tasks are sampled, what is trained with which optimizers, what one step does,
what it starts from, which tasks validate it, whether it keeps a best checkpoint and
its default budget; the runner owns everything else and never asks a stage's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tsfnet.batch import Batch, slices_like
from tsfnet.devices import autocast
from tsfnet.errors import TsfnetError
from tsfnet.fusion.base import Network
from tsfnet.registry import register
from tsfnet.tasks import all_tasks
from tsfnet.training.checkpoint import load_checkpoint, stage_checkpoint

Task = tuple[tuple[int, ...], int]
# The CPU only. On CUDA (torch 2.11, an H100) the fused kernel turned the first layer's weights NaN
# at step 15 of bf16 training from finite gradients, where CUDA's default multi-tensor Adam trained
# on (benchmarks/results/gpu_check_2026-11-27.md).
FUSED_ADAM_DEVICES = ("cpu",)


def adam(params, lr: float, **options) -> torch.optim.Adam:
    """Adam, fused into one kernel on the CPU: the HyperConv bases make the paper network
    136 M parameters, and the per-tensor update took a fifth of a CPU step. Elsewhere the
    device's default (on CUDA, one multi-tensor kernel per operation). `params`: parameters
    or parameter groups."""
    params = list(params)
    tensors = [p for item in params for p in (item["params"] if isinstance(item, dict) else [item])]
    fused = bool(tensors) and all(p.device.type in FUSED_ADAM_DEVICES for p in tensors)
    return torch.optim.Adam(params, lr=lr, fused=fused or None, **options)


def rate_groups(model: nn.Module, trained: list[nn.Parameter], weighting_lr: float | None) -> list:
    """`trained` as Adam parameter groups: those of modules marked `lr_group = "weighting"`
    (the task weightings ω) at `weighting_lr`, the rest at the stage's rate. Adam moves a
    parameter by about its rate each step, so at 1e-4 a short CPU budget leaves ω where it was
    initialised (docs/fidelity.md, Task-specific weighted average ω)."""
    marked = {id(p) for m in model.modules() if getattr(m, "lr_group", None) == "weighting" for p in m.parameters()}
    weighting = [p for p in trained if id(p) in marked]
    if weighting_lr is None or not weighting:
        return trained
    return [{"params": [p for p in trained if id(p) not in marked]}, {"params": weighting, "lr": weighting_lr}]


class Stage:
    name = ""  # set by its registration
    sampling = "many_to_one"  # a function of tsfnet.tasks.SAMPLERS: how a task is drawn
    needs_labels = False
    uses_criterion = True  # the runner's reconstruction + perceptual loss
    keeps_best = True  # whether checkpoint_best.pt follows this stage's validation score
    trains: tuple[str, ...] | None = None  # parameter groups it trains (Network.parameter_groups); None: all
    # training.<name> when the plans have no such section: steps, lr, schedule (constant or
    # poly), optionally batch_size. The planner writes every registered stage's defaults.
    defaults: ClassVar[dict] = {}

    def __init__(self, precision: str = "fp32") -> None:
        self.precision = precision  # autocast: the runner's resolved --precision

    def initial_weights(self, model: Network, folder: Path, fusion: str) -> None:
        """Before a fresh (not resumed) start: load what the stage starts from, if anything.
        `folder` is the model folder; `stage_checkpoint(folder, name)` is where stage `name` ended."""

    def validation_tasks(self, available: list[int]) -> list[Task]:
        """The (sources, target) tasks validation scores on a case that has `available`."""
        return all_tasks(available)

    def prepare(self, model: Network) -> list[nn.Parameter]:
        """Freeze what this stage does not train; return what it does."""
        if self.trains is None:
            for p in model.parameters():
                p.requires_grad_(True)
            return list(model.parameters())
        groups = model.parameter_groups()
        missing = [g for g in self.trains if g not in groups]
        if missing:
            raise TsfnetError(
                f"stage '{self.name}' trains {', '.join(missing)}, which {type(model).__name__} does not declare "
                "(Network.parameter_groups)"
            )
        for p in model.parameters():
            p.requires_grad_(False)
        trained = [p for g in self.trains for p in groups[g]]
        for p in trained:
            p.requires_grad_(True)
        return trained

    def optimizers(
        self, model: Network, lr: float, weighting_lr: float | None = None
    ) -> dict[str, torch.optim.Optimizer]:
        return {"model": adam(rate_groups(model, self.prepare(model), weighting_lr), lr)}

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


@register("stage", "pretrain")
class PretrainStage(Stage):
    """E and G one-to-one (the network's `one_to_one` phase)."""

    sampling = "one_to_one"
    trains = ("encoder", "head")
    keeps_best = False  # the best model is a finished pipeline, not stage 1
    defaults: ClassVar[dict] = {"steps": 20000, "lr": 2e-4, "schedule": "constant"}

    def validation_tasks(self, available: list[int]) -> list[Task]:
        return [((s,), t) for s in available for t in available if s != t] or [((a,), a) for a in available]

    def loss(self, model: nn.Module, batch: Batch, criterion: nn.Module) -> torch.Tensor:
        source = batch.source_mask.argmax(dim=1)
        images = batch.images[torch.arange(len(source), device=source.device), source]  # (B, Cin, *S)
        output = model(images, batch.task_target, phase="one_to_one")
        loss = criterion(output, batch.reference_for(output))
        source_code = source[:1] if batch.shared_task else source  # the source as a target
        source_slices = slices_like(images, output)
        if getattr(criterion, "source_reconstruction", False):  # the authors' G(E(x_s)|s) vs x_s
            loss = loss + criterion(model(images, source_code, phase="one_to_one"), source_slices)
        cycle_weight = getattr(criterion, "cycle_weight", 0.0)
        if cycle_weight:  # and their cycle: G(E(G(E(x_s)|t))|s) vs x_s
            if output.shape[1] != images.shape[1]:
                raise TsfnetError(
                    "training.loss.cycle_weight feeds G's output back into E: G must predict every input slice "
                    "(network.predict_context: true, or context_slices 1)"
                )
            back = model(output, source_code, phase="one_to_one")
            loss = loss + cycle_weight * criterion.reconstruction(back, source_slices)
        return loss


class ManyToOneStage(Stage):
    """The synthesis of a task's target from its sources: on G(f̂), and on G(f̂ + f_A) where
    the fusion adds an attention residual."""

    def loss(self, model: nn.Module, batch: Batch, criterion: nn.Module) -> torch.Tensor:
        out = model(batch.images, batch.source_mask, batch.task_target, sources=batch.shared_sources)
        reference = batch.reference_for(out.output)
        loss = criterion(out.output, reference)
        if out.base is not None:
            loss = loss + criterion(out.base, reference)
        if getattr(criterion, "source_reconstruction", False):
            loss = loss + self.source_term(model, batch, criterion)
        return loss

    @staticmethod
    def source_term(model: nn.Module, batch: Batch, criterion: nn.Module) -> torch.Tensor:
        """The authors' third stage-2 term: the same sources decoded to one of them (a random
        one), through G(f̂) or G(f̂ + f_A) with probability 1/2 each (the attention skipped
        at random), so the fusion also learns to keep what a source already shows."""
        if batch.shared_sources is not None:  # one source for the whole batch, drawn on the host
            pick = batch.shared_sources[int(torch.randint(len(batch.shared_sources), ()))]
            target = torch.full((1,), pick, dtype=torch.long, device=batch.images.device)
            chosen = target.expand(len(batch.images))
        else:
            chosen = torch.multinomial(batch.source_mask, 1).squeeze(1)
            target = chosen
        out = model(batch.images, batch.source_mask, target, sources=batch.shared_sources)
        skip_attention = out.base is not None and bool(torch.rand(()) < 0.5)
        synthesis = out.base if skip_attention else out.output
        source = batch.images[torch.arange(len(chosen), device=chosen.device), chosen]  # (B, Cin, *S)
        return criterion(synthesis, slices_like(source, synthesis))


@register("stage", "finetune")
class FinetuneStage(ManyToOneStage):
    """Starts from pretrain's E and G; trains the fusion and G, E frozen."""

    trains = ("fusion", "head")
    defaults: ClassVar[dict] = {"steps": 10000, "lr": 1e-4, "schedule": "poly"}

    def initial_weights(self, model: Network, folder: Path, fusion: str) -> None:
        pretrained = stage_checkpoint(folder, "pretrain")
        if not pretrained.is_file():
            raise TsfnetError(f"{pretrained}: stage 1 result missing; run --stage pretrain (or all) first")
        weights = load_checkpoint(pretrained, fusion)["model"]
        encoder_and_head = {k: v for k, v in weights.items() if not k.startswith("fusion.")}
        model.load_state_dict(encoder_and_head, strict=False)


@register("stage", "joint")
class JointStage(ManyToOneStage):
    """The whole network many-to-one from scratch, at stage 1's budget and rate (seq2seq-early)."""

    defaults: ClassVar[dict] = dict(PretrainStage.defaults)


def soft_dice_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    probabilities = logits.softmax(dim=1)
    onehot = F.one_hot(label, logits.shape[1]).movedim(-1, 1).to(probabilities.dtype)
    dims = tuple(range(2, logits.dim()))
    intersection = (probabilities * onehot).sum(dims)
    total = probabilities.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * intersection + 1) / (total + 1))[:, 1:].mean()


@register("stage", "segment")
class SegmentStage(Stage):
    needs_labels = True
    defaults: ClassVar[dict] = {"steps": 10000, "lr": 1e-4, "schedule": "poly"}

    def loss(self, model: nn.Module, batch: Batch, criterion: nn.Module) -> torch.Tensor:
        out = model(batch.images, batch.source_mask, batch.task_target, sources=batch.shared_sources)
        assert batch.label is not None
        loss = F.cross_entropy(out.output, batch.label) + soft_dice_loss(out.output, batch.label)
        if out.base is not None:
            loss = loss + F.cross_entropy(out.base, batch.label) + soft_dice_loss(out.base, batch.label)
        return loss
