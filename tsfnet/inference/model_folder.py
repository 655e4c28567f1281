"""Load a trained model folder (plans.json, model.json, checkpoint_*.pt).

The folder's plans.json is a copy of the plans it was trained with; model.json names
them ("plans"; folders from before plans had names lack it and mean the default).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tsfnet.atomic import read_json
from tsfnet.devices import inference_batch_size, resolve_precision
from tsfnet.errors import InputError, TsfnetError
from tsfnet.inference.engine import TaskPrediction, predict_targets
from tsfnet.model import Network, build_model
from tsfnet.planning.plans import DEFAULT_PLANS, Configuration, Plans
from tsfnet.training.checkpoint import load_checkpoint


@dataclass
class TrainedModel:
    folder: Path
    plans: Plans
    settings: dict
    model: Network
    device: torch.device
    precision: str  # inference autocast: bf16 or fp32
    batch_size: int  # 2D slices per forward pass

    @property
    def channel_names(self) -> list[str]:
        return self.plans.channel_names

    @property
    def configuration(self) -> Configuration:
        return self.plans.configuration(self.settings["config"])

    @property
    def context(self) -> int:
        return self.configuration.context_slices

    @property
    def patch_size(self) -> list[int] | None:
        return self.configuration.inference_window

    @property
    def folds(self) -> list[int | str]:
        """The folds behind a prediction, as the weights JSON records them."""
        return [self.settings["fold"]]

    def predict(
        self, images: dict[int, np.ndarray], sources: tuple[int, ...], targets: list[int], keep_base: bool = False
    ) -> dict[int, TaskPrediction]:
        """`predict_targets` with this model's device and inference settings."""
        return predict_targets(
            self.model,
            images,
            sources,
            targets,
            self.device,
            self.context,
            self.batch_size,
            self.patch_size,
            precision=self.precision,
            keep_base=keep_base,
        )


def load_model_folder(
    folder: Path,
    device: torch.device,
    checkpoint: str = "best",
    precision: str = "auto",
    batch_size: int | None = None,
) -> TrainedModel:
    """The model on `device`, with inference settings: `precision` auto/bf16/fp32 (see
    `resolve_precision`), `batch_size` None for the device's default."""
    precision = resolve_precision(device, precision)
    if batch_size is not None and batch_size < 1:
        raise TsfnetError(f"--batch-size must be at least 1, got {batch_size}")
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "model folder not found")
    for name in ("plans.json", "model.json"):
        if not (folder / name).is_file():
            raise InputError(folder / name, "missing: not a tsfnet model folder (see tsfnet train)")
    settings = read_json(folder / "model.json")
    plans = Plans.load(folder / "plans.json", settings.get("plans", DEFAULT_PLANS))
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
    batch_size = batch_size or inference_batch_size(device)
    return TrainedModel(folder, plans, settings, model, device, precision, batch_size)
