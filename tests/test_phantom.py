"""The phantom generator: deterministic, BraTS-like, with MR contrasts that behave."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from tsfnet.data.dataset import RawDataset, load_case
from tsfnet.data.phantom import (
    BRATS_SHAPE,
    LABELS,
    SEQUENCES,
    _nilearn_data_dir,
    fit_to_shape,
    generate_case,
    load_template,
    write_dataset,
)


def test_same_seed_same_case_other_seed_other_case():
    a = generate_case(np.random.default_rng(7), downsample=6)
    b = generate_case(np.random.default_rng(7), downsample=6)
    c = generate_case(np.random.default_rng(8), downsample=6)
    for name in a.images:
        assert np.array_equal(a.images[name], b.images[name])
    assert np.array_equal(a.label, b.label)
    assert not np.array_equal(a.images["T1"], c.images["T1"])


def test_downsampled_case_is_about_32_cubed_with_a_tumour():
    case = generate_case(np.random.default_rng(3), downsample=6)
    assert all(28 <= s <= 40 for s in case.label.shape)
    assert set(np.unique(case.label)) <= set(LABELS.values())
    assert (case.label == LABELS["ED"]).any()
    assert np.allclose(np.abs(np.diag(case.affine))[:3], 6.0)


def test_skull_stripped_background_and_positive_brain():
    case = generate_case(np.random.default_rng(0), downsample=4)
    brain = case.images["T1"] > 0
    for image in case.images.values():
        assert image.min() >= 0
        assert ((image > 0) == brain).mean() > 0.99  # same brain support in every sequence


def test_contrasts_look_like_their_sequences():
    case = generate_case(np.random.default_rng(2), downsample=3)
    template = load_template(3)
    healthy = case.label == 0
    # Confident voxels of the (undeformed) template survive the small warp well enough.
    regions = {
        "WM": (template.wm > 0.9) & healthy,
        "GM": (template.gm > 0.9) & healthy,
        "CSF": ((template.mask - template.gm - template.wm) > 0.9) & healthy,
    }

    def level(sequence: str, tissue: str) -> float:
        values = case.images[sequence][regions[tissue]]
        return float(np.median(values[values > 0]))

    assert level("T1", "WM") > level("T1", "GM") > level("T1", "CSF")
    assert level("T2", "CSF") > level("T2", "GM") > level("T2", "WM")
    assert level("FLAIR", "CSF") < level("FLAIR", "WM")  # fluid suppressed


def test_tumour_shows_enhancement_and_oedema():
    case = generate_case(np.random.default_rng(5), downsample=2)
    label = case.label
    et, ed = label == LABELS["ET"], label == LABELS["ED"]
    healthy = (label == 0) & (case.images["T1"] > 0)

    def ratio(sequence, region):  # scanner scaling differs per sequence: compare to healthy tissue
        return np.median(case.images[sequence][region]) / np.median(case.images[sequence][healthy])

    assert ratio("T1Gd", et) > 1.5 * ratio("T1", et)  # gadolinium enhancement
    assert ratio("FLAIR", ed) > 1.2  # bright oedema
    assert ratio("T2", ed) > 1.2


def test_fit_to_brats_shape_keeps_world_coordinates():
    case = generate_case(np.random.default_rng(0), downsample=1)
    fitted = fit_to_shape(case, BRATS_SHAPE)
    assert fitted.label.shape == BRATS_SHAPE
    voxel = np.argwhere(fitted.label > 0)[0]
    world = fitted.affine @ np.append(voxel, 1)
    original = np.linalg.solve(case.affine, world)[:3].round().astype(int)
    assert case.label[tuple(original)] == fitted.label[tuple(voxel)]


def test_written_dataset_is_a_valid_raw_dataset(tmp_path):
    root = write_dataset(tmp_path, n_cases=4, downsample=6, seed=0, missing_rate=0.5, n_test=1)
    dataset = RawDataset.load(root)
    assert dataset.channel_names == ["T1", "T1Gd", "T2", "FLAIR"]
    assert len(dataset.cases) == 4
    assert any(len(c.available) < 4 for c in dataset.cases)  # missing_rate dropped some
    assert all(c.label_file is not None for c in dataset.cases)
    test_cases = RawDataset.load(root, images_folder="imagesTs").cases
    assert [len(c.available) for c in test_cases] == [4]  # test cases stay complete
    volumes = load_case(dataset.cases[0], with_label=True)
    assert volumes.label is not None and volumes.label.shape == volumes.geometry.shape


def test_writing_on_a_thread_keeps_every_case_its_seed_draws(tmp_path):
    """Cases are written while the next is drawn; the files must hold exactly the cases that
    one generator draws in order (each case, then its 4 keep-draws)."""
    root = write_dataset(tmp_path, n_cases=2, downsample=6, seed=3)
    rng = np.random.default_rng(3)
    for index in range(2):
        expected = generate_case(rng, downsample=6)
        rng.uniform(size=4)
        case = load_case(RawDataset.load(root).cases[index], with_label=True)
        assert all(np.array_equal(case.images[c], expected.images[s]) for c, s in enumerate(SEQUENCES))
        assert np.array_equal(case.label, expected.label)


def test_a_failed_phantom_write_is_raised(tmp_path, monkeypatch):
    from tsfnet.data import volume_io

    def refuse(path, *args, **kwargs):
        raise OSError(f"{path}: disk full")

    monkeypatch.setattr(volume_io, "write_volume", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(tmp_path, n_cases=1, downsample=6)


def test_the_template_is_read_without_importing_nilearn():
    """Only nilearn's data files are needed; importing it would pull in scikit-learn and pandas."""
    code = (
        "import sys; from tsfnet.data.phantom import load_template; load_template(6); print('nilearn' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_a_missing_nilearn_is_named(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install nilearn"):
        _nilearn_data_dir()
