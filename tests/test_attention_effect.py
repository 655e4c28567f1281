"""benchmarks/attention_effect.py: f_A held at zero, restored after, and both syntheses
scored through the product's predict and evaluate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import import_benchmark
from tsfnet.demo import make_nested_scenarios
from tsfnet.inference.model_folder import load_model_folder
from tsfnet.nets.attention import TaskAttention


@pytest.fixture(scope="module")
def effect():
    yield from import_benchmark("attention_effect")


def decode_both(model) -> tuple[torch.Tensor, torch.Tensor]:
    """G(f̂ + f_A) and G(f̂) of random slices from two sources."""
    torch.manual_seed(0)
    images = torch.randn(2, model.n_sequences, 1, 32, 32)
    mask = torch.zeros(2, model.n_sequences)
    mask[:, [0, 2]] = 1
    with torch.inference_mode():
        out = model.decode(model.encode(images, mask, (0, 2)), mask, torch.tensor([1]))
    return out.output, out.base


def test_attention_off_zeroes_f_a_inside_the_block_only(effect, trained):
    model = load_model_folder(trained.model_dir, torch.device("cpu"))
    output, base = decode_both(model.model)
    assert not torch.allclose(output, base)  # a trained f_A changes the synthesis
    with effect.attention_off(model):
        output_off, base_off = decode_both(model.model)
    assert torch.equal(output_off, base_off) and torch.allclose(base_off, base)  # G(f̂) itself untouched
    assert isinstance(model.model.fusion.attention, TaskAttention)  # restored
    assert torch.equal(decode_both(model.model)[0], output)


def test_compare_scores_every_scenario_with_and_without_f_a(effect, trained, raw_dataset, tmp_path):
    inputs, reference = tmp_path / "inputs", tmp_path / "reference"
    make_nested_scenarios(raw_dataset, inputs, reference)
    model = load_model_folder(trained.model_dir, torch.device("cpu"))
    rows = effect.compare(model, inputs, reference, tmp_path / "work")

    assert sorted(r["n_inputs"] for r in rows) == [1, 1, 2, 2, 3, 3]  # 2 test cases from 1, 2 and 3 inputs
    assert any(r["psnr"] != r["psnr_off"] for r in rows)
    assert all(r["psnr_lesion"] == r["psnr_lesion"] for r in rows)  # the phantom's labels: not NaN
    text = "\n".join(effect.report(_Args(), model, rows, 1.0))
    first = rows[0]
    difference = f"{first['psnr'] - first['psnr_off']:+.2f}"
    assert f"| {first['case']} -> {first['target']} | {first['n_inputs']} | {first['psnr']:.2f} | " in text
    assert difference in text and "| 3 | 2 |" in text


class _Args:
    work, fusion, device = Path("W"), "tsf", "cpu"
