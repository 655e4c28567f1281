"""`tsfnet train --fold all5`: the five folds of nnU-Net's cross-validation in sequence,
each one resumable, so one command trains what `predict` ensembles."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from tsfnet.preprocessing.pipeline import list_preprocessed
from tsfnet.training.folds import is_finished
from tsfnet.training.runner import Runner, TrainOptions, TrainResult
from tsfnet.training.splits import N_FOLDS, fold_cases

log = logging.getLogger("tsfnet")
ALL_FOLDS = "all5"


def train_folds(options: TrainOptions) -> list[TrainResult]:
    """Folds 0..4 in turn with the same options. With `resume`, a finished fold is skipped,
    a started one continues from its latest checkpoint and the others start, so rerunning
    the command picks up wherever an interruption left off."""
    store = Path(options.store)
    case_ids = list_preprocessed(store)
    for fold in range(N_FOLDS):  # a missing fold stops the run before hours go into the first
        fold_cases(store, case_ids, fold)
    results = []
    for fold in range(N_FOLDS):
        trainer = Runner(replace(options, fold=fold, resume=False))
        trainer.command = options  # an interrupted fold says to resume `--fold all5`
        if options.resume and is_finished(trainer.model_dir):
            log.info("fold %d: finished, skipped (%s)", fold, trainer.model_dir)
            continue
        started = (trainer.model_dir / "checkpoint_latest.pt").is_file()
        trainer.options = replace(trainer.options, resume=options.resume and started)
        results.append(trainer.run())
    return results
