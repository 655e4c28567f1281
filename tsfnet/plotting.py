"""Figures: slice montages for previews, docs and explanations (matplotlib, no display)."""

from __future__ import annotations

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


def save_montage(
    path: Path,
    panels: list[tuple[str, np.ndarray]],
    overlay: dict[int, np.ndarray] | None = None,
    overwrite: bool = True,
    cmap: dict[int, str] | None = None,
    value_range: dict[int, tuple[float, float]] | None = None,
) -> Path:
    """One row of 2D panels (already sliced); `overlay[i]` is drawn in colour over panel i."""
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0), squeeze=False)
    for i, (ax, (title, image)) in enumerate(zip(axes[0], panels, strict=True)):
        lo, hi = np.percentile(image, [0.5, 99.5]) if image.any() else (0.0, 1.0)
        if value_range is not None and i in value_range:
            lo, hi = value_range[i]
        ax.imshow(image, cmap=(cmap or {}).get(i, "gray"), vmin=lo, vmax=max(hi, lo + 1e-6))
        if overlay is not None and i in overlay:
            masked = np.ma.masked_where(overlay[i] <= 0, overlay[i])
            ax.imshow(masked, cmap="autumn", alpha=0.6, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(Path(path), overwrite) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)
