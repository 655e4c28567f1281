"""Checkpoints: written atomically, loaded with weights_only=True (a crafted file
cannot run code), and checked against the model they are loaded into."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tsfnet.atomic import write_atomic
from tsfnet.errors import InputError

FORMAT = 1


def stage_checkpoint(folder: Path, stage: str) -> Path:
    """Where a model folder keeps the weights stage `stage` ended with."""
    return Path(folder) / f"checkpoint_{stage}.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    return write_atomic(Path(path), lambda tmp: torch.save({"format": FORMAT, **state}, tmp), overwrite=True)


def load_checkpoint(path: Path, fusion: str | None = None, head: str | None = None) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, f"not a loadable tsfnet checkpoint ({first[:200]})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise InputError(path, "not a tsfnet checkpoint (format marker missing)")
    for key, wanted in (("fusion", fusion), ("head", head)):
        if wanted is not None and state.get(key) != wanted:
            raise InputError(path, f"checkpoint was trained with {key} '{state.get(key)}', not '{wanted}'")
    return state


def rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state[0], np.asarray(numpy_state[1], dtype=np.uint32), *numpy_state[2:]))
    random.setstate((state["python_version"], tuple(state["python"]), None))
