"""Figures: slice montages for previews, docs and explanations (matplotlib, no display)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from tsfnet.atomic import atomic_path


def mid_axial(volume: np.ndarray, index: int | None = None) -> np.ndarray:
    """The axial slice (last axis) shown with anterior up, as radiologists expect."""
    z = volume.shape[2] // 2 if index is None else index
    return np.rot90(volume[:, :, z])


@dataclass(frozen=True)
class HeatOverlay:
    """A map drawn in colour over a grey panel where it exceeds `low`, saturating at `high`,
    with a colour bar: a percentile-scaled map points at a region instead of painting the
    whole brain."""

    values: np.ndarray
    low: float
    high: float
    label: str


def heat_range(volume: np.ndarray, inside: np.ndarray) -> tuple[float, float]:
    """The 90th and 99.5th percentiles of the volume's values `inside` the brain."""
    values = volume[inside] if inside.any() else volume.ravel()
    low, high = (float(v) for v in np.percentile(values, [90.0, 99.5]))
    return low, max(high, low + 1e-6)


def heat_overlay(volume: np.ndarray, inside: np.ndarray, index: int | None, label: str) -> HeatOverlay:
    """Shown from the 90th to the 99.5th percentile of the volume's values `inside` the brain."""
    return HeatOverlay(mid_axial(volume, index), *heat_range(volume, inside), label)


def centre_slice(region: np.ndarray) -> int | None:
    """The axial slice through the region's centre of mass (None for an empty region), from
    the per-slice voxel counts (listing every voxel's index took half a second at 1 mm)."""
    counts = np.count_nonzero(region, axis=(0, 1))
    total = int(counts.sum())
    return int(np.round(int(counts @ np.arange(len(counts))) / total)) if total else None


def hottest_slice(volume: np.ndarray, inside: np.ndarray) -> int | None:
    """The axial slice holding most of the map above its brain P90 (None for a flat map): the
    TSEM's own pointer to where the synthesis is least certain. (On the demo's model it is not
    the lesion: under a tenth of the voxels above P90 lie in the tumour, often at the brain's
    top or bottom, where little brain meets the border.)"""
    low, _high = heat_range(volume, inside)
    above = np.where(inside & (volume > low), volume, 0.0).sum(axis=(0, 1))
    return int(above.argmax()) if above.any() else None


def save_montage(
    path: Path,
    panels: list[tuple[str, np.ndarray]],
    overlay: dict[int, HeatOverlay] | None = None,
    overwrite: bool = True,
    cmap: dict[int, str] | None = None,
    value_range: dict[int, tuple[float, float]] | None = None,
    columns: int | None = None,
) -> Path:
    """2D panels (already sliced) in rows of `columns` (default: one row); `overlay[i]` is
    drawn as a heat map over panel i."""
    columns = columns or len(panels)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for i, (ax, (title, image)) in enumerate(zip(axes.flat[: len(panels)], panels, strict=True)):
        lo, hi = np.percentile(image, [0.5, 99.5]) if image.any() else (0.0, 1.0)
        if value_range is not None and i in value_range:
            lo, hi = value_range[i]
        ax.imshow(image, cmap=(cmap or {}).get(i, "gray"), vmin=lo, vmax=max(hi, lo + 1e-6))
        if overlay is not None and i in overlay:
            heat = overlay[i]
            shown = ax.imshow(
                np.ma.masked_where(heat.values <= heat.low, heat.values),
                cmap="inferno",
                vmin=heat.low,
                vmax=heat.high,
                alpha=0.85,
                interpolation="nearest",
            )
            bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
            bar.set_label(heat.label, fontsize=8)
            bar.ax.tick_params(labelsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])  # hidden anyway, but tight_layout measured their labels: 0.6 s a preview
        ax.set_yticks([])
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(Path(path), overwrite) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)
