"""Predict with every finished fold of a model, nnU-Net style, and optionally with
mirroring test-time augmentation.

`-m RESULTS/<fusion>__<config>` (the folder above `fold_K/`) ensembles the finished
folds; `-m .../fold_K` is one model, as before. Each fold encodes the sources once and
decodes every target from them; the folds' syntheses are averaged in the network's
normalised space on the plan grid, before the geometry is restored.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tsfnet.errors import InputError, TsfnetError
from tsfnet.inference.engine import TaskPrediction
from tsfnet.inference.model_folder import TrainedModel, load_model_folder
from tsfnet.planning.plans import Plans
from tsfnet.training.folds import final_checkpoint, is_finished

log = logging.getLogger("tsfnet")
FOLD_FOLDER = re.compile(r"^fold_(\d+)$")
MIRROR_AXIS = 0  # the plan grid's first axis: left-right in axial scans; training mirrors it too


class Average:
    """Running mean of predictions (and sd of their synthesis), so memory does not grow
    with the number of folds."""

    def __init__(self) -> None:
        self.count = 0
        self.output: np.ndarray | None = None
        self.squares: np.ndarray | None = None
        self.base: np.ndarray | None = None
        self.weights: np.ndarray | None = None

    def add(self, prediction: TaskPrediction) -> None:
        output = prediction.output.astype(np.float64)
        if self.output is None:
            self.output, self.squares = np.zeros_like(output), np.zeros_like(output[0])
        self.output += output
        self.squares += output[0] ** 2
        if prediction.base is not None:
            self.base = prediction.base.astype(np.float64) + (0 if self.base is None else self.base)
        if prediction.weights is not None:
            self.weights = prediction.weights + (0 if self.weights is None else self.weights)
        self.count += 1

    def result(self, spread: bool) -> TaskPrediction:
        """The mean prediction; its TSEM is |mean G(f̂+f_A) − mean G(f̂)|, the TSEM of the
        averaged result; `spread` adds the population sd (ddof 0) of the synthesis."""
        assert self.output is not None and self.squares is not None
        output = self.output / self.count
        base = None if self.base is None else self.base / self.count
        tsem = None if base is None else np.abs(output[0] - base[0]).astype(np.float32)
        sd = np.sqrt(np.maximum(self.squares / self.count - output[0] ** 2, 0)).astype(np.float32)
        return TaskPrediction(
            output.astype(np.float32),
            tsem,
            None if self.weights is None else self.weights / self.count,
            None if base is None else base.astype(np.float32),
            sd if spread else None,
        )


def mirrored(prediction: TaskPrediction) -> TaskPrediction:
    """A prediction made on mirrored inputs, mirrored back onto the inputs' grid."""

    def flip(volume: np.ndarray | None, axis: int) -> np.ndarray | None:
        return None if volume is None else np.ascontiguousarray(np.flip(volume, axis))

    return TaskPrediction(
        flip(prediction.output, MIRROR_AXIS + 1),
        flip(prediction.tsem, MIRROR_AXIS),
        prediction.weights,
        flip(prediction.base, MIRROR_AXIS + 1),
    )


@dataclass
class Ensemble:
    """Several folds (or one fold with `tta`) behind the interface the predictor uses."""

    members: list[TrainedModel]
    tta: bool = False

    @property
    def plans(self) -> Plans:
        return self.members[0].plans

    @property
    def settings(self) -> dict:
        return self.members[0].settings

    @property
    def channel_names(self) -> list[str]:
        return self.members[0].channel_names

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    @property
    def precision(self) -> str:
        return self.members[0].precision

    @property
    def batch_size(self) -> int:
        return self.members[0].batch_size

    @property
    def folds(self) -> list[int | str]:
        return [fold for member in self.members for fold in member.folds]

    def predict(
        self, images: dict[int, np.ndarray], sources: tuple[int, ...], targets: list[int]
    ) -> dict[int, TaskPrediction]:
        """The mean over folds of each fold's (mirror-averaged) prediction, with the fold
        spread when there are several folds."""
        averages = {t: Average() for t in targets}
        for member in self.members:
            for target, prediction in self.fold_prediction(member, images, sources, targets).items():
                averages[target].add(prediction)
        return {t: average.result(spread=len(self.members) > 1) for t, average in averages.items()}

    def fold_prediction(
        self, member: TrainedModel, images: dict[int, np.ndarray], sources: tuple[int, ...], targets: list[int]
    ) -> dict[int, TaskPrediction]:
        plain = member.predict(images, sources, targets, keep_base=True)
        if not self.tta:
            return plain
        flipped = {s: np.flip(v, MIRROR_AXIS) for s, v in images.items()}
        mirror = member.predict(flipped, sources, targets, keep_base=True)
        averages = {t: Average() for t in targets}
        for target in targets:
            averages[target].add(plain[target])
            averages[target].add(mirrored(mirror[target]))
        return {t: average.result(spread=False) for t, average in averages.items()}


Predictor = TrainedModel | Ensemble


def fold_folders(folder: Path, folds: list[int] | None) -> list[Path]:
    """The chosen (default: every) fold_K folder below an ensemble folder; `fold_all`, trained
    on every case, is a model of its own, as in nnU-Net, and never part of the ensemble."""
    found = {int(m[1]): p for p in folder.iterdir() if p.is_dir() and (m := FOLD_FOLDER.match(p.name))}
    if folds is None:
        return [found[k] for k in sorted(found)]
    missing = [k for k in folds if k not in found]
    if missing:
        raise InputError(folder, f"no fold_{missing[0]} folder (folds here: {sorted(found) or 'none'})")
    return [found[k] for k in folds]


def why_unfinished(fold: Path) -> str:
    if not (fold / "model.json").is_file():
        return "no model.json"
    return f"unfinished (no {final_checkpoint(fold).name} yet)"


def load_predictor(
    folder: Path,
    device: torch.device,
    checkpoint: str = "best",
    precision: str = "auto",
    batch_size: int | None = None,
    folds: list[int] | None = None,
    tta: bool = False,
) -> Predictor:
    """A fold folder is one model (an `Ensemble` of one with `tta`); the folder above the
    folds ensembles its finished folds (or those in `folds`), skipping unfinished ones."""
    folder = Path(folder)
    if (folder / "model.json").is_file() or not folder.is_dir():
        if folds is not None:
            raise TsfnetError(f"{folder}: --folds needs the folder above the fold_K folders")
        trained = load_model_folder(folder, device, checkpoint, precision, batch_size)
        return Ensemble([trained], tta) if tta else trained
    candidates = fold_folders(folder, folds)
    if not candidates:
        raise InputError(folder, "no model.json and no fold_K folders: not a tsfnet model folder (see tsfnet train)")
    finished = [path for path in candidates if is_finished(path)]
    unfinished = [f"{path.name}: {why_unfinished(path)}" for path in candidates if path not in finished]
    if not finished:
        raise InputError(folder, f"no finished fold ({'; '.join(unfinished)})")
    for line in unfinished:
        log.info("%s, skipped", line)
    members = [load_model_folder(p, device, checkpoint, precision, batch_size) for p in finished]
    if any(m.plans.raw != members[0].plans.raw for m in members):
        raise InputError(folder, "the folds were trained with different plans; ensemble folds of one dataset")
    return Ensemble(members, tta)


def parse_folds(text: str | None) -> list[int] | None:
    """`--folds 0,1,2`, or None for every finished fold."""
    if text is None:
        return None
    try:
        folds = [int(part) for part in text.split(",")]
    except ValueError:
        raise TsfnetError(f"--folds takes fold numbers separated by commas, e.g. 0,1,2, got '{text}'") from None
    if len(set(folds)) != len(folds):
        raise TsfnetError(f"--folds names a fold twice: '{text}'")
    return folds
