"""Storage orientation: channels that store one grid in different voxel orders (LAS, LPS,
transposed) load as one case, the synthesis does not depend on the order, outputs come
back in the input's own order and file ending; grids that really differ still fail."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

from tsfnet.data.converters import convert
from tsfnet.data.dataset import RawCase, load_case
from tsfnet.data.orientation import canonical_geometry, from_canonical, orientation_codes, reorient, to_canonical
from tsfnet.data.volume_io import Geometry
from tsfnet.devices import resolve_device
from tsfnet.errors import InputError
from tsfnet.inference.model_folder import load_model_folder
from tsfnet.inference.predictor import predict_folder
from tsfnet.planning.fingerprint import case_fingerprint
from tsfnet.planning.plans import load_plans
from tsfnet.preprocessing.pipeline import preprocess_volumes, restore_geometry

SOURCE_CASE = "PH_0006"


def stored_as(image: nib.Nifti1Image, codes: str) -> nib.Nifti1Image:
    """The same image with its voxels stored in the orientation `codes` (affine adjusted)."""
    return image.as_reoriented(ornt_transform(io_orientation(image.affine), axcodes2ornt(tuple(codes))))


def ras_image(shape=(6, 7, 8), spacing=(1.0, 2.0, 3.0), seed=0) -> nib.Nifti1Image:
    data = np.zeros(shape, np.float32)
    data[1:-1, 1:-1, 1:-1] = np.random.default_rng(seed).uniform(1, 10, [s - 2 for s in shape])
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-10.0, 4.0, 7.0]
    return nib.Nifti1Image(data, affine)


def write_case(folder: Path, case: str, images: dict[int, nib.Nifti1Image], ending=".nii.gz") -> RawCase:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for channel, image in images.items():
        files[channel] = folder / f"{case}_{channel:04d}{ending}"
        nib.save(image, str(files[channel]))
    return RawCase(case, files)


@pytest.mark.parametrize("codes", ["RAS", "LAS", "LPS", "SAR", "PIL"])
def test_canonical_round_trip_matches_nibabel(codes):
    image = stored_as(ras_image(), codes)
    data, geometry = np.asarray(image.dataobj), Geometry(image.shape, image.affine)
    canonical = nib.as_closest_canonical(image)
    assert orientation_codes(geometry) == codes
    assert canonical_geometry(geometry).shape == canonical.shape
    assert np.allclose(canonical_geometry(geometry).affine, canonical.affine)
    assert np.array_equal(to_canonical(data, geometry), np.asarray(canonical.dataobj))
    assert np.array_equal(from_canonical(to_canonical(data, geometry), geometry), data)
    ras = ras_image()
    assert np.array_equal(reorient(data, geometry, Geometry(ras.shape, ras.affine)), np.asarray(ras.dataobj))


def test_mixed_orientations_load_on_the_first_channels_grid(tmp_path):
    """Channel 1 LAS, channel 2 transposed (SAR): both land on channel 0's RAS grid."""
    images = {c: ras_image(seed=c) for c in range(4)}
    stored = {0: images[0], 1: stored_as(images[1], "LAS"), 2: stored_as(images[2], "SAR"), 3: images[3]}
    label = tmp_path / "M.nii.gz"
    nib.save(stored_as(images[3], "LPS"), str(label))
    volumes = load_case(RawCase("M", write_case(tmp_path, "M", stored).channel_files, label), with_label=True)
    for channel in range(4):
        assert np.array_equal(volumes.images[channel], np.asarray(images[channel].dataobj))
    assert np.array_equal(volumes.label, np.rint(np.asarray(images[3].dataobj)).astype(np.uint8))
    assert volumes.geometry.shape == images[0].shape and np.allclose(volumes.geometry.affine, images[0].affine)


def test_reference_in_another_orientation_keeps_its_voxel_order(tmp_path):
    images = {c: ras_image(seed=c) for c in range(2)}
    volumes = load_case(write_case(tmp_path, "M", {0: stored_as(images[0], "LPS"), 1: images[1]}))
    expected = np.asarray(stored_as(images[1], "LPS").dataobj)
    assert orientation_codes(volumes.geometry) == "LPS"
    assert np.array_equal(volumes.images[1], expected)


def shifted(affine: np.ndarray) -> np.ndarray:
    moved = affine.copy()
    moved[0, 3] += 5.0
    return moved


def rotated_about_z(affine: np.ndarray, degrees: float = 10.0) -> np.ndarray:
    angle = np.radians(degrees)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return rotation @ affine


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (shifted, "origin -5,4,7 vs -10,4,7"),
        (lambda a: a @ np.diag([1.0, 1.0, 1.2, 1.0]), "spacing 1,2,3.6 vs 1,2,3"),
        (rotated_about_z, "direction RAS vs RAS, 10° apart"),
    ],
    ids=["shifted", "spacing", "rotated"],
)
@pytest.mark.parametrize("codes", ["RAS", "LAS"])
def test_grids_that_really_differ_fail_in_one_line(tmp_path, change, expected, codes):
    reference = ras_image(seed=0)
    other = ras_image(seed=1)
    other = stored_as(nib.Nifti1Image(np.asarray(other.dataobj), change(other.affine)), codes)
    case = write_case(tmp_path, "D", {0: reference, 1: other})
    with pytest.raises(InputError) as exc:
        load_case(case)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(str(case.channel_files[1]))
    assert "affine differs from D_0000.nii.gz after reorienting both to RAS" in message
    assert expected.replace("RAS vs", f"{codes} vs") in message
    assert f"direction {codes} vs RAS" in message


def test_other_shape_names_both_orientations(tmp_path):
    case = write_case(tmp_path, "S", {0: ras_image(), 1: stored_as(ras_image(shape=(6, 7, 9)), "SAR")})
    with pytest.raises(InputError) as exc:
        load_case(case)
    assert str(exc.value).endswith("S_0001.nii.gz: shape differs from S_0000.nii.gz (9x7x6 SAR vs 6x7x8 RAS)")


def test_degenerate_affine_has_no_orientation_and_fails_in_one_line(tmp_path):
    flat = nib.Nifti1Image(np.asarray(ras_image().dataobj), None)
    flat.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=1)  # y axis of zero length (no valid qform exists)
    case = write_case(tmp_path, "Z", {0: flat})
    with pytest.raises(InputError, match=r"Z_0000\.nii\.gz: affine is degenerate"):
        load_case(case)


def test_planning_and_preprocessing_see_ras_order(tmp_path):
    """Spacing and boxes per RAS axis, identical network input, outputs in the stored order."""
    ras = {c: ras_image(seed=c) for c in range(2)}
    sar = {c: stored_as(image, "SAR") for c, image in ras.items()}
    cases = {codes: write_case(tmp_path / codes, "P", images) for codes, images in (("RAS", ras), ("SAR", sar))}
    prints = {codes: case_fingerprint(case, ["T1", "T2"]) for codes, case in cases.items()}
    assert prints["SAR"]["spacing"] == pytest.approx([1.0, 2.0, 3.0])
    assert {k: v for k, v in prints["SAR"].items() if k != "_samples"} == {
        k: v for k, v in prints["RAS"].items() if k != "_samples"
    }
    plans = {
        "channel_names": ["T1", "T2"],
        "target_spacing": [1.0, 1.5, 2.0],
        "crop_size": [8, 16, 16],
        "normalization": {"scheme": "percentile", "lower": 0.5, "upper": 99.5},
    }
    pre = {codes: preprocess_volumes(load_case(case), plans) for codes, case in cases.items()}
    for name in ("T1", "T2"):
        assert np.array_equal(pre["SAR"].images[name], pre["RAS"].images[name])
    restored = restore_geometry(pre["SAR"].mask.astype(np.uint8), pre["SAR"].properties, 0, nearest=True)
    assert restored.shape == sar[0].shape
    assert np.array_equal(restored > 0, np.asarray(sar[0].dataobj) != 0)


# ---- prediction with the session's tiny model --------------------------------------------------


@pytest.fixture(scope="module")
def model(trained):
    return load_model_folder(trained.model_dir, resolve_device("cpu"))


def source_images(trained) -> dict[int, nib.Nifti1Image]:
    raw = Path(load_plans(trained.model_dir / "plans.json")["raw_path"]) / "imagesTs"
    return {c: nib.load(str(raw / f"{SOURCE_CASE}_{c:04d}.nii.gz")) for c in (0, 1, 3)}


def predict(model, folder: Path, images: dict[int, nib.Nifti1Image], ending=".nii.gz") -> nib.Nifti1Image:
    write_case(folder / "in", "A", images, ending)
    report = predict_folder(model, folder / "in", folder / "out", progress=False)
    assert not report.failed and [p.name for p in report.written] == [f"A_T2{ending}"]
    return nib.load(str(report.written[0]))


def in_ras(image: nib.Nifti1Image) -> np.ndarray:
    return np.asarray(nib.as_closest_canonical(image).dataobj)


def test_synthesis_does_not_depend_on_storage_orientation(trained, model, tmp_path):
    images = {c: stored_as(image, "RAS") for c, image in source_images(trained).items()}
    results = {
        codes: predict(model, tmp_path / codes, {c: stored_as(image, codes) for c, image in images.items()})
        for codes in ("RAS", "LAS", "PIL")
    }
    for codes, result in results.items():
        reference = stored_as(images[0], codes)
        assert result.shape == reference.shape and np.allclose(result.affine, reference.affine, atol=1e-5)
        np.testing.assert_allclose(in_ras(result), in_ras(results["RAS"]), atol=1e-5)
    assert np.abs(in_ras(results["RAS"])).max() > 0.5  # a real synthesis, not an empty one


def test_mixed_orientations_predict_in_the_first_channels_geometry(trained, model, tmp_path):
    images = {c: stored_as(image, "LAS") for c, image in source_images(trained).items()}
    mixed = {0: images[0], 1: stored_as(images[1], "RAS"), 3: stored_as(images[3], "PIL")}
    result = predict(model, tmp_path / "mixed", mixed)
    same = predict(model, tmp_path / "same", images)
    assert result.shape == images[0].shape and np.allclose(result.affine, images[0].affine, atol=1e-5)
    tsem = nib.load(str(tmp_path / "mixed" / "out" / "A_T2_tsem.nii.gz"))
    assert tsem.shape == images[0].shape and np.allclose(tsem.affine, images[0].affine, atol=1e-5)
    np.testing.assert_allclose(np.asarray(result.dataobj), np.asarray(same.dataobj), atol=1e-5)


def test_nii_inputs_give_nii_outputs(trained, model, tmp_path):
    predict(model, tmp_path, source_images(trained), ending=".nii")
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["A_T2.nii", "A_T2_tsem.nii", "A_T2_weights.json"]
    assert json.loads((tmp_path / "out" / "A_T2_weights.json").read_text())["synthesis"] == "A_T2.nii"


def test_convert_keeps_the_sources_file_ending(tmp_path):
    for suffix in ("t1", "t1ce", "t2", "flair"):
        path = tmp_path / "src" / "BraTS2021_00000" / f"BraTS2021_00000_{suffix}.nii"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(ras_image(), str(path))
    convert("brats2021", tmp_path / "src", tmp_path / "dst", progress=False)
    assert json.loads((tmp_path / "dst" / "dataset.json").read_text())["file_ending"] == ".nii"
    assert sorted(os.listdir(tmp_path / "dst" / "imagesTr"))[0] == "BraTS2021_00000_0000.nii"
