"""BraTS 2021 and BraSyn converters: names mapped, missing sequences kept and reported,
the source never modified."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from tsfnet.data.converters import convert
from tsfnet.data.dataset import RawDataset
from tsfnet.errors import InputError


def make(path, value=1.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full((3, 3, 3), value, np.float32), np.eye(4)), str(path))


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("layout", "case", "sep", "suffixes"),
    [
        ("brats2021", "BraTS2021_00000", "_", ["t1", "t1ce", "t2", "flair"]),
        ("brasyn", "BraTS-GLI-00000-000", "-", ["t1n", "t1c", "t2w", "t2f"]),
    ],
)
def test_convert(tmp_path, layout, case, sep, suffixes):
    src = tmp_path / "src"
    for i, suffix in enumerate(suffixes):
        make(src / case / f"{case}{sep}{suffix}.nii.gz", i + 1)
    make(src / case / f"{case}{sep}seg.nii.gz", 2)
    other = case[:-1] + "1"
    for suffix in suffixes[:3]:  # FLAIR missing
        make(src / other / f"{other}{sep}{suffix}.nii.gz")
    before = snapshot(src)
    report = convert(layout, src, tmp_path / "Dataset002_X", progress=False)
    assert report.converted == 2
    assert report.incomplete == {other: ["FLAIR"]}
    assert snapshot(src) == before
    dataset = RawDataset.load(tmp_path / "Dataset002_X")
    assert dataset.channel_names == ["T1", "T1Gd", "T2", "FLAIR"]
    assert {c.case_id: c.available for c in dataset.cases} == {case: (0, 1, 2, 3), other: (0, 1, 2)}
    assert dataset.case(case).label_file is not None
    t1ce = nib.load(str(dataset.case(case).channel_files[1])).get_fdata()
    assert t1ce.max() == 2  # the second suffix landed in channel 1
    assert json.loads((tmp_path / "Dataset002_X" / "dataset.json").read_text())["numTraining"] == 2


def test_convert_rejects_empty_source(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(InputError, match="no brats2021 files"):
        convert("brats2021", tmp_path / "src", tmp_path / "dst", progress=False)


def test_convert_refuses_destination_inside_source(tmp_path):
    make(tmp_path / "src" / "A" / "A_t1.nii.gz")
    with pytest.raises(InputError, match="outside the source"):
        convert("brats2021", tmp_path / "src", tmp_path / "src" / "out", progress=False)
