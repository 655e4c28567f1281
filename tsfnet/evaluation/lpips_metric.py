"""LPIPS (AlexNet) from local weights only, summed over axial slices as the TSF paper does.

The `lpips` package ships its linear calibration layers; the AlexNet backbone must
come from a local torchvision file (alexnet-owt-7be5be79.pth).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from tsfnet.weights import HOW_TO_SUPPLY, find_weights, load_state_dict

log = logging.getLogger("tsfnet")
MIN_SIZE = 64
UNAVAILABLE = "LPIPS unavailable: AlexNet weights not found; to report it, " + HOW_TO_SUPPLY.format(
    file="alexnet-owt-7be5be79.pth", flag="--lpips-weights"
)


class SliceLPIPS:
    def __init__(self, backbone_path: Path) -> None:
        import lpips
        from torchvision.models import alexnet

        features = alexnet(weights=None).features
        state = load_state_dict(backbone_path)
        features.load_state_dict({k.removeprefix("features."): v for k, v in state.items() if "classifier" not in k})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
        for part in (
            self.model.net.slice1,
            self.model.net.slice2,
            self.model.net.slice3,
            self.model.net.slice4,
            self.model.net.slice5,
        ):
            for name, module in part.named_children():
                module.load_state_dict(features[int(name)].state_dict())

    def __call__(self, prediction: np.ndarray, reference: np.ndarray) -> float:
        """Sum over axial slices of LPIPS between [-1, 1] slices. Slices smaller than
        AlexNet's minimum (64 px) are upsampled bilinearly first (tiny test data only)."""

        def slices(volume: np.ndarray) -> torch.Tensor:
            x = torch.from_numpy(np.moveaxis(volume, -1, 0).copy()).float()[:, None]
            if min(x.shape[2:]) < MIN_SIZE:
                scale = MIN_SIZE / min(x.shape[2:])
                x = torch.nn.functional.interpolate(x, scale_factor=scale, mode="bilinear")
            return x.expand(-1, 3, -1, -1)

        with torch.no_grad():
            return float(self.model(slices(prediction), slices(reference)).sum())


def build_lpips(explicit: Path | None) -> SliceLPIPS | None:
    path = find_weights(explicit, "alexnet")
    if path is None:
        log.warning(UNAVAILABLE)
        return None
    return SliceLPIPS(path)
