"""Fingerprint, plans and preprocessing."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from tsfnet.data.dataset import RawDataset, foreground_values, load_case
from tsfnet.data.phantom import BRATS_SHAPE, write_dataset
from tsfnet.errors import InputError, TsfnetError
from tsfnet.planning.api import plan
from tsfnet.planning.fingerprint import brain_bbox, compute_fingerprint
from tsfnet.planning.planner import plan_dataset
from tsfnet.planning.plans import SCHEMA_VERSION, load_plans, total_stride, validate_plans
from tsfnet.preprocessing import geometry as geo
from tsfnet.preprocessing.pipeline import (
    list_preprocessed,
    load_preprocessed,
    preprocess_dataset,
    preprocess_volumes,
    restore_geometry,
)


def hand_made(tmp_path, spacing=(1.0, 1.0, 1.0)):
    root = tmp_path / "Dataset009_Hand"
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "A", "1": "B"}, "file_ending": ".nii.gz"}))
    rng = np.random.default_rng(0)
    a = np.zeros((20, 22, 18), np.float32)
    a[4:15, 5:17, 3:12] = rng.uniform(10, 100, size=(11, 12, 9))
    b = np.where(a > 0, a * 2 + 5, 0).astype(np.float32)
    affine = np.diag([*spacing, 1.0])
    for i, data in enumerate((a, b)):
        nib.save(nib.Nifti1Image(data, affine), str(root / "imagesTr" / f"C1_{i:04d}.nii.gz"))
    nib.save(nib.Nifti1Image(a[::-1].copy(), affine), str(root / "imagesTr" / "C2_0000.nii.gz"))
    return root, a, b


def test_fingerprint_matches_numpy(tmp_path):
    root, a, b = hand_made(tmp_path)
    fingerprint = compute_fingerprint(RawDataset.load(root), workers=1, progress=False)
    case = fingerprint["cases"][0]
    assert case["shape"] == [20, 22, 18]
    assert case["spacing"] == [1.0, 1.0, 1.0]
    assert case["bbox"] == [[4, 15], [5, 17], [3, 12]]
    foreground = b[(a > 0) | (b > 0)]
    stats = case["channels"]["B"]
    assert stats["p0_5"] == pytest.approx(np.percentile(foreground, 0.5))
    assert stats["p50"] == pytest.approx(np.percentile(foreground, 50))
    assert stats["p99_5"] == pytest.approx(np.percentile(foreground, 99.5))
    assert stats["mean"] == pytest.approx(foreground.mean(), rel=1e-5)
    assert stats["std"] == pytest.approx(foreground.std(), rel=1e-4)
    assert fingerprint["channels"]["A"]["available"] == 2
    assert fingerprint["channels"]["B"]["available"] == 1


def test_plans_constraints(raw_dataset, tmp_path):
    store, plans = plan(raw_dataset, tmp_path / "pre", progress=False, workers=1, budget="gpu")
    assert json.loads((store / "dataset_fingerprint.json").read_text())["num_cases"] == 6
    stride = total_stride(plans)
    assert all(v % stride == 0 for v in plans["crop_size"])
    fingerprint = json.loads((store / "dataset_fingerprint.json").read_text())
    for case in fingerprint["cases"]:  # same spacing everywhere: crop holds every brain box
        assert all(hi - lo <= c for (lo, hi), c in zip(case["bbox"], plans["crop_size"], strict=True))
    assert plans["configurations"]["2d"]["patch_size"] == plans["crop_size"][:2]
    assert plans["configurations"]["2d"]["batch_size"] >= 1
    # per channel: the median over cases of its 0.5 / 99.5 percentiles over its brain median
    assert plans["normalization"]["scheme"] == "median_scaled"
    for name in plans["channel_names"]:
        stats = [case["channels"][name] for case in fingerprint["cases"] if name in case["channels"]]
        expected = np.median([[s["p0_5"] / s["p50"], s["p99_5"] / s["p50"]] for s in stats], axis=0)
        ratios = plans["normalization"]["channels"][name]
        assert [ratios["lower"], ratios["upper"]] == pytest.approx(expected, abs=1e-4)
        assert 0 < ratios["lower"] < 1 < ratios["upper"]
    assert list(load_plans(store / "plans.json")) == list(plans)  # stable key order on disk


def test_brats_sized_plan_fits_brain_and_budget(tmp_path):
    from tsfnet.planning.memory import estimate_gb

    root = write_dataset(tmp_path, n_cases=2, downsample=1, seed=3, shape=BRATS_SHAPE)
    store, plans = plan(root, tmp_path / "pre", progress=False, workers=1, gpu_memory_gb=8, budget="gpu")
    fingerprint = json.loads((store / "dataset_fingerprint.json").read_text())
    assert all(c["shape"] == list(BRATS_SHAPE) for c in fingerprint["cases"])
    for case in fingerprint["cases"]:
        assert all(hi - lo <= c for (lo, hi), c in zip(case["bbox"], plans["crop_size"], strict=True))
    two_d = plans["configurations"]["2d"]
    assert estimate_gb(two_d["patch_size"], two_d["batch_size"], plans["network"]) <= 8
    assert plans["network"]["encoder_widths"] == [64, 128, 256]  # full-size images get the paper's network
    three_d = plans["configurations"]["3d"]
    assert estimate_gb(three_d["patch_size"], three_d["batch_size"], plans["network"]) <= 8
    cpu = plan_dataset(fingerprint, budget="cpu")  # same data planned for a CPU: same voxels, less work
    assert cpu["budget"] == "cpu" and cpu["target_spacing"] == plans["target_spacing"]
    assert cpu["crop_size"] == plans["crop_size"] and cpu["configurations"]["2d"]["patch_size"] == [96, 96]
    assert cpu["configurations"]["2d"]["sliding_window"] is two_d["sliding_window"] is False  # whole slices
    assert cpu["network"]["encoder_widths"] == [32, 64, 128] and cpu["network"]["strides"] == [1, 2, 2]
    assert cpu["training"]["pretrain"]["steps"] < plans["training"]["pretrain"]["steps"]
    stages = [v for v in cpu["training"].values() if isinstance(v, dict) and "steps" in v]
    assert stages and all(stage["schedule"] == "poly" for stage in stages)  # a short budget anneals
    assert plans["training"]["pretrain"]["schedule"] == "constant"  # the paper's, on the GPU budget
    # ω's own rate, scaled so that its parameters can travel as far (rate x steps) on either budget
    cpu_finetune, gpu_finetune = cpu["training"]["finetune"], plans["training"]["finetune"]
    assert cpu_finetune["weighting_lr"] == 1e-2 and gpu_finetune["weighting_lr"] == pytest.approx(2e-3)
    travel = [f["weighting_lr"] * f["steps"] for f in (cpu_finetune, gpu_finetune)]
    assert travel[0] == pytest.approx(travel[1]) and gpu_finetune["lr"] == 1e-4
    assert (cpu["training"]["num_workers"], plans["training"]["num_workers"]) == (0, 2)  # a CPU step uses every core
    assert cpu["training"]["task_sampling"] == plans["training"]["task_sampling"] == "per_sample"  # better per step


def test_budget_auto_plans_for_the_machine(raw_dataset, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert plan(raw_dataset, tmp_path / "a", progress=False, workers=1)[1]["budget"] == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert plan(raw_dataset, tmp_path / "b", progress=False, workers=1)[1]["budget"] == "gpu"
    with pytest.raises(TsfnetError, match="unknown --budget 'tpu'; use auto, gpu or cpu"):
        plan(raw_dataset, tmp_path / "c", progress=False, workers=1, budget="tpu")


def test_preset_applies_the_paper_setting(raw_dataset, tmp_path):
    _, plans = plan(raw_dataset, tmp_path / "pre", preset="brats2021_paper", progress=False, workers=1)
    assert plans["crop_size"] == [192, 192, 128]
    # nothing of the planned scheme; the percentile over the whole volume, as the authors take it
    assert plans["normalization"] == {"scheme": "p99x2", "percentile": 99.0, "over": "volume"}
    assert plans["configurations"]["2d"]["context_slices"] == 3
    assert plans["training"]["pretrain"]["lr"] == 2e-4 and plans["training"]["finetune"]["lr"] == 1e-4
    assert plans["preset"] == "brats2021_paper"
    assert plans["training"]["loss"]["reconstruction"] == "smooth_l1"  # their stage 1 uses SmoothL1 too
    assert plans["training"]["lesion_oversampling"] == 0.0  # the planner's 0.33 off: they draw slices uniformly
    volumes = load_case(RawDataset.load(raw_dataset).cases[0])
    case = preprocess_volumes(volumes, plans)
    assert all(image.shape == (192, 192, 128) for image in case.images.values())
    assert all(image.min() >= -1 and image.max() <= 1 for image in case.images.values())
    names = plans["channel_names"]
    for index, image in volumes.images.items():  # P99 of the uncropped volume, not of the cropped region
        expected = 2 * np.percentile(image, 99.0)
        assert case.properties["normalization"][names[index]]["hi"] == pytest.approx(expected, rel=1e-6)


def test_unknown_preset_lists_shipped_ones(raw_dataset, tmp_path):
    with pytest.raises(InputError, match="brats2021_paper"):
        plan(raw_dataset, tmp_path / "pre", preset="nope", progress=False, workers=1)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda p: p.update(schema_version=99), "schema version 99"),
        (lambda p: p.pop("crop_size"), "missing key 'crop_size'"),
        (
            lambda p: p["training"]["pretrain"].update(lr="fast"),
            "'training.pretrain.lr' must be int or float",
        ),
        (lambda p: p["configurations"]["2d"].update(patch_size=[30, 30]), "not a multiple of 4"),
        (lambda p: p.update(crop_size=[1, 2]), "3 positive integers"),
    ],
    ids=["version", "missing", "type", "stride", "crop"],
)
def test_plans_validation_errors(store, tmp_path, edit, problem):
    plans = load_plans(store / "plans.json")
    edit(plans)
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(plans))
    with pytest.raises(InputError) as exc:
        load_plans(path)
    assert problem in str(exc.value) and str(path) in str(exc.value)


def test_preprocess_round_trip_is_voxel_exact(raw_dataset, store):
    plans = load_plans(store / "plans.json")
    case = RawDataset.load(raw_dataset).cases[0]
    volumes = load_case(case, with_label=True)
    pre = preprocess_volumes(volumes, plans)
    assert all(v.shape == tuple(plans["crop_size"]) for v in pre.images.values())
    restored = restore_geometry(pre.label, pre.properties, 0, nearest=True)
    assert restored.shape == volumes.geometry.shape
    assert np.array_equal(restored, volumes.label)  # same spacing: exact inverse
    bbox = tuple(slice(lo, hi) for lo, hi in brain_bbox(volumes.brain_mask))
    name = plans["channel_names"][0]
    image = restore_geometry(pre.images[name], pre.properties, -1.0)
    brain = volumes.brain_mask[bbox]
    lo, hi = pre.properties["normalization"][name]["lo"], pre.properties["normalization"][name]["hi"]
    expected = np.clip((volumes.images[0][bbox] - lo) / (hi - lo), 0, 1) * 2 - 1
    assert np.allclose(image[bbox][brain], expected[brain], atol=1e-6)
    assert (image[~volumes.brain_mask] == -1).all()


def test_preprocessing_resamples_other_spacings_and_back(tmp_path):
    root, a, _ = hand_made(tmp_path, spacing=(1.0, 1.0, 2.0))
    plans = validate_plans({**_plans_for(root, tmp_path), "target_spacing": [1.0, 1.0, 1.0], "crop_size": [12, 12, 20]})
    volumes = load_case(RawDataset.load(root).case("C1"))
    pre = preprocess_volumes(volumes, plans)
    assert pre.properties["resampled_shape"] == [11, 12, 18]  # z doubled
    back = restore_geometry(pre.mask.astype(np.uint8), pre.properties, 0, nearest=True)
    assert back.shape == a.shape
    assert np.array_equal(back > 0, volumes.brain_mask)


def _plans_for(root, tmp_path):
    _, plans = plan(root, tmp_path / "pre", progress=False, workers=1)
    return plans


def test_preprocess_is_idempotent_and_keeps_missing_channels_absent(raw_copy, tmp_path):
    missing = raw_copy / "imagesTr" / "PH_0001_0002.nii.gz"
    missing.unlink()
    store, plans = plan(raw_copy, tmp_path / "pre", progress=False, workers=1)
    dataset = RawDataset.load(raw_copy)
    assert preprocess_dataset(dataset, store, plans, workers=1, progress=False) == {"done": 6, "skipped": 0}
    assert preprocess_dataset(dataset, store, plans, workers=1, progress=False) == {"done": 0, "skipped": 6}
    assert preprocess_dataset(dataset, store, plans, overwrite=True, workers=1, progress=False)["done"] == 6
    case = load_preprocessed(store, "PH_0001")
    assert "T2" not in case.images and case.properties["available"] == ["T1", "T1Gd", "FLAIR"]
    assert len(list_preprocessed(store)) == 6


def test_stored_case_is_lossless(raw_dataset, store):
    plans = load_plans(store / "plans.json")
    fresh = preprocess_volumes(load_case(RawDataset.load(raw_dataset).case("PH_0002"), with_label=True), plans)
    stored = load_preprocessed(store, "PH_0002")
    assert stored.images.keys() == fresh.images.keys()
    for name, image in fresh.images.items():
        assert stored.images[name].dtype == np.float32 and np.array_equal(stored.images[name], image)
    assert stored.mask.dtype == bool and np.array_equal(stored.mask, fresh.mask)
    assert stored.label.dtype == np.uint8 and np.array_equal(stored.label, fresh.label)


def test_damaged_case_file_is_one_line_naming_it(raw_copy, tmp_path):
    store, plans = plan(raw_copy, tmp_path / "pre", progress=False, workers=1)
    preprocess_dataset(RawDataset.load(raw_copy), store, plans, workers=1, progress=False)
    (arrays_file,) = (store / "cases").glob("PH_0003.*zip")
    arrays_file.write_bytes(arrays_file.read_bytes()[: arrays_file.stat().st_size // 2])
    with pytest.raises(InputError) as exc:
        load_preprocessed(store, "PH_0003")
    assert str(arrays_file) in str(exc.value) and "rerun tsfnet preprocess" in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("order", ["C", "F"])
def test_brain_bbox_and_foreground_values_match_numpy(order):
    rng = np.random.default_rng(3)
    image = np.asarray(rng.normal(size=(9, 11, 7)), order=order)
    mask = np.zeros(image.shape, dtype=bool, order=order)
    mask[2:5, 3:10, 1:2] = rng.random((3, 7, 1)) > 0.3
    mask[6, 4, 5] = True
    coords = np.argwhere(mask)
    assert brain_bbox(mask) == [[int(lo), int(hi) + 1] for lo, hi in zip(coords.min(0), coords.max(0), strict=True)]
    assert np.array_equal(np.sort(foreground_values(image, mask)), np.sort(image[mask]))


def test_case_with_other_affine_fails_naming_the_file(raw_copy, tmp_path):
    path = raw_copy / "imagesTr" / "PH_0002_0003.nii.gz"
    image = nib.load(str(path))
    affine = image.affine.copy()
    affine[0, 3] += 5
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine), str(path))
    with pytest.raises(InputError) as exc:
        plan(raw_copy, tmp_path / "pre", progress=False, workers=1)
    assert "PH_0002_0003.nii.gz" in str(exc.value) and "affine differs" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_crop_or_pad_inverse():
    volume = np.arange(5 * 7 * 3, dtype=np.float32).reshape(5, 7, 3)
    offsets = geo.centre_offsets(volume.shape, [8, 4, 3])
    window = geo.crop_or_pad(volume, [8, 4, 3], offsets, -1)
    assert window.shape == (8, 4, 3)
    back = geo.uncrop_or_pad(window, volume.shape, offsets, -1)
    kept = back != -1
    assert np.array_equal(back[kept], volume[kept]) and kept.sum() == 5 * 4 * 3


def test_plans_schema_version_constant():
    assert SCHEMA_VERSION == 1


def test_median_scaled_keeps_the_scale_where_a_bright_lesion_moves_the_percentiles():
    """A T1Gd case whose enhancing tumour fills 2 % of the brain: its 99.5th percentile lands
    on the tumour and `percentile` halves the healthy tissue's scale; `median_scaled` keeps it."""
    from tsfnet.preprocessing.normalization import normalize

    rng = np.random.default_rng(0)
    mask = np.ones((40, 50, 50), dtype=bool)
    healthy = rng.normal(100.0, 5.0, mask.shape).astype(np.float32)
    lesioned = healthy.copy()
    lesioned[:, :10, :10] = 240.0  # 2 % of the brain, 2.4x the tissue
    settings = {"scheme": "median_scaled", "channels": {"T1Gd": {"lower": 0.8, "upper": 1.2}}}
    tissue = (slice(None), slice(20, None), slice(20, None))
    for scheme in ("percentile", "median_scaled"):
        chosen = settings if scheme == "median_scaled" else {"scheme": "percentile"}
        before = normalize(healthy, mask, chosen, channel="T1Gd")[0][tissue].mean()
        after = normalize(lesioned, mask, chosen, channel="T1Gd")[0][tissue].mean()
        if scheme == "percentile":
            assert before - after > 0.5  # the lesion moved the healthy tissue's values
        else:
            assert after == pytest.approx(before, abs=0.02)
    _, used = normalize(lesioned, mask, settings, channel="T1Gd")
    assert (used["lo"], used["hi"]) == pytest.approx((80.0, 120.0), rel=0.01)  # the channel's own ratios
    _, other = normalize(lesioned, mask, settings, channel="FLAIR")
    assert (other["lo"], other["hi"]) == pytest.approx((0.0, 200.0), rel=0.01)  # no ratios: the scheme's defaults


def test_plans_refuse_normalization_of_an_unknown_channel(store, tmp_path):
    plans = json.loads((store / "plans.json").read_text())
    plans["normalization"] = {"scheme": "median_scaled", "channels": {"T3": {"lower": 0.5, "upper": 1.5}}}
    (tmp_path / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(InputError, match=r"normalization\.channels"):
        load_plans(tmp_path / "plans.json")
