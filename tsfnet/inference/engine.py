"""Run one task on one preprocessed volume: slice-wise for 2D models, sliding window
with Gaussian weighting for 3D models."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from tsfnet.devices import autocast
from tsfnet.model import FusionModel, ModelOutput


@dataclass
class TaskPrediction:
    synthesis: np.ndarray  # plan grid (X, Y, Z)
    tsem: np.ndarray | None
    weights: np.ndarray | None  # (N,) averaged over slices / windows


def _inputs(
    images: dict[int, np.ndarray],
    sources: tuple[int, ...],
    n: int,
    context: int,
    window: tuple[slice, ...],
    slices: list[int] | None,
) -> torch.Tensor:
    """(B, N, Cin, *S): B slices (2D) or one window (3D); non-sources are zeros."""
    if slices is not None:
        shape = images[sources[0]].shape
        out = np.zeros((len(slices), n, context, shape[0], shape[1]), dtype=np.float32)
        for i, z in enumerate(slices):
            zs = np.clip(np.arange(z - context // 2, z + context // 2 + 1), 0, shape[2] - 1)
            for s in sources:
                out[i, s] = np.moveaxis(images[s][:, :, zs], -1, 0)
        return torch.from_numpy(out)
    patch = [w.stop - w.start for w in window]
    out = np.zeros((1, n, 1, *patch), dtype=np.float32)
    for s in sources:
        out[0, s, 0] = images[s][window]
    return torch.from_numpy(out)


def _run(
    model: FusionModel, x: torch.Tensor, sources: tuple[int, ...], target: int, device: torch.device
) -> ModelOutput:
    batch = x.shape[0]
    mask = torch.zeros(batch, model.n_sequences)
    mask[:, list(sources)] = 1
    with torch.no_grad(), autocast(device):
        return model(x.to(device), mask.to(device), torch.full((batch,), target, dtype=torch.long, device=device))


def gaussian_importance(patch: list[int], sigma_scale: float = 0.125) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(p) - (p - 1) / 2 for p in patch], indexing="ij")
    weight = np.exp(-sum(g**2 / (2 * (p * sigma_scale) ** 2) for g, p in zip(grids, patch, strict=True)))
    return (weight / weight.max()).clip(1e-3).astype(np.float32)


def window_starts(size: int, patch: int, step_fraction: float = 0.5) -> list[int]:
    if size <= patch:
        return [0]
    count = int(np.ceil((size - patch) / (patch * step_fraction))) + 1
    return sorted({round(v) for v in np.linspace(0, size - patch, count)})


def predict_task(
    model: FusionModel,
    images: dict[int, np.ndarray],
    sources: tuple[int, ...],
    target: int,
    device: torch.device,
    context: int = 1,
    batch_size: int = 16,
    patch_size: list[int] | None = None,
    slices: list[int] | None = None,
) -> TaskPrediction:
    """Synthesise `target` from `sources` on the plan grid; `slices` limits a 2D run."""
    shape = images[sources[0]].shape
    n = model.n_sequences
    synthesis = np.full(shape, -1.0, dtype=np.float32)
    tsem: np.ndarray | None = None
    weight_sum, weight_count = np.zeros(n), 0
    if model.dims == 2:
        todo = list(range(shape[2])) if slices is None else list(slices)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            out = _run(model, _inputs(images, sources, n, context, (), chunk), sources, target, device)
            synthesis[:, :, chunk] = out.output.float()[:, 0].permute(1, 2, 0).cpu().numpy()
            if out.tsem is not None:
                tsem = np.zeros(shape, dtype=np.float32) if tsem is None else tsem
                tsem[:, :, chunk] = out.tsem.float()[:, 0].permute(1, 2, 0).cpu().numpy()
            if out.weights is not None:
                weight_sum += out.weights.float().sum(0).cpu().numpy()
                weight_count += len(chunk)
    else:
        assert patch_size is not None
        patch = [min(p, s) for p, s in zip(patch_size, shape, strict=True)]
        importance = gaussian_importance(patch)
        accumulated, tsem_acc = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        norm = np.zeros(shape, np.float32)
        for starts in itertools.product(*[window_starts(s, p) for s, p in zip(shape, patch, strict=True)]):
            window = tuple(slice(st, st + p) for st, p in zip(starts, patch, strict=True))
            out = _run(model, _inputs(images, sources, n, 1, window, None), sources, target, device)
            accumulated[window] += out.output.float()[0, 0].cpu().numpy() * importance
            if out.tsem is not None:
                tsem_acc[window] += out.tsem.float()[0, 0].cpu().numpy() * importance
                tsem = tsem_acc
            norm[window] += importance
            if out.weights is not None:
                weight_sum += out.weights.float()[0].cpu().numpy()
                weight_count += 1
        synthesis = accumulated / norm
        tsem = None if tsem is None else tsem / norm
    weights = weight_sum / weight_count if weight_count else None
    return TaskPrediction(synthesis, tsem, weights)
