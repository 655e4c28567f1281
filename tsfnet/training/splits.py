"""Seeded 5-fold cross-validation splits, stored next to the preprocessed data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tsfnet.atomic import read_json, write_json
from tsfnet.errors import TsfnetError

N_FOLDS = 5
SPLITS_FILE = "splits.json"


def make_splits(case_ids: list[str], seed: int = 12345, folds: int = N_FOLDS) -> list[dict[str, list[str]]]:
    ids = sorted(case_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    chunks = np.array_split(order, min(folds, len(ids)))
    return [
        {"train": sorted(ids[i] for i in order if i not in set(chunk)), "val": sorted(ids[i] for i in chunk)}
        for chunk in chunks
    ]


def fold_cases(store: Path, case_ids: list[str], fold: int | str) -> tuple[list[str], list[str]]:
    """(train, val) ids; fold 'all' trains on everything and validates on it too, like nnU-Net."""
    if fold == "all":
        return sorted(case_ids), sorted(case_ids)
    path = Path(store) / SPLITS_FILE
    if path.is_file():
        splits = read_json(path)
    else:
        splits = make_splits(case_ids)
        write_json(path, splits)
    if not 0 <= int(fold) < len(splits):
        raise TsfnetError(f"fold {fold} does not exist: {path} has folds 0..{len(splits) - 1}")
    split = splits[int(fold)]
    return split["train"], split["val"]
