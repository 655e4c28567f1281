"""Fusion plugins; importing this package registers the built-ins."""

from tsfnet.fusion import simple, tsf  # noqa: F401
from tsfnet.fusion.base import FeatureFusion, FusionResult

__all__ = ["FeatureFusion", "FusionResult"]
