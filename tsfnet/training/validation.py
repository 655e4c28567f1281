"""Validation on fixed tasks: every task the stage trains, on the validation cases."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from tsfnet.devices import inference_batch_size
from tsfnet.evaluation.metrics import brats_dice, psnr, ssim
from tsfnet.inference.engine import predict_targets
from tsfnet.model import Network
from tsfnet.planning.plans import VAL_SLICES
from tsfnet.training.data import CaseStore


def evaluation_slices(mask: np.ndarray, limit: int = VAL_SLICES) -> list[int]:
    brain = np.flatnonzero(mask.any(axis=(0, 1)))
    if len(brain) <= limit:
        return brain.tolist()
    return brain[np.linspace(0, len(brain) - 1, limit).round().astype(int)].tolist()


def evaluation_window(mask: np.ndarray, patch: list[int]) -> tuple[slice, ...]:
    """One patch centred on the brain: 3D validation's counterpart of the slice subset."""
    centre = np.argwhere(mask).mean(axis=0).round().astype(int) if mask.any() else np.array(mask.shape) // 2
    starts = [int(np.clip(c - p // 2, 0, max(s - p, 0))) for c, p, s in zip(centre, patch, mask.shape, strict=True)]
    return tuple(slice(st, st + p) for st, p in zip(starts, patch, strict=True))


def validate(
    model: Network,
    store: CaseStore,
    case_ids: list[str],
    tasks: Callable[[list[int]], list[tuple[tuple[int, ...], int]]],
    device: torch.device,
    context: int = 1,
    patch_size: list[int] | None = None,
    segmentation: bool = False,
    labels: dict[str, int] | None = None,
    precision: str = "fp32",
    slices_per_case: int = VAL_SLICES,
) -> dict[str, float]:
    """Masked PSNR/SSIM over `tasks(available)` (synthesis; a stage's `validation_tasks`) or mean
    BraTS Dice (segmentation); a 2D model on `slices_per_case` axial slices spread over the brain."""
    model.eval()
    scores: dict[str, list[float]] = {}
    for case_id in case_ids:
        available = store.available[case_id]
        images = {c: np.asarray(store.image(case_id, c)) for c in available}
        mask = np.asarray(store.array(case_id, "mask")).astype(bool)
        label = store.array(case_id, "label")
        label = None if label is None else np.asarray(label)
        if model.dims == 3 and patch_size is not None:
            window = evaluation_window(mask, patch_size)
            images, mask = {c: v[window] for c, v in images.items()}, mask[window]
            label = None if label is None else label[window]
        slices = evaluation_slices(mask, slices_per_case) if model.dims == 2 else None
        run = partial(
            predict_targets,
            model,
            images,
            device=device,
            context=context,
            batch_size=inference_batch_size(device),  # as predict (benchmarks/results/validation_batch_2026-11-27.md)
            patch_size=patch_size,
            slices=slices,
            precision=precision,
        )
        index = np.s_[:, :, slices] if slices is not None else np.s_[...]  # predictions hold just these
        if segmentation:
            if label is not None:
                logits = run(tuple(available), [0])
                dice = brats_dice(logits[0].output.argmax(0), label[index], labels)
                scores.setdefault("dice", []).append(float(np.mean(list(dice.values()))))
            continue
        groups: dict[tuple[int, ...], list[int]] = {}
        for sources, target in tasks(available):
            groups.setdefault(sources, []).append(target)
        region = mask[index]
        for sources, targets in groups.items():
            predictions = run(sources, targets)
            for target, prediction in predictions.items():
                synthesis, reference = prediction.synthesis, images[target][index]
                scores.setdefault("psnr", []).append(psnr(synthesis, reference, region))
                scores.setdefault("ssim", []).append(ssim(synthesis, reference, region))
    model.train()
    return {k: float(np.mean(v)) for k, v in scores.items()}
