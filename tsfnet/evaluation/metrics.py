"""Image metrics on [-1, 1] images (data range 2), whole image or inside a mask."""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

DATA_RANGE = 2.0


def psnr(
    prediction: np.ndarray,
    reference: np.ndarray,
    mask: np.ndarray | None = None,
    data_range: float = DATA_RANGE,
) -> float:
    diff = (np.asarray(prediction, np.float64) - np.asarray(reference, np.float64)) ** 2
    mse = float(diff[mask].mean() if mask is not None else diff.mean()) if diff.size else 0.0
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def ssim(
    prediction: np.ndarray,
    reference: np.ndarray,
    mask: np.ndarray | None = None,
    data_range: float = DATA_RANGE,
    per_slice: bool = True,
) -> float:
    """scikit-image SSIM (7-wide uniform window); 2D per axial slice averaged, or 3D.
    With a mask, the SSIM map is averaged inside it (slices without mask voxels skipped)."""
    prediction, reference = np.asarray(prediction, np.float64), np.asarray(reference, np.float64)
    if not per_slice or prediction.ndim == 2:
        _, smap = structural_similarity(prediction, reference, data_range=data_range, full=True)
        return float(smap[mask].mean() if mask is not None else smap.mean())
    values = []
    for z in range(prediction.shape[2]):
        if mask is not None and not mask[:, :, z].any():
            continue
        _, smap = structural_similarity(prediction[:, :, z], reference[:, :, z], data_range=data_range, full=True)
        values.append(smap[mask[:, :, z]].mean() if mask is not None else smap.mean())
    return float(np.mean(values)) if values else float("nan")


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    total = prediction.sum() + reference.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(prediction, reference).sum() / total)


BRATS_LABELS = {"NCR": 1, "ED": 2, "ET": 3}


def brats_dice(prediction: np.ndarray, reference: np.ndarray, labels: dict[str, int] | None = None) -> dict[str, float]:
    """Dice of the whole tumour (NCR+ED+ET), tumour core (NCR+ET) and enhancing tumour (ET),
    with label values from dataset.json (BraTS 2021 uses ET = 4, BraSyn and the phantom 3)."""
    values = {**BRATS_LABELS, **{k: int(v) for k, v in (labels or {}).items() if k in BRATS_LABELS}}
    regions = {"WT": ("NCR", "ED", "ET"), "TC": ("NCR", "ET"), "ET": ("ET",)}
    return {
        name: dice(np.isin(prediction, [values[p] for p in parts]), np.isin(reference, [values[p] for p in parts]))
        for name, parts in regions.items()
    }
