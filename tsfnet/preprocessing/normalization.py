"""Intensity normalisation schemes: each maps a volume into [-1, 1], background -1.

A scheme is a function `(image, brain_mask, **params) -> (normalised, used)` where
`used` records the clip range, so outputs can be mapped back to intensities.
Register new ones with `@register("normalization", "name")`. A scheme that declares a
`volume` parameter also receives the whole, uncropped image its statistics may need
(the pipeline normalises a crop around the brain).
"""

from __future__ import annotations

import inspect

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


@register("normalization", "median_scaled")
def median_scaled(
    image: np.ndarray, mask: np.ndarray, lower: float = 0.0, upper: float = 2.0
) -> tuple[np.ndarray, dict]:
    """Clip to [lower, upper] times this case's brain median. The planner sets the ratios per
    channel from the fingerprint (the typical case's 0.5 / 99.5 percentiles over its median),
    so a typical case looks as under `percentile`; but a bright lesion larger than 0.5 % of
    the brain (an enhancing tumour in T1Gd) cannot move the scale, which `percentile` lets it
    halve, leaving a synthesis no way to know the target's scale."""
    foreground = foreground_values(image, mask)
    median = float(np.median(foreground)) if foreground.size else 0.0
    lo, hi = (lower * median, upper * median) if median > 0 else (0.0, 1.0)
    return scale_to_unit(image, mask, lo, hi), {"lo": lo, "hi": hi}


P99_REGIONS = ("brain", "volume")


@register("normalization", "p99x2")
def twice_p99(
    image: np.ndarray,
    mask: np.ndarray,
    percentile: float = 99.0,
    over: str = "brain",
    volume: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """The TSF authors' practice: clip to [0, 2 * P99] -> [-1, 1].

    `over="brain"` takes the percentile of the brain voxels; `over="volume"` takes it of
    every voxel of the whole image, background zeros included, as the authors' data
    loader does (`volume` is that whole image when `image` is a crop of it); should
    that percentile be background (zero), the brain's is used.
    """
    if over not in P99_REGIONS:
        raise ValueError(f"p99x2: 'over' must be one of {', '.join(P99_REGIONS)}, got {over!r}")
    hi = 0.0
    if over == "volume":
        whole = np.asarray(volume if volume is not None else image)
        hi = 2.0 * float(np.percentile(whole, percentile)) if whole.size else 0.0
    if hi <= 0:  # over="brain", or a brain so small that the volume's percentile is background
        foreground = foreground_values(image, mask)
        hi = 2.0 * float(np.percentile(foreground, percentile)) if foreground.size else 1.0
    return scale_to_unit(image, mask, 0.0, hi), {"lo": 0.0, "hi": hi}


def normalize(
    image: np.ndarray,
    mask: np.ndarray,
    settings: dict,
    volume: np.ndarray | None = None,
    channel: str | None = None,
) -> tuple[np.ndarray, dict]:
    """Apply the scheme `settings["scheme"]`: its parameters, then `settings["channels"][channel]`'s
    over them (per-channel values, as the planner writes for `median_scaled`); `volume` (the
    uncropped image) reaches the schemes that declare a `volume` parameter."""
    params = {k: v for k, v in settings.items() if k not in ("scheme", "channels")}
    params.update(settings.get("channels", {}).get(channel, {}))
    scheme = registry.get("normalization", settings["scheme"])
    if volume is not None and "volume" in inspect.signature(scheme).parameters:
        params["volume"] = volume
    return scheme(image, mask, **params)


def denormalize(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """[-1, 1] back to [lo, hi] (used for `--intensity reference`)."""
    return ((np.asarray(image, dtype=np.float32) + 1.0) / 2.0 * (hi - lo) + lo).astype(np.float32)
