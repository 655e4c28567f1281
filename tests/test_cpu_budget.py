"""CPU plans keep the voxel size and train on 2D patches of the slices; validation and
prediction run on whole slices, or on Gaussian-blended windows of the patch size when the
plans say `sliding_window` (the network is fully convolutional either way)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tsfnet.devices import resolve_device
from tsfnet.errors import InputError
from tsfnet.inference.model_folder import load_model_folder
from tsfnet.inference.predictor import predict_folder
from tsfnet.planning.plans import load_plans, save_plans
from tsfnet.training.data import CaseStore, TaskBatchLoader, to_batch
from tsfnet.training.runner import TrainOptions, train

PATCH = [16, 16]


def patch_store(store: Path, tmp_path: Path) -> Path:
    copy = Path(shutil.copytree(store, tmp_path / "store", ignore=shutil.ignore_patterns("unpacked")))
    plans = load_plans(copy / "plans.json")
    plans["configurations"]["2d"]["patch_size"] = PATCH
    save_plans(plans, copy / "plans.json")
    return copy


def test_two_d_batches_are_random_patches_of_whole_slices(store, tmp_path):
    copy = patch_store(store, tmp_path)
    plans = load_plans(copy / "plans.json")
    cases = CaseStore(copy, sorted(p.stem for p in (copy / "cases").glob("*.b2zip")), plans["channel_names"]).unpack()
    slice_shape = cases.array(cases.case_ids[0], "mask").shape[:2]
    assert all(s > p for s, p in zip(slice_shape, PATCH, strict=True))
    loader = TaskBatchLoader(cases, PATCH, 8, "many_to_one", seed=0)
    batches = [to_batch(loader.generate_train_batch(), 4, 1) for _ in range(3)]
    assert all(b.images.shape == (8, 4, 1, *PATCH) and b.brain_mask.shape == (8, 1, *PATCH) for b in batches)
    case, shape = cases.case_ids[0], cases.array(cases.case_ids[0], "mask").shape
    windows = {
        tuple((w.start, w.stop) for w in loader._window(np.random.default_rng(i), case, shape)[:2]) for i in range(20)
    }
    sizes = {tuple(stop - start for start, stop in win) for win in windows}
    assert len(windows) > 5 and sizes == {tuple(PATCH)}


@pytest.mark.parametrize("sliding_window", [False, True])
def test_patch_trained_model_predicts_whole_volumes(store, tmp_path, sliding_window):
    copy = patch_store(store, tmp_path)
    plans = load_plans(copy / "plans.json")
    plans["configurations"]["2d"]["sliding_window"] = sliding_window
    save_plans(plans, copy / "plans.json")
    result = train(TrainOptions(store=copy, output=tmp_path / "results", device="cpu", steps=3, num_workers=0,
                                progress=False))  # fmt: skip
    validated = [e for e in result.history if "val_psnr" in e]
    assert validated and all(np.isfinite(e["val_psnr"]) for e in validated)  # whole validation slices
    model = load_model_folder(result.model_dir, resolve_device("cpu"))
    assert model.plans.configuration("2d").patch_size == PATCH
    assert model.patch_size == (PATCH if sliding_window else None)
    source = Path(model.plans.raw["raw_path"]) / "imagesTs"
    case = sorted(source.glob("*_0000.nii.gz"))[0].name[: -len("_0000.nii.gz")]
    (tmp_path / "in").mkdir()
    for channel in (0, 1, 3):
        os.link(source / f"{case}_{channel:04d}.nii.gz", tmp_path / "in" / f"{case}_{channel:04d}.nii.gz")
    report = predict_folder(model, tmp_path / "in", tmp_path / "out", progress=False)
    assert not report.failed
    written = nib.load(str(tmp_path / "out" / f"{case}_T2.nii.gz"))
    assert written.shape == nib.load(str(source / f"{case}_0000.nii.gz")).shape
    assert np.isfinite(np.asarray(written.dataobj)).all()


def test_lesion_oversampling_draws_windows_that_hold_the_tumour(store, tmp_path):
    copy = patch_store(store, tmp_path)
    plans = load_plans(copy / "plans.json")
    assert plans["training"]["lesion_oversampling"] == 0.33  # what the planner writes
    cases = CaseStore(copy, sorted(p.stem for p in (copy / "cases").glob("*.b2zip")), plans["channel_names"]).unpack()

    def share_with_tumour(rate: float) -> float:
        loader = TaskBatchLoader(cases, PATCH, 8, "many_to_one", seed=0, lesion_oversampling=rate)
        labels = np.concatenate([loader.generate_train_batch()["seg"][:, 1] for _ in range(10)])
        return float(np.mean([(label > 0).any() for label in labels]))

    assert share_with_tumour(1.0) == 1.0
    assert share_with_tumour(0.0) < 0.7  # without it, most 16 x 16 windows miss the tumour


@pytest.mark.parametrize("key", ["lesion_oversampling", "brain_slice_probability"])
def test_plans_reject_a_share_outside_zero_to_one(store, key):
    from tsfnet.planning.plans import validate_plans

    plans = load_plans(store / "plans.json")
    plans["training"][key] = 1.5
    with pytest.raises(InputError, match=key):
        validate_plans(plans)


@pytest.mark.parametrize("count", [0, 2.5, True])
def test_plans_reject_a_validation_slice_count_that_is_not_a_positive_whole_number(store, count):
    from tsfnet.planning.plans import validate_plans

    plans = load_plans(store / "plans.json")
    plans["training"]["val_slices"] = count
    with pytest.raises(InputError, match=r"'training\.val_slices' must be a whole number of at least 1"):
        validate_plans(plans)


@pytest.mark.parametrize("probability", [1.0, 0.0])
def test_brain_slice_probability_decides_how_often_a_slice_outside_the_brain_is_drawn(store, tmp_path, probability):
    copy = patch_store(store, tmp_path)
    plans = load_plans(copy / "plans.json")
    cases = CaseStore(copy, sorted(p.stem for p in (copy / "cases").glob("*.b2zip")), plans["channel_names"]).unpack()
    loader = TaskBatchLoader(cases, PATCH, 8, "many_to_one", seed=0, brain_slice_probability=probability)
    case = loader.usable[0]
    shape = cases.array(case, "mask").shape
    brain = set(loader.brain_slices[case].tolist())
    assert 0 < len(brain) < shape[2]  # the crop keeps some slices outside the brain
    rng = np.random.default_rng(0)
    centres = [loader._window(rng, case, shape)[2].start + loader.context // 2 for _ in range(200)]
    outside = np.mean([z not in brain for z in centres])
    if probability == 1.0:  # the authors' rule: never a slice without brain
        assert outside == 0
    else:
        assert outside == pytest.approx(1 - len(brain) / shape[2], abs=0.1)


def test_a_run_limited_to_some_slices_returns_those_slices_in_their_order():
    import torch

    from tests.test_model import plans
    from tsfnet.inference.engine import predict_targets
    from tsfnet.model import FusionModel

    torch.manual_seed(0)
    model = FusionModel(plans(), "tsf").eval()
    volume = {c: np.random.default_rng(c).uniform(-1, 1, (16, 24, 7)).astype(np.float32) for c in (0, 1)}
    whole = predict_targets(model, volume, (0, 1), [2, 3], torch.device("cpu"))
    chosen = [5, 1, 2]
    some = predict_targets(model, volume, (0, 1), [2, 3], torch.device("cpu"), batch_size=2, slices=chosen)
    for target in (2, 3):
        assert some[target].output.shape == (1, 16, 24, 3)  # no whole volume for three slices
        assert np.allclose(some[target].synthesis, whole[target].synthesis[..., chosen], atol=1e-5)
        assert np.allclose(some[target].tsem, whole[target].tsem[..., chosen], atol=1e-5)


def test_sliding_window_slices_blend_windows_that_each_match_the_model_on_their_crop():
    import torch

    from tests.test_model import plans
    from tsfnet.inference.engine import gaussian_importance, predict_targets
    from tsfnet.model import FusionModel

    torch.manual_seed(0)
    model = FusionModel(plans(), "tsf").eval()
    volume = {c: np.random.default_rng(c).uniform(-1, 1, (16, 24, 3)).astype(np.float32) for c in (0, 1)}
    tiled = predict_targets(model, volume, (0, 1), [2], torch.device("cpu"), patch_size=PATCH)[2].synthesis
    whole = predict_targets(model, volume, (0, 1), [2], torch.device("cpu"))[2].synthesis

    def on_crop(columns: slice) -> np.ndarray:  # the model run on that window alone
        crop = {c: v[:, columns] for c, v in volume.items()}
        return predict_targets(model, crop, (0, 1), [2], torch.device("cpu"))[2].synthesis

    left, right = on_crop(slice(0, 16)), on_crop(slice(8, 24))  # the two windows across 24 columns
    assert np.allclose(tiled[:, :8], left[:, :8], atol=1e-5)  # covered by the first window only
    assert np.allclose(tiled[:, 16:], right[:, 8:], atol=1e-5)  # by the second only
    weight = gaussian_importance(PATCH)[..., None]
    blend = (left[:, 8:] * weight[:, 8:] + right[:, :8] * weight[:, :8]) / (weight[:, 8:] + weight[:, :8])
    assert np.allclose(tiled[:, 8:16], blend, atol=1e-5)
    assert not np.allclose(tiled, whole, atol=1e-3)  # instance norms see other statistics per window


def test_plans_without_sliding_window_predict_whole_slices_and_reject_a_non_boolean(store):
    from tsfnet.planning.plans import Plans, validate_plans

    plans = load_plans(store / "plans.json")
    plans["configurations"]["2d"].pop("sliding_window", None)  # written before the option
    assert Plans(plans).configuration("2d").inference_window is None
    assert Plans(plans).configuration("3d").inference_window == plans["configurations"]["3d"]["patch_size"]
    plans["configurations"]["2d"]["sliding_window"] = "yes"
    with pytest.raises(InputError, match="sliding_window"):
        validate_plans(plans)
