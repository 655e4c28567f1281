"""Reading volumes and raw datasets, and every bad input the foundation must reject
with one line naming the file."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from tsfnet.data.dataset import RawDataset, load_case
from tsfnet.data.volume_io import Geometry, read_volume, write_volume
from tsfnet.errors import InputError


def save(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.eye(4) if affine is None else affine), str(path))
    return path


def one_line(exc: pytest.ExceptionInfo, path) -> str:
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_nifti_round_trip_keeps_affine(tmp_path):
    affine = np.diag([1.5, 1.0, 2.0, 1.0])
    affine[:3, 3] = [-10, 5, 3]
    data = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    path = write_volume(tmp_path / "a.nii.gz", data, Geometry((5, 6, 7), affine))
    back, geometry = read_volume(path)
    assert np.array_equal(back, data)
    assert np.allclose(geometry.affine, affine)
    assert geometry.spacing == pytest.approx((1.5, 1.0, 2.0))


def test_write_refuses_to_overwrite(tmp_path):
    path = write_volume(tmp_path / "a.nii.gz", np.zeros((2, 2, 2)), Geometry((2, 2, 2), np.eye(4)))
    with pytest.raises(InputError, match="--overwrite"):
        write_volume(path, np.ones((2, 2, 2)), Geometry((2, 2, 2), np.eye(4)))
    assert read_volume(path)[0].max() == 0


def test_nrrd_read_through_simpleitk_gives_ras_affine(tmp_path):
    import SimpleITK as sitk

    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)  # (z, y, x)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.5, 1.0, 2.0))
    image.SetOrigin((1.0, 2.0, 3.0))
    sitk.WriteImage(image, str(tmp_path / "v.nrrd"))
    data, geometry = read_volume(tmp_path / "v.nrrd")
    assert data.shape == (4, 3, 2)
    assert data[1, 2, 0] == array[0, 2, 1]
    assert np.allclose(np.diag(geometry.affine)[:3], [-0.5, -1.0, 2.0])  # LPS -> RAS flips x, y
    assert np.allclose(geometry.affine[:3, 3], [-1.0, -2.0, 3.0])


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(gzip.compress(b"not a nifti at all" * 10)[:40]), "cannot read"),
        (lambda p: save(p, np.zeros((4, 4, 4, 3))), "expected a 3D volume"),
        (lambda p: save(p, np.where(np.eye(4)[:, :, None] > 0, np.nan, 1.0) * np.ones((4, 4, 4))), "NaN/inf"),
        (lambda p: save(p, np.full((4, 4, 4), np.inf)), "NaN/inf"),
    ],
    ids=["zero-byte", "truncated", "4d", "nan", "inf"],
)
def test_bad_volume_files(tmp_path, make, problem):
    path = tmp_path / "bad.nii.gz"
    make(path)
    with pytest.raises(InputError) as exc:
        read_volume(path)
    assert problem in one_line(exc, path)


def test_singleton_fourth_axis_is_accepted(tmp_path):
    data, _ = read_volume(save(tmp_path / "a.nii.gz", np.ones((3, 3, 3, 1))))
    assert data.shape == (3, 3, 3)


def write_raw(root, files: dict[str, np.ndarray], meta: dict | None = None, affines: dict | None = None):
    (root / "imagesTr").mkdir(parents=True)
    meta = meta if meta is not None else {"channel_names": {"0": "T1", "1": "T2"}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    for name, data in files.items():
        save(root / "imagesTr" / name, data, (affines or {}).get(name))
    return root


def test_dataset_lists_cases_and_missing_channels(tmp_path):
    root = write_raw(
        tmp_path / "D",
        {
            "A_0000.nii.gz": np.ones((3, 3, 3)),
            "A_0001.nii.gz": np.ones((3, 3, 3)),
            "B_0001.nii.gz": np.ones((3, 3, 3)),
        },
    )
    dataset = RawDataset.load(root)
    assert dataset.channel_names == ["T1", "T2"]
    assert [(c.case_id, c.available) for c in dataset.cases] == [("A", (0, 1)), ("B", (1,))]
    volumes = load_case(dataset.case("B"))
    assert set(volumes.images) == {1}


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        ({"file_ending": ".nii.gz"}, "missing key 'channel_names'"),
        ({"channel_names": ["T1", "T2"]}, "must be a non-empty object"),
        ({"channel_names": {"0": "T1", "2": "T2"}}, "keys must be 0..1"),
        ({"channel_names": {"0": "T1"}, "file_ending": 3}, "'file_ending' must be a string"),
        ({"channel_names": {"0": "T1"}, "labels": [1, 2]}, "'labels' must be an object"),
    ],
    ids=["no-channel-names", "list", "gap", "ending-type", "labels-type"],
)
def test_bad_dataset_json(tmp_path, meta, problem):
    root = write_raw(tmp_path / "D", {"A_0000.nii.gz": np.ones((3, 3, 3))}, meta)
    with pytest.raises(InputError) as exc:
        RawDataset.load(root)
    assert problem in one_line(exc, root / "dataset.json")


def test_missing_dataset_json(tmp_path):
    (tmp_path / "D").mkdir()
    with pytest.raises(InputError, match=r"missing dataset\.json"):
        RawDataset.load(tmp_path / "D")


def test_invalid_json(tmp_path):
    root = write_raw(tmp_path / "D", {"A_0000.nii.gz": np.ones((3, 3, 3))})
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        RawDataset.load(root)


def test_unknown_channel_index(tmp_path):
    root = write_raw(tmp_path / "D", {"A_0000.nii.gz": np.ones((3, 3, 3)), "A_0005.nii.gz": np.ones((3, 3, 3))})
    with pytest.raises(InputError) as exc:
        RawDataset.load(root)
    assert "unknown channel index 5" in one_line(exc, root / "imagesTr" / "A_0005.nii.gz")


def test_file_name_without_channel(tmp_path):
    root = write_raw(tmp_path / "D", {"A_0000.nii.gz": np.ones((3, 3, 3)), "notes.nii.gz": np.ones((3, 3, 3))})
    with pytest.raises(InputError) as exc:
        RawDataset.load(root)
    assert "does not match CASE_XXXX" in one_line(exc, root / "imagesTr" / "notes.nii.gz")


def test_empty_images_folder(tmp_path):
    root = write_raw(tmp_path / "D", {})
    with pytest.raises(InputError) as exc:
        RawDataset.load(root)
    assert "empty" in one_line(exc, root / "imagesTr")


def test_channels_with_different_shapes(tmp_path):
    root = write_raw(tmp_path / "D", {"A_0000.nii.gz": np.ones((3, 3, 3)), "A_0001.nii.gz": np.ones((3, 3, 4))})
    with pytest.raises(InputError) as exc:
        load_case(RawDataset.load(root).case("A"))
    assert "shape differs" in one_line(exc, root / "imagesTr" / "A_0001.nii.gz")


def test_channels_with_different_affines(tmp_path):
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    root = write_raw(
        tmp_path / "D",
        {"A_0000.nii.gz": np.ones((3, 3, 3)), "A_0001.nii.gz": np.ones((3, 3, 3))},
        affines={"A_0001.nii.gz": shifted},
    )
    with pytest.raises(InputError) as exc:
        load_case(RawDataset.load(root).case("A"))
    assert "affine differs" in one_line(exc, root / "imagesTr" / "A_0001.nii.gz")


def test_affines_within_tolerance_are_accepted(tmp_path):
    nudged = np.eye(4)
    nudged[0, 3] = 5e-4
    root = write_raw(
        tmp_path / "D",
        {"A_0000.nii.gz": np.ones((3, 3, 3)), "A_0001.nii.gz": np.ones((3, 3, 3))},
        affines={"A_0001.nii.gz": nudged},
    )
    assert set(load_case(RawDataset.load(root).case("A")).images) == {0, 1}
