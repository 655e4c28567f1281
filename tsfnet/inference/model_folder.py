"""Load a trained model folder (plans.json, model.json, checkpoint_*.pt)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tsfnet.atomic import read_json
from tsfnet.errors import InputError
from tsfnet.model import Network, build_model, input_channels
from tsfnet.planning.plans import load_plans
from tsfnet.training.checkpoint import load_checkpoint


@dataclass
class TrainedModel:
    folder: Path
    plans: dict
    settings: dict
    model: Network
    device: torch.device

    @property
    def channel_names(self) -> list[str]:
        return self.plans["channel_names"]

    @property
    def context(self) -> int:
        return input_channels(self.plans, self.settings["config"])

    @property
    def patch_size(self) -> list[int] | None:
        return self.plans["configurations"][self.settings["config"]]["patch_size"] if self.model.dims == 3 else None


def load_model_folder(folder: Path, device: torch.device, checkpoint: str = "best") -> TrainedModel:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "model folder not found")
    for name in ("plans.json", "model.json"):
        if not (folder / name).is_file():
            raise InputError(folder / name, "missing: not a tsfnet model folder (see tsfnet train)")
    plans = load_plans(folder / "plans.json")
    settings = read_json(folder / "model.json")
    path = folder / f"checkpoint_{checkpoint}.pt"
    if not path.is_file():
        path = folder / "checkpoint_latest.pt"
    state = load_checkpoint(path, settings["fusion"], settings["head"])
    model = build_model(plans, settings["fusion"], settings["head"], settings["config"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise InputError(path, f"weights do not fit the model in plans.json ({str(exc).splitlines()[0]})") from exc
    model.to(device).eval()
    return TrainedModel(folder, plans, settings, model, device)
