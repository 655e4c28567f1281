"""Fusion plugins; importing this package registers the feature fusions. The
whole-network baselines (mmgan, hinet, pix2pix, seq2seq-avg, seq2seq-early) register when the
registry loads its built-ins."""

from tsfnet.fusion import simple, tsf  # noqa: F401
from tsfnet.fusion.base import FeatureFusion, FusionResult, ModelOutput, Network

__all__ = ["FeatureFusion", "FusionResult", "ModelOutput", "Network"]
