"""Intensity normalisation schemes: each maps a volume into [-1, 1], background -1.

A scheme is a function `(image, brain_mask, **params) -> (normalised, used)` where
`used` records the clip range, so outputs can be mapped back to intensities.
Register new ones with `@register("normalization", "name")`.
"""

from __future__ import annotations

import numpy as np

from tsfnet.data.dataset import foreground_values
from tsfnet.registry import register, registry

BACKGROUND = -1.0


def scale_to_unit(image: np.ndarray, mask: np.ndarray, lo: float, hi: float) -> np.ndarray:
    span = max(hi - lo, 1e-8)
    scaled = np.clip((image - lo) / span, 0.0, 1.0) * 2.0 - 1.0
    return np.where(mask, scaled, BACKGROUND).astype(np.float32)


@register("normalization", "percentile")
def percentile_clip(
    image: np.ndarray, mask: np.ndarray, lower: float = 0.5, upper: float = 99.5
) -> tuple[np.ndarray, dict]:
    """Clip to this case's foreground percentiles (default 0.5 / 99.5)."""
    foreground = foreground_values(image, mask)
    lo, hi = (float(v) for v in np.percentile(foreground, [lower, upper])) if foreground.size else (0.0, 1.0)
    return scale_to_unit(image, mask, lo, hi), {"lo": lo, "hi": hi}


@register("normalization", "p99x2")
def twice_p99(image: np.ndarray, mask: np.ndarray, percentile: float = 99.0) -> tuple[np.ndarray, dict]:
    """The TSF authors' practice: clip to [0, 2 * P99 of the volume]."""
    foreground = foreground_values(image, mask)
    hi = 2.0 * float(np.percentile(foreground, percentile)) if foreground.size else 1.0
    return scale_to_unit(image, mask, 0.0, hi), {"lo": 0.0, "hi": hi}


def normalize(image: np.ndarray, mask: np.ndarray, settings: dict) -> tuple[np.ndarray, dict]:
    params = {k: v for k, v in settings.items() if k != "scheme"}
    return registry.get("normalization", settings["scheme"])(image, mask, **params)


def denormalize(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """[-1, 1] back to [lo, hi] (used for `--intensity reference`)."""
    return ((np.asarray(image, dtype=np.float32) + 1.0) / 2.0 * (hi - lo) + lo).astype(np.float32)
