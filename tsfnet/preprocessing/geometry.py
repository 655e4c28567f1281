"""Crop / resample / pad steps and their exact inverses."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def crop_to_bbox(volume: np.ndarray, bbox: list[list[int]]) -> np.ndarray:
    return volume[tuple(slice(lo, hi) for lo, hi in bbox)]


def paste_in_bbox(region: np.ndarray, bbox: list[list[int]], shape: tuple[int, ...], fill: float) -> np.ndarray:
    out = np.full(shape, fill, dtype=region.dtype)
    out[tuple(slice(lo, hi) for lo, hi in bbox)] = region
    return out


def resize(volume: np.ndarray, shape: tuple[int, ...], nearest: bool = False) -> np.ndarray:
    """Resample to an exact shape: trilinear for images, nearest for labels and masks."""
    if tuple(volume.shape) == tuple(shape):
        return volume
    tensor = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    if nearest:
        out = F.interpolate(tensor, size=tuple(shape), mode="nearest-exact")
    else:
        out = F.interpolate(tensor, size=tuple(shape), mode="trilinear", align_corners=False)
    return out[0, 0].numpy().astype(volume.dtype)


def resampled_shape(shape: tuple[int, ...], spacing: tuple[float, ...], target: list[float]) -> tuple[int, ...]:
    return tuple(max(1, round(s * sp / t)) for s, sp, t in zip(shape, spacing, target, strict=True))


def centre_offsets(shape: tuple[int, ...], size: list[int]) -> list[int]:
    """Start of a centred window of `size` in `shape`; negative means padding."""
    return [(s - z) // 2 for s, z in zip(shape, size, strict=True)]


def _window(shape: tuple[int, ...], size: list[int], offsets: list[int]) -> tuple[tuple, tuple]:
    src, dst = [], []
    for s, z, o in zip(shape, size, offsets, strict=True):
        lo, hi = max(o, 0), min(o + z, s)
        src.append(slice(lo, hi))
        dst.append(slice(lo - o, hi - o))
    return tuple(src), tuple(dst)


def crop_or_pad(volume: np.ndarray, size: list[int], offsets: list[int], fill: float) -> np.ndarray:
    src, dst = _window(volume.shape, size, offsets)
    out = np.full(tuple(size), fill, dtype=volume.dtype)
    out[dst] = volume[src]
    return out


def uncrop_or_pad(window: np.ndarray, shape: tuple[int, ...], offsets: list[int], fill: float) -> np.ndarray:
    src, dst = _window(shape, list(window.shape), offsets)
    out = np.full(tuple(shape), fill, dtype=window.dtype)
    out[src] = window[dst]
    return out
