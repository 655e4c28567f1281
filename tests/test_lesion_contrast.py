"""benchmarks/lesion_contrast.py: each tumour tissue's contrast against the brain around it,
and the phantom fact docs/results.md reads from it (the oedema is invisible in T1 and T1Gd)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import import_benchmark
from tsfnet.data.phantom import LABELS, generate_case


@pytest.fixture(scope="module")
def contrast():
    yield from import_benchmark("lesion_contrast")


def test_cohens_d_is_measured_against_the_brain_next_to_the_tumour_only(contrast):
    label = np.zeros((12, 12, 3), np.uint8)
    label[5:7, 5:7, 1] = LABELS["ED"]
    image = np.full(label.shape, 100.0)  # far from the tumour: must not count
    image[3:9, 3:9, :] = 1.0
    image[3:9:2, 3:9, :] = 3.0  # the brain around the tumour: 1 and 3, mean 2, sd 1
    image[label == LABELS["ED"]] = 4.5
    found = contrast.contrasts({"T1": image}, label, reach=2)
    assert found == {("oedema", "T1"): pytest.approx(2.5)}  # no core, no rim: left out


def test_the_phantoms_oedema_shows_in_t2_and_flair_only(contrast):
    case = generate_case(np.random.default_rng(3), downsample=2)
    d = contrast.contrasts(case.images, case.label, reach=3)
    assert abs(d["oedema", "T1"]) < 1 and abs(d["oedema", "T1Gd"]) < 1
    assert d["oedema", "T2"] > contrast.SHOWS_D and d["oedema", "FLAIR"] > contrast.SHOWS_D
    assert d["enhancing rim", "T1Gd"] > 3 * d["enhancing rim", "FLAIR"] > 3 * contrast.SHOWS_D
