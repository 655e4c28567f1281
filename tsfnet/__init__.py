"""tsfnet: explainable multi-to-one MRI sequence synthesis (TSF-Seq2Seq)."""

__version__ = "0.1.0"
