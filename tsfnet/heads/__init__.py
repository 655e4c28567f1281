"""Task heads: decode fused features into a synthesis or a segmentation."""

from tsfnet.heads import segmentation, synthesis  # noqa: F401
