"""Device choice and mixed precision, in one place for training and inference."""

from __future__ import annotations

import contextlib

import torch

from tsfnet.errors import TsfnetError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TsfnetError("--device cuda requested but no CUDA GPU is visible (use --device cpu or auto)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise TsfnetError("--device mps requested but MPS is not available")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise TsfnetError(f"unknown device '{name}'; use auto, cuda, cuda:N, cpu or mps")
    return torch.device(name)


PRECISIONS = ("bf16", "fp32")


def autocast(device: torch.device, precision: str = "bf16") -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed) unless fp32 is asked for; full
    precision elsewhere."""
    if precision not in PRECISIONS:
        raise TsfnetError(f"unknown precision '{precision}'; use {' or '.join(PRECISIONS)}")
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
