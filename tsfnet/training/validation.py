"""Validation on fixed tasks: every task the stage trains, on the validation cases."""

from __future__ import annotations

import numpy as np
import torch

from tsfnet.evaluation.metrics import brats_dice, psnr, ssim
from tsfnet.inference.engine import predict_task
from tsfnet.model import FusionModel
from tsfnet.tasks import all_tasks
from tsfnet.training.data import CaseStore

MAX_SLICES = 16


def stage_tasks(stage: str, available: list[int]) -> list[tuple[tuple[int, ...], int]]:
    if stage == "pretrain":
        return [((s,), t) for s in available for t in available if s != t] or [((a,), a) for a in available]
    return all_tasks(available)


def evaluation_slices(mask: np.ndarray, limit: int = MAX_SLICES) -> list[int]:
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
    model: FusionModel,
    store: CaseStore,
    case_ids: list[str],
    stage: str,
    device: torch.device,
    context: int = 1,
    patch_size: list[int] | None = None,
    segmentation: bool = False,
) -> dict[str, float]:
    model.eval()
    scores: dict[str, list[float]] = {}
    for case_id in case_ids:
        available = store.available[case_id]
        images = {c: np.asarray(store.image(case_id, c)) for c in available}
        mask = np.asarray(store.array(case_id, "mask")).astype(bool)
        if model.dims == 3 and patch_size is not None:
            window = evaluation_window(mask, patch_size)
            images, mask = {c: v[window] for c, v in images.items()}, mask[window]
        slices = evaluation_slices(mask) if model.dims == 2 else None
        if segmentation:
            scores.setdefault("dice", []).extend(_segmentation_scores(model, store, case_id, images, available, device))
            continue
        for sources, target in stage_tasks(stage, available):
            if target not in images:
                continue
            prediction = predict_task(model, images, sources, target, device, context, 16, patch_size, slices)
            index = np.s_[:, :, slices] if slices is not None else np.s_[...]
            region = mask[index]
            scores.setdefault("psnr", []).append(psnr(prediction.synthesis[index], images[target][index], region))
            scores.setdefault("ssim", []).append(ssim(prediction.synthesis[index], images[target][index], region))
    model.train()
    return {k: float(np.mean(v)) for k, v in scores.items()}


def _segmentation_scores(model, store, case_id, images, available, device) -> list[float]:
    label = store.array(case_id, "label")
    if label is None:
        return []
    label = np.asarray(label)
    x = torch.from_numpy(np.stack([images.get(c, np.zeros_like(label, np.float32)) for c in range(model.n_sequences)]))
    x = x.permute(3, 0, 1, 2).unsqueeze(2) if model.dims == 2 else x[None, :, None]
    mask = torch.zeros(x.shape[0], model.n_sequences)
    mask[:, available] = 1
    with torch.no_grad():
        logits = model(x.to(device), mask.to(device), torch.zeros(x.shape[0], dtype=torch.long, device=device))
    predicted = logits.output.argmax(1).cpu().numpy()
    predicted = np.moveaxis(predicted, 0, -1) if model.dims == 2 else predicted[0]
    return [float(np.mean(list(brats_dice(predicted, label).values())))]
