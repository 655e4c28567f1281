"""`tsf-ms`: TSF's weighting at every encoder scale, fused skips into G, ω per scale and
the TSEM; trained by the method's own two stages and used through the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import pytest
import torch

from tests.test_baselines import SIZE, batch_of, plans
from tests.test_cli import tsfnet
from tsfnet.fusion.tsf_ms import MultiScaleOutput, MultiScaleTSF, scale_task_weights
from tsfnet.model import build_model
from tsfnet.planning.plans import load_plans
from tsfnet.training.stages import FinetuneStage, PretrainStage

NAMES = ["T1", "T1Gd", "T2", "FLAIR"]
SOURCES = [[0], [1, 3], [0, 1, 2], [2, 3]]
TARGETS = [2, 0, 3, 1]


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture
def model() -> MultiScaleTSF:
    return build_model(plans(context=3), "tsf-ms").eval()


def synthesise(model: MultiScaleTSF, images: torch.Tensor, mask: torch.Tensor, target: torch.Tensor):
    with torch.no_grad():
        return model.synthesise(images, mask, target)


def test_is_the_two_stage_method_with_per_scale_fusion(model):
    assert isinstance(model, MultiScaleTSF) and model.stages == ("pretrain", "finetune")
    assert model.scale_strides == [1, 2, 4]  # TINY_NETWORK: strides 1, 2, 2
    assert len(model.fusion.skips) == 2  # full and 1/2 resolution; the bottleneck is TSF's own
    features = model.encode(torch.rand(2, 4, 3, SIZE, SIZE), torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]]))
    assert [tuple(f.shape) for f in features] == [(2, 4, 8, 32, 32), (2, 4, 16, 16, 16), (2, 4, 32, 8, 8)]
    assert all(torch.equal(f[0, [1, 3]], torch.zeros_like(f[0, [1, 3]])) for f in features)


def test_only_sources_matter(model):
    batch = batch_of(SOURCES, TARGETS, context=3)
    out = synthesise(model, batch.images, batch.source_mask, batch.target)
    assert isinstance(out, MultiScaleOutput) and out.output.shape == (4, 1, SIZE, SIZE)
    assert out.output.abs().max() <= 1
    noisy = batch.images.clone()
    noisy[batch.source_mask == 0] = torch.randn_like(noisy[batch.source_mask == 0])
    again = synthesise(model, noisy, batch.source_mask, batch.target)
    assert torch.equal(out.output, again.output) and torch.equal(out.base, again.base)
    assert torch.equal(out.scale_weights, again.scale_weights)


def test_one_omega_per_scale_summing_to_one_over_the_sources(model):
    batch = batch_of(SOURCES, TARGETS, context=3)
    out = synthesise(model, batch.images, batch.source_mask, batch.target)
    weights = out.scale_weights
    assert weights.shape == (4, 3, 4)  # (B, scales, N)
    torch.testing.assert_close(weights.sum(dim=2), torch.ones(4, 3))
    off = (batch.source_mask == 0).unsqueeze(1).expand_as(weights)
    assert torch.equal(weights[off], torch.zeros_like(weights[off]))
    assert (weights[~off] > 0).all()
    # The reported (B, N) ω is the mean over the scales, still a distribution over the sources.
    torch.testing.assert_close(out.weights, weights.mean(dim=1))
    torch.testing.assert_close(out.weights.sum(dim=1), torch.ones(4))
    # The scales have their own weightings: ω differs between them (fresh weights already).
    assert not torch.allclose(weights[2, 0], weights[2, 2])


def test_tsem_is_present_and_is_what_attention_changed(model):
    batch = batch_of(SOURCES, TARGETS, context=3)
    out = synthesise(model, batch.images, batch.source_mask, batch.target)
    assert out.tsem is not None and out.tsem.shape == (4, 1, SIZE, SIZE)
    assert (out.tsem >= 0).all() and out.tsem.max() > 0
    torch.testing.assert_close(out.tsem, (out.output - out.base).abs())


def test_one_source_starts_where_stage_one_ended(model):
    """ω over one source is exactly 1 at every scale, so G(f̂) is the one-to-one output."""
    batch = batch_of([[0], [3]], [2, 1], context=3)
    out = synthesise(model, batch.images, batch.source_mask, batch.target)
    assert torch.equal(out.scale_weights, batch.source_mask.unsqueeze(1).expand(2, 3, 4))
    with torch.no_grad():
        single = model(batch.images[torch.arange(2), torch.tensor([0, 3])], batch.target, phase="one_to_one")
    torch.testing.assert_close(out.base, single, rtol=1e-4, atol=1e-5)


def test_skips_reach_g(model):
    """The fused full-resolution features change the synthesis (G is not bottleneck-only)."""
    batch = batch_of([[0, 1]], [2], context=3)
    with torch.no_grad():
        features = model.encode(batch.images, batch.source_mask)
        out = model.decode(features, batch.source_mask, batch.target)
        features[0] = features[0] + torch.randn_like(features[0]) * batch.source_mask.view(1, 4, 1, 1, 1)
        changed = model.decode(features, batch.source_mask, batch.target)
    assert not torch.allclose(out.output, changed.output)


def test_shared_task_runs_dense_like_per_sample(model):
    """Inference passes a (1,) target for a batch that shares its task: the same result."""
    mask = torch.tensor([[1.0, 0, 1, 0]] * 3)
    images = torch.rand(3, 4, 3, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        features = model.encode(images, mask)
        dense = model.decode(features, mask, torch.tensor([1]))
        grouped = model.decode(features, mask, torch.tensor([1, 1, 1]))
    torch.testing.assert_close(dense.output, grouped.output, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dense.scale_weights, grouped.scale_weights)


def test_three_d_patches():
    three_d = plans()
    three_d["configurations"]["3d"] = {"patch_size": [16, 16, 16], "batch_size": 2}
    model = build_model(three_d, "tsf-ms", config="3d").eval()
    images = torch.rand(2, 4, 1, 16, 16, 16) * 2 - 1
    out = synthesise(model, images, torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]]), torch.tensor([1, 3]))
    assert out.output.shape == out.tsem.shape == (2, 1, 16, 16, 16)
    assert out.scale_weights.shape == (2, 3, 4)


def test_odd_sizes_keep_their_shape():
    model = build_model(plans(), "tsf-ms").eval()
    out = synthesise(model, torch.rand(1, 4, 1, 30, 26), torch.tensor([[1.0, 1, 0, 0]]), torch.tensor([3]))
    assert out.output.shape == (1, 1, 30, 26)


def test_scale_task_weights_for_every_task(model):
    rows = scale_task_weights(model, NAMES)
    assert len(rows) == 28
    for row in rows:
        assert row["strides"] == [1, 2, 4] and set(row["weights"]) == set(row["sources"])
        per_scale = torch.tensor(list(row["weights"].values()))  # (sources, scales)
        torch.testing.assert_close(per_scale.sum(dim=0), torch.ones(3))


def test_stages_train_what_they_should():
    model = build_model(plans(context=3), "tsf-ms")
    batch = batch_of([[0], [1, 3]], [2, 0], context=3)
    criterion = torch.nn.L1Loss()
    pretrain = PretrainStage()
    fusion_before = [p.detach().clone() for p in model.fusion.parameters()]
    merges_before = [p.detach().clone() for p in model.head.decoder.merges.parameters()]
    pretrain.step(model, batch, criterion, pretrain.optimizers(model, 1e-3), 0.0)
    assert all(torch.equal(a, b) for a, b in zip(fusion_before, model.fusion.parameters(), strict=True))
    assert any(
        not torch.equal(a, b) for a, b in zip(merges_before, model.head.decoder.merges.parameters(), strict=True)
    )
    finetune = FinetuneStage()
    encoder_before = [p.detach().clone() for p in model.encoder.parameters()]
    skips_before = [p.detach().clone() for p in model.fusion.skips.parameters()]
    loss = finetune.step(model, batch, criterion, finetune.optimizers(model, 1e-3), 0.0)
    assert torch.isfinite(loss)
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, model.encoder.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(skips_before, model.fusion.skips.parameters(), strict=True))


def test_trains_predicts_and_explains_through_the_cli(store, tmp_path):
    results = tmp_path / "results"
    trained = tsfnet(
        "train", "-p", str(store), "--fusion", "tsf-ms", "--steps", "3", "--device", "cpu", "-o", str(results)
    )
    assert trained.returncode == 0, trained.stderr
    model_dir = results / "tsf-ms__plans__2d" / "fold_0"
    assert (model_dir / "checkpoint_best.pt").is_file()
    stages = {json.loads(line)["stage"] for line in (model_dir / "training_log.jsonl").read_text().splitlines()}
    assert stages == {"pretrain", "finetune"}
    raw = Path(load_plans(store / "plans.json")["raw_path"]) / "imagesTs"
    inputs = tmp_path / "in"
    inputs.mkdir()
    for channel in (0, 3):
        os.link(raw / f"PH_0006_{channel:04d}.nii.gz", inputs / f"B_{channel:04d}.nii.gz")
    out = tmp_path / "out"
    predicted = tsfnet("predict", "-i", str(inputs), "-o", str(out), "-m", str(model_dir), "--device", "cpu")
    assert predicted.returncode == 0, predicted.stderr
    reference = nib.load(str(raw / "PH_0006_0000.nii.gz"))
    for target in ("T1Gd", "T2"):
        assert nib.load(str(out / f"B_{target}.nii.gz")).shape == reference.shape
        assert any(out.glob(f"B_{target}*tsem*"))
    meta = json.loads((out / "B_T2_weights.json").read_text())
    assert meta["fusion"] == "tsf-ms"
    assert sorted(meta["sources"]) == ["FLAIR", "T1"]
    assert sum(meta["sources"].values()) == pytest.approx(1, abs=1e-4)
    explained = tsfnet("explain", "-m", str(model_dir), "-o", str(tmp_path / "explain"))
    assert explained.returncode == 0, explained.stderr
    assert len(json.loads((tmp_path / "explain" / "task_weights.json").read_text())) == 28
