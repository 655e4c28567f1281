"""Five-fold training and fold-ensemble prediction, nnU-Net style, on two tiny folds."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.test_cli import error_line, tsfnet
from tsfnet.devices import resolve_device
from tsfnet.errors import InputError, TsfnetError
from tsfnet.evaluation.evaluate import evaluate
from tsfnet.inference.ensemble import Ensemble, load_predictor, mirrored, parse_folds
from tsfnet.inference.explain import explain_weights, task_weights
from tsfnet.inference.model_folder import TrainedModel, load_model_folder
from tsfnet.inference.predictor import predict_folder
from tsfnet.preprocessing.pipeline import preprocess_volumes
from tsfnet.training.cross_validation import train_folds
from tsfnet.training.folds import is_finished
from tsfnet.training.runner import Runner, TrainOptions, TrainResult, train

CPU = resolve_device("cpu")
T2 = 2
BATCH = 64  # every slice of the tiny volumes in one pass


def tiny_options(store: Path, output: Path, fold: int | str = 0) -> TrainOptions:
    return TrainOptions(
        store=store, output=output, fold=fold, device="cpu", steps=2, val_every=2, num_workers=0, progress=False
    )


@pytest.fixture(scope="module")
def ensemble_dir(store, tmp_path_factory) -> Path:
    """tsf__plans__2d with fold_0 and fold_1, each trained 2 + 2 steps."""
    output = tmp_path_factory.mktemp("ensemble")
    for fold in (0, 1):
        train(tiny_options(store, output, fold))
    return output / "tsf__plans__2d"


@pytest.fixture(scope="module")
def test_case(ensemble_dir) -> tuple[Path, dict[int, np.ndarray]]:
    """PH_0006 without its T2, linked into an input folder, and its preprocessed images."""
    model = load_model_folder(ensemble_dir / "fold_0", CPU, precision="fp32")
    raw = Path(model.plans.raw["raw_path"]) / "imagesTs"
    folder = ensemble_dir.parent / "inputs"
    folder.mkdir(exist_ok=True)
    for channel in (0, 1, 3):
        name = f"PH_0006_{channel:04d}.nii.gz"
        if not (folder / name).exists():
            os.link(raw / name, folder / name)
    from tsfnet.data.dataset import RawCase, load_case

    volumes = load_case(RawCase("PH_0006", {c: folder / f"PH_0006_{c:04d}.nii.gz" for c in (0, 1, 3)}))
    pre = preprocess_volumes(volumes, model.plans)
    return folder, {model.channel_names.index(n): v for n, v in pre.images.items()}


def folds(ensemble_dir: Path) -> list[TrainedModel]:
    return [load_model_folder(ensemble_dir / f"fold_{k}", CPU, precision="fp32", batch_size=BATCH) for k in (0, 1)]


def test_ensemble_is_the_mean_of_its_folds_in_normalised_space(ensemble_dir, test_case):
    _, images = test_case
    singles = [m.predict(images, (0, 1, 3), [T2], keep_base=True)[T2] for m in folds(ensemble_dir)]
    ensemble = load_predictor(ensemble_dir, CPU, precision="fp32", batch_size=BATCH)
    assert isinstance(ensemble, Ensemble) and ensemble.folds == [0, 1]
    result = ensemble.predict(images, (0, 1, 3), [T2])[T2]
    outputs = np.stack([s.output for s in singles])
    assert np.abs(singles[0].output - singles[1].output).max() > 1e-3  # the folds do differ
    np.testing.assert_allclose(result.output, outputs.mean(0), atol=1e-6)
    np.testing.assert_allclose(result.weights, np.mean([s.weights for s in singles], axis=0), atol=1e-7)
    np.testing.assert_allclose(result.spread, outputs[:, 0].std(0), atol=1e-6)  # population sd
    mean_base = np.mean([s.base[0] for s in singles], axis=0)
    np.testing.assert_allclose(result.tsem, np.abs(outputs[:, 0].mean(0) - mean_base), atol=1e-6)


def test_ensemble_files_average_the_single_fold_files(ensemble_dir, test_case, tmp_path):
    """Restoring the geometry is linear (resampling, padding, masking), so the written
    synthesis is the mean of the single folds' written syntheses too."""
    inputs, _ = test_case
    for k, model in enumerate(folds(ensemble_dir)):
        predict_folder(model, inputs, tmp_path / f"fold_{k}", progress=False)
    ensemble = load_predictor(ensemble_dir, CPU, precision="fp32", batch_size=BATCH)
    report = predict_folder(ensemble, inputs, tmp_path / "ensemble", progress=False)
    assert [p.name for p in report.written] == ["PH_0006_T2.nii.gz"]
    written = sorted(p.name for p in (tmp_path / "ensemble").iterdir())
    assert written == [
        "PH_0006_T2.nii.gz",
        "PH_0006_T2_folds_sd.nii.gz",
        "PH_0006_T2_tsem.nii.gz",
        "PH_0006_T2_weights.json",
    ]
    assert not (tmp_path / "fold_0" / "PH_0006_T2_folds_sd.nii.gz").exists()  # one fold: no spread to show

    def volume(folder: str, name: str = "PH_0006_T2.nii.gz") -> np.ndarray:
        return nib.load(str(tmp_path / folder / name)).get_fdata()

    def meta(folder: str) -> dict:
        return json.loads((tmp_path / folder / "PH_0006_T2_weights.json").read_text())

    np.testing.assert_allclose(volume("ensemble"), (volume("fold_0") + volume("fold_1")) / 2, atol=1e-5)
    spread = volume("ensemble", "PH_0006_T2_folds_sd.nii.gz")
    assert spread.min() >= 0 and spread.max() > 0 and spread.shape == volume("fold_0").shape
    assert meta("ensemble")["folds"] == [0, 1] and meta("fold_0")["folds"] == [0]
    for source, weight in meta("ensemble")["sources"].items():
        assert weight == pytest.approx((meta("fold_0")["sources"][source] + meta("fold_1")["sources"][source]) / 2)
    reference = Path(ensemble.plans.raw["raw_path"]) / "imagesTs"
    rows, _ = evaluate(tmp_path / "ensemble", reference, tmp_path / "report", progress=False)
    assert [(r["case"], r["target"]) for r in rows] == [("PH_0006", "T2")] and np.isfinite(rows[0]["psnr"])


def test_folds_option_picks_a_subset(ensemble_dir):
    assert load_predictor(ensemble_dir, CPU, folds=[1]).folds == [1]
    with pytest.raises(InputError, match="no fold_7 folder"):
        load_predictor(ensemble_dir, CPU, folds=[0, 7])
    with pytest.raises(TsfnetError, match="--folds needs the folder above"):
        load_predictor(ensemble_dir / "fold_0", CPU, folds=[0])
    assert parse_folds("0, 2") == [0, 2] and parse_folds(None) is None
    with pytest.raises(TsfnetError, match="fold numbers separated by commas"):
        parse_folds("0,x")


def test_a_fold_folder_is_one_model_as_before(ensemble_dir):
    model = load_predictor(ensemble_dir / "fold_0", CPU)
    assert isinstance(model, TrainedModel) and model.folds == [0]


def test_unfinished_fold_is_skipped_by_name(ensemble_dir, tmp_path, caplog):
    copy = Path(shutil.copytree(ensemble_dir, tmp_path / "tsf__plans__2d"))
    (copy / "fold_1" / "checkpoint_finetune.pt").unlink()  # stopped during stage 2
    assert is_finished(copy / "fold_0") and not is_finished(copy / "fold_1")
    with caplog.at_level(logging.INFO, logger="tsfnet"):
        ensemble = load_predictor(copy, CPU)
    assert ensemble.folds == [0]
    assert "fold_1: unfinished (no checkpoint_finetune.pt yet), skipped" in caplog.text


def test_no_finished_fold_is_one_line(ensemble_dir, tmp_path):
    copy = Path(shutil.copytree(ensemble_dir, tmp_path / "tsf__plans__2d"))
    for k in (0, 1):
        (copy / f"fold_{k}" / "checkpoint_finetune.pt").unlink()
    with pytest.raises(InputError, match="no finished fold"):
        load_predictor(copy, CPU)
    line = error_line(tsfnet("predict", "-i", str(tmp_path), "-o", str(tmp_path / "out"), "-m", str(copy)))
    expected = "no finished fold (fold_0: unfinished (no checkpoint_finetune.pt yet); fold_1: unfinished"
    assert expected in line


def test_mirroring_tta_is_mirror_symmetric(ensemble_dir, test_case):
    """With --tta, mirroring the input mirrors the output: the flip is averaged out."""
    _, images = test_case
    model = load_predictor(ensemble_dir / "fold_0", CPU, precision="fp32", batch_size=BATCH, tta=True)
    assert isinstance(model, Ensemble) and model.folds == [0]
    plain = model.predict(images, (0, 1, 3), [T2])[T2]
    flipped = model.predict({s: np.flip(v, 0) for s, v in images.items()}, (0, 1, 3), [T2])[T2]
    back = mirrored(flipped)
    np.testing.assert_allclose(plain.output, back.output, atol=1e-6)
    np.testing.assert_allclose(plain.tsem, back.tsem, atol=1e-6)
    assert plain.spread is None  # one fold: no spread
    single = load_model_folder(ensemble_dir / "fold_0", CPU, precision="fp32", batch_size=BATCH).predict(
        images, (0, 1, 3), [T2]
    )[T2]
    assert np.abs(plain.output - single.output).max() > 0  # the mirrored pass did contribute


def test_explain_on_an_ensemble_averages_omega(ensemble_dir, tmp_path):
    json_path, _ = explain_weights(load_predictor(ensemble_dir, CPU), tmp_path)
    rows = json.loads(json_path.read_text())
    per_fold = [task_weights(m) for m in folds(ensemble_dir)]
    assert len(rows) == 28
    for row, first, second in zip(rows, *per_fold, strict=True):
        for source, weight in row["weights"].items():
            assert weight == pytest.approx((first["weights"][source] + second["weights"][source]) / 2)


def test_all_five_folds_in_turn_and_resume_skips_finished_ones(store, tmp_path, monkeypatch, caplog):
    """The loop alone: each run stands in for a finished training (the runner has its own tests)."""
    runs, resume_commands = [], set()

    def finish(trainer: Runner) -> TrainResult:
        runs.append((trainer.options.fold, trainer.options.resume))
        resume_commands.add(trainer.resume_command())  # what an interrupted fold would print
        trainer.write_model_folder()
        for name in ("latest", "finetune"):
            (trainer.model_dir / f"checkpoint_{name}.pt").touch()
        return TrainResult(trainer.model_dir, trainer.model)

    monkeypatch.setattr(Runner, "run", finish)
    options = tiny_options(store, tmp_path, "all5")
    results = train_folds(options)
    assert runs == [(k, False) for k in range(5)]
    assert [r.model_dir.name for r in results] == [f"fold_{k}" for k in range(5)]
    assert len(resume_commands) == 1 and "--fold all5" in resume_commands.pop()  # all five go on, not one fold
    (tmp_path / "tsf__plans__2d" / "fold_3" / "checkpoint_finetune.pt").unlink()  # interrupted
    shutil.rmtree(tmp_path / "tsf__plans__2d" / "fold_4")  # never started
    runs.clear()
    with caplog.at_level(logging.INFO, logger="tsfnet"):
        again = train_folds(replace(options, resume=True))
    assert runs == [(3, True), (4, False)]  # fold 3 continues, fold 4 starts
    assert [r.model_dir.name for r in again] == ["fold_3", "fold_4"]
    assert "fold 0: finished, skipped" in caplog.text
    runs.clear()
    train_folds(options)
    assert runs == [(k, False) for k in range(5)]  # without --resume every fold starts afresh


def test_all5_needs_five_folds(store, tmp_path):
    copy = Path(shutil.copytree(store, tmp_path / store.name, ignore=shutil.ignore_patterns("unpacked")))
    (copy / "splits.json").write_text(json.dumps([{"train": ["PH_0000"], "val": ["PH_0001"]}]))
    line = error_line(tsfnet("train", "-p", str(copy), "--fold", "all5", "-o", str(tmp_path), "--device", "cpu"))
    assert "fold 1 does not exist" in line
