"""benchmarks/fusion_headroom.py: the ω grid, the fixed weighting and the sweep through the
product's predict and evaluate."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
import torch

from tests.conftest import import_benchmark
from tsfnet.demo import make_nested_scenarios
from tsfnet.fusion.tsf import TaskWeighting
from tsfnet.inference.model_folder import load_model_folder


@pytest.fixture(scope="module")
def headroom():
    yield from import_benchmark("fusion_headroom")


def test_grid_covers_the_simplex_and_starts_with_the_model_and_the_mean(headroom):
    grid = headroom.simplex_grid(3, Fraction(1, 2))
    assert len(grid) == 6 and all(sum(w) == pytest.approx(1.0) for w in grid)
    assert (1.0, 0.0, 0.0) in grid and (0.5, 0.0, 0.5) in grid
    assert headroom.candidate_weights(2, Fraction(1, 2)) == [None, (0.5, 0.5), (0.0, 1.0), (1.0, 0.0)]
    three = headroom.candidate_weights(3, Fraction(1, 4))
    assert three[1] == pytest.approx((1 / 3,) * 3) and len(three) == 2 + 15


def test_fixed_weighting_is_masked_by_the_sources_and_renormalised(headroom):
    weighting = headroom.FixedWeighting([0.2, 0.5, 0.6, 0.0])
    mask = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 0]])
    omega = weighting(torch.zeros(2, 8), mask)
    assert torch.allclose(omega, torch.tensor([[0.25, 0.0, 0.75, 0.0], [0.0, 0.5 / 1.1, 0.6 / 1.1, 0.0]]))


def test_sweep_predicts_every_weighting_and_restores_the_model(headroom, trained, raw_dataset, tmp_path):
    inputs, reference = tmp_path / "inputs", tmp_path / "reference"
    make_nested_scenarios(raw_dataset, inputs, reference)
    model = load_model_folder(trained.model_dir, torch.device("cpu"))
    steps = {2: Fraction(1, 2), 3: Fraction(1)}  # 3 sources: the corners only
    rows = headroom.sweep(model, inputs, reference, tmp_path / "work", steps)

    assert isinstance(model.model.fusion.weighting, TaskWeighting)  # the learnt weighting is back
    scenarios = {(r["case"], r["target"]) for r in rows}
    assert len(scenarios) == 4  # 2 test cases, each from 2 and from 3 inputs
    for row in rows:
        assert sum(row["weights"]) == pytest.approx(1.0, abs=1e-4)
    # the prediction reports the ω it was given: the fixed weighting reached the network
    grid_rows = [r for r in rows if r["kind"] == "grid" and len(r["sources"]) == 2]
    assert sorted(tuple(round(w, 4) for w in r["weights"]) for r in grid_rows) == sorted([(0.0, 1.0), (1.0, 0.0)] * 2)
    for case, target in scenarios:
        group = [r for r in rows if (r["case"], r["target"]) == (case, target)]
        one_source = [r for r in group if r["kind"] == "grid" and max(r["weights"]) > 0.999]
        assert len({r["psnr"] for r in one_source}) == len(one_source)  # each source alone synthesises differently

    summary = headroom.summarise(rows)
    for s in summary:
        group = [r for r in rows if (r["case"], r["target"]) == (s["case"], s["target"])]
        assert s["best"]["psnr"] == max(r["psnr"] for r in group) >= s["uniform"]["psnr"]
        assert set(s["alone"]) == set(s["sources"])
    text = "\n".join(headroom.report(_Args(), model, summary, 1.0))
    first = summary[0]
    assert f"| {first['case']} -> {first['target']} | {'+'.join(first['sources'])} |" in text
    assert "| 2 | 2 |" in text and "| 3 | 2 |" in text  # the means by number of inputs
    assert "Oracle headroom over the uniform ω" in text


class _Args:
    work, fusion, device, step2, step3 = Path("W"), "tsf", "cpu", Fraction(1, 2), Fraction(1, 2)
