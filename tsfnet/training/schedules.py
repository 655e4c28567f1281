"""Learning-rate schedules: the factor a stage's rate is multiplied by after s steps."""

from __future__ import annotations

from collections.abc import Callable

SCHEDULES = ("constant", "poly")
POLY_POWER = 0.9


def rate_factor(
    schedule: str, steps: int, lr: float, horizon_steps: int | None = None, min_lr: float = 0.0
) -> Callable[[int], float]:
    """constant: 1. poly: (1 - s / horizon) ** 0.9, the horizon being the stage's steps unless
    given (the authors decay over more epochs than their step budget reaches, so their rate
    ends near 0.85 of the start), never under `min_lr` (theirs: 1e-6)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if schedule == "constant":
        return lambda step: 1.0
    horizon = max(horizon_steps or steps, 1)
    floor = min_lr / lr if lr > 0 else 0.0
    return lambda step: max(floor, max(0.0, 1 - step / horizon) ** POLY_POWER)
