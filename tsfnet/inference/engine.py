"""Run tasks on one preprocessed volume: slice-wise for 2D models (whole slices, or each
slice in Gaussian-weighted windows when the plans say so), sliding window with Gaussian
weighting for 3D models. The sources are encoded once per slice batch or window and
decoded for every requested target."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from tsfnet.devices import autocast
from tsfnet.model import ModelOutput, Network


@dataclass
class TaskPrediction:
    output: np.ndarray  # (C, X, Y, Z) on the plan grid: C = 1 for synthesis, label logits for segmentation
    tsem: np.ndarray | None  # (X, Y, Z)
    weights: np.ndarray | None  # (N,) averaged over slices / windows
    base: np.ndarray | None = None  # (C, X, Y, Z) G(f̂), kept on request: an ensemble's TSEM needs it
    spread: np.ndarray | None = None  # (X, Y, Z) sd of the synthesis over an ensemble's folds

    @property
    def synthesis(self) -> np.ndarray:
        return self.output[0]


class Accumulator:
    """Collects one target's outputs piece by piece (weighted, for overlapping windows)."""

    def __init__(self, shape: tuple[int, ...], n_sequences: int) -> None:
        self.shape = shape
        self.output: np.ndarray | None = None
        self.base: np.ndarray | None = None
        self.tsem: np.ndarray | None = None
        self.norm = np.zeros(shape, np.float32)
        self.weight_sum, self.weight_count = np.zeros(n_sequences), 0

    def add(
        self,
        where: tuple,
        output: np.ndarray,
        tsem: np.ndarray | None,
        weight: np.ndarray,
        omega: np.ndarray | None,
        count: int,
        base: np.ndarray | None = None,
    ) -> None:
        if self.output is None:
            self.output = np.zeros((output.shape[0], *self.shape), np.float32)
        self.output[(slice(None), *where)] += output * weight
        if base is not None:
            self.base = np.zeros_like(self.output) if self.base is None else self.base
            self.base[(slice(None), *where)] += base * weight
        if tsem is not None:
            self.tsem = np.zeros(self.shape, np.float32) if self.tsem is None else self.tsem
            self.tsem[where] += tsem * weight
        self.norm[where] += weight
        if omega is not None:
            self.weight_sum += omega
            self.weight_count += count

    def result(self) -> TaskPrediction:
        assert self.output is not None
        covered = self.norm > 0
        output = np.where(covered, self.output / np.maximum(self.norm, 1e-8), -1.0).astype(np.float32)
        base = None if self.base is None else np.where(covered, self.base / np.maximum(self.norm, 1e-8), -1.0)
        tsem = None if self.tsem is None else (self.tsem / np.maximum(self.norm, 1e-8)).astype(np.float32)
        weights = self.weight_sum / self.weight_count if self.weight_count else None
        return TaskPrediction(output, tsem, weights, None if base is None else base.astype(np.float32))


def slice_inputs(
    images: dict[int, np.ndarray], sources: tuple[int, ...], n: int, context: int, slices: list[int]
) -> torch.Tensor:
    """(B, N, context, X, Y) for B axial slices; non-sources stay zero."""
    shape = images[sources[0]].shape
    out = np.zeros((len(slices), n, context, shape[0], shape[1]), dtype=np.float32)
    for i, z in enumerate(slices):
        zs = np.clip(np.arange(z - context // 2, z + context // 2 + 1), 0, shape[2] - 1)
        for s in sources:
            out[i, s] = np.moveaxis(images[s][:, :, zs], -1, 0)
    return torch.from_numpy(out)


def window_inputs(
    images: dict[int, np.ndarray], sources: tuple[int, ...], n: int, window: tuple[slice, ...]
) -> torch.Tensor:
    out = np.zeros((1, n, 1, *[w.stop - w.start for w in window]), dtype=np.float32)
    for s in sources:
        out[0, s, 0] = images[s][window]
    return torch.from_numpy(out)


def gaussian_importance(patch: list[int], sigma_scale: float = 0.125) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(p) - (p - 1) / 2 for p in patch], indexing="ij")
    weight = np.exp(-sum(g**2 / (2 * (p * sigma_scale) ** 2) for g, p in zip(grids, patch, strict=True)))
    return (weight / weight.max()).clip(1e-3).astype(np.float32)


def window_starts(size: int, patch: int, step_fraction: float = 0.5) -> list[int]:
    if size <= patch:
        return [0]
    count = int(np.ceil((size - patch) / (patch * step_fraction))) + 1
    return sorted({round(v) for v in np.linspace(0, size - patch, count)})


def predict_targets(
    model: Network,
    images: dict[int, np.ndarray],
    sources: tuple[int, ...],
    targets: list[int],
    device: torch.device,
    context: int = 1,
    batch_size: int = 16,
    patch_size: list[int] | None = None,
    slices: list[int] | None = None,
    precision: str = "fp32",
    keep_base: bool = False,
) -> dict[int, TaskPrediction]:
    """Every target from the same sources, on the plan grid; `slices` limits a 2D run to those
    axial slices, which are then the outputs' last axis in that order (validation scores 16
    slices: accumulating whole volumes cost it a tenth of its time); `keep_base` also returns
    G(f̂) (an ensemble's TSEM is taken after averaging)."""
    shape = images[sources[0]].shape
    n = model.n_sequences
    grid = shape if slices is None or model.dims != 2 else (*shape[:2], len(slices))
    results = {t: Accumulator(grid, n) for t in targets}
    pieces = _pieces(images, sources, n, model.dims, context, batch_size, patch_size, slices)
    with torch.inference_mode(), autocast(device, precision):
        for where, x, weight in pieces:
            batch = x.shape[0]
            mask = torch.zeros(batch, n, device=device)
            mask[:, list(sources)] = 1
            features = model.encode(x.to(device), mask, tuple(sources))  # sources known here: no device sync
            for target in targets:
                # One target for the whole batch, said by its shape: dense HyperConvs, no device check.
                out = model.decode(features, mask, torch.full((1,), target, dtype=torch.long, device=device))
                out = centre_output(out, model.output_slices)
                omega = None if out.weights is None else out.weights.float().sum(0).cpu().numpy()
                results[target].add(
                    where,
                    _to_grid(out.output, model.dims),
                    None if out.tsem is None else _to_grid(out.tsem, model.dims)[0],
                    weight,
                    omega,
                    batch,
                    _to_grid(out.base, model.dims) if keep_base and out.base is not None else None,
                )
    return {t: acc.result() for t, acc in results.items()}


def centre_output(out: ModelOutput, slices: int) -> ModelOutput:
    """The centre slice of a head that predicts every context slice (`output_slices`)."""
    if slices == 1:
        return out
    keep = slice(slices // 2, slices // 2 + 1)
    return ModelOutput(out.output[:, keep], None if out.base is None else out.base[:, keep], out.weights)


def _pieces(
    images: dict[int, np.ndarray],
    sources: tuple[int, ...],
    n: int,
    dims: int,
    context: int,
    batch_size: int,
    patch_size: list[int] | None,
    slices: list[int] | None,
) -> Iterator[tuple[tuple, torch.Tensor, np.ndarray | float]]:
    """(where on the grid, model input, blending weight), built one at a time so only one
    slice batch or window of inputs is in memory."""
    shape = images[sources[0]].shape
    if dims == 2:
        todo = list(range(shape[2])) if slices is None else list(slices)
        whole = [((slice(None), slice(None)), 1.0)]
        windows = whole if patch_size is None else [(w, g[..., None]) for w, g in _windows(shape[:2], patch_size)]
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            x = slice_inputs(images, sources, n, context, chunk)
            for (rows, columns), weight in windows:  # the chunk's place among the slices run
                yield (rows, columns, slice(i, i + len(chunk))), x[..., rows, columns], weight
        return
    assert patch_size is not None
    for window, importance in _windows(shape, patch_size):
        yield window, window_inputs(images, sources, n, window), importance


def _windows(shape: tuple[int, ...], patch_size: list[int]) -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
    """Half-overlapping windows covering `shape`, each with its Gaussian blending weight."""
    patch = [min(p, s) for p, s in zip(patch_size, shape, strict=True)]
    importance = gaussian_importance(patch)
    for starts in itertools.product(*[window_starts(s, p) for s, p in zip(shape, patch, strict=True)]):
        yield tuple(slice(st, st + p) for st, p in zip(starts, patch, strict=True)), importance


def _to_grid(tensor: torch.Tensor, dims: int) -> np.ndarray:
    """(B, C, X, Y) slices or their windows -> (C, X, Y, B); (1, C, *patch) window -> (C, *patch)."""
    array = tensor.float().cpu().numpy()
    return np.moveaxis(array, 0, -1) if dims == 2 else array[0]
