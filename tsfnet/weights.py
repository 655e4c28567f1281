"""Locate pretrained backbone weights on the local disk; nothing is ever downloaded.

Search order: the explicit path, then $TSFNET_WEIGHTS_DIR, then torch's hub cache
(`~/.cache/torch/hub/checkpoints`), where torchvision leaves the files it fetched.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from tsfnet.errors import InputError

HOW_TO_SUPPLY = "put torchvision's {file} in $TSFNET_WEIGHTS_DIR or ~/.cache/torch/hub/checkpoints, or pass {flag} PATH"


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(explicit: Path | None, prefix: str) -> Path | None:
    """`explicit` must exist if given; otherwise the first `prefix*.pth` in the search folders."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise InputError(explicit, "weights file not found")
        return Path(explicit)
    folders = [Path(os.environ["TSFNET_WEIGHTS_DIR"])] if os.environ.get("TSFNET_WEIGHTS_DIR") else []
    folders.append(hub_checkpoint_dir())
    for folder in folders:
        matches = sorted(folder.glob(f"{prefix}*.pth")) if folder.is_dir() else []
        if matches:
            return matches[0]
    return None


def load_state_dict(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(path, f"cannot load weights ({str(exc).splitlines()[0]})") from exc
    if not isinstance(state, dict):
        raise InputError(path, "weights file does not hold a state dict")
    return state
