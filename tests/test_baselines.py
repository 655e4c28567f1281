"""The baselines (MM-GAN, Hi-Net, pix2pix, Seq2Seq averaging, and the early-fusion
ablation of Seq2Seq): faithful pieces pinned
by unit tests, and each one trained and used for prediction through the CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import TINY_NETWORK
from tests.test_cli import tsfnet
from tsfnet.batch import Batch
from tsfnet.fusion.adversarial import AdversarialNetwork
from tsfnet.fusion.hinet import MixedFusionBlock
from tsfnet.model import build_model
from tsfnet.planning.plans import load_plans, save_plans
from tsfnet.training.adversarial import MMGANStage, least_squares

BASELINES = ("mmgan", "hinet", "pix2pix", "seq2seq-avg", "seq2seq-early")
BASELINE_STAGE = {"seq2seq-avg": "pretrain", "seq2seq-early": "joint"}  # the others: a stage of their name
TINY_OPTIONS = {
    "mmgan": {"base_channels": 8, "levels": 3, "discriminator_channels": 8},
    "hinet": {"base_channels": 8, "levels": 3, "discriminator_channels": 8},
    "pix2pix": {"base_channels": 4, "levels": 3, "discriminator_channels": 4},
}
SIZE = 32


@pytest.fixture(autouse=True)
def seeded() -> None:
    """Weights and random images are the same on every run."""
    torch.manual_seed(0)


def plans(context: int = 1) -> dict:
    return {
        "channel_names": ["T1", "T1Gd", "T2", "FLAIR"],
        "labels": {},
        "network": dict(TINY_NETWORK),
        "fusion": {"default": "tsf", **TINY_OPTIONS},
        "configurations": {"2d": {"patch_size": [SIZE, SIZE], "batch_size": 2, "context_slices": context}},
    }


def batch_of(sources: list[list[int]], targets: list[int], context: int = 1, available=None) -> Batch:
    n = len(sources)
    images = torch.rand(n, 4, context, SIZE, SIZE) * 2 - 1
    mask = torch.zeros(n, 4)
    for b, s in enumerate(sources):
        mask[b, s] = 1
    target = torch.tensor(targets)
    return Batch(
        images=images,
        source_mask=mask,
        target=target,
        target_image=images[torch.arange(n), target, context // 2].unsqueeze(1),
        brain_mask=torch.ones(n, 1, SIZE, SIZE, dtype=torch.bool),
        available=torch.ones(n, 4) if available is None else available,
    )


@pytest.mark.parametrize("fusion", BASELINES)
def test_output_shape_and_only_sources_matter(fusion):
    model = build_model(plans(context=3), fusion, config="2d").eval()
    batch = batch_of([[0], [1, 3], [0, 1, 2]], [2, 0, 3], context=3)
    with torch.no_grad():
        out = model.synthesise(batch.images, batch.source_mask, batch.target)
        assert out.output.shape == (3, 1, SIZE, SIZE)
        assert out.output.abs().max() <= 1
        # Whatever the non-sources hold (here: noise), the result is the same.
        noisy = batch.images.clone()
        noisy[batch.source_mask == 0] = torch.randn_like(noisy[batch.source_mask == 0])
        again = model.synthesise(noisy, batch.source_mask, batch.target)
    assert torch.equal(out.output, again.output)


@pytest.mark.parametrize("fusion", BASELINES)
def test_three_d_patches(fusion):
    three_d = plans()
    three_d["configurations"]["3d"] = {"patch_size": [16, 16, 16], "batch_size": 2}
    model = build_model(three_d, fusion, config="3d").eval()
    images = torch.rand(2, 4, 1, 16, 16, 16) * 2 - 1
    with torch.no_grad():
        out = model.synthesise(images, torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]]), torch.tensor([1, 3]))
    assert out.output.shape == (2, 1, 16, 16, 16)


@pytest.mark.parametrize("fusion", ["mmgan", "hinet"])
def test_a_network_that_synthesises_every_sequence_runs_once_for_all_targets_of_a_source_set(fusion):
    from tsfnet.inference.engine import predict_targets

    model = build_model(plans(), fusion).eval()
    generator = model.generator if fusion == "mmgan" else model.decoder
    calls = []
    generator.register_forward_hook(lambda _m, _a, output: calls.append(len(output)))
    images = {c: np.random.default_rng(c).uniform(-1, 1, (SIZE, SIZE, 4)).astype(np.float32) for c in range(4)}
    together = predict_targets(model, images, (0, 2), [1, 3], torch.device("cpu"), batch_size=4)
    assert calls == [4]  # one pass over the four slices, for both targets
    for target in (1, 3):
        alone = predict_targets(model, images, (0, 2), [target], torch.device("cpu"), batch_size=4)
        assert np.array_equal(alone[target].synthesis, together[target].synthesis)


def test_hinet_runs_only_the_sources_encoders_when_it_knows_them_and_synthesises_the_same():
    model = build_model(plans(), "hinet").eval()
    batch = batch_of([[1, 3], [1, 3]], [0, 2])
    ran = []
    for i, encoder in enumerate(model.encoders):
        encoder.register_forward_hook(lambda _m, _a, _o, i=i: ran.append(i))
    with torch.no_grad():
        known = model.synthesise(batch.images, batch.source_mask, batch.target, sources=(1, 3))
        assert ran == [1, 3]
        every = model.synthesise(batch.images, batch.source_mask, batch.target)  # sources from the mask only
    assert ran == [1, 3, 0, 1, 2, 3]
    assert torch.equal(known.output, every.output)
    assert torch.equal(known.weights, torch.tensor([[0, 0.5, 0, 0.5]] * 2))


def test_baselines_refuse_other_heads():
    from tsfnet.errors import TsfnetError

    with pytest.raises(TsfnetError, match="no 'segmentation' head"):
        build_model(plans(), "mmgan", head="segmentation")


def test_mmgan_zero_imputes_missing_inputs():
    model = build_model(plans(), "mmgan")
    batch = batch_of([[0, 2]], [1])
    seen = {}
    model.generator.register_forward_hook(lambda _m, args, _o: seen.setdefault("input", args[0]))
    with torch.no_grad():
        model.synthesise(batch.images, batch.source_mask, batch.target)
    x = seen["input"]
    assert x.shape == (1, 4, SIZE, SIZE)
    assert torch.equal(x[0, [1, 3]], torch.zeros(2, SIZE, SIZE))
    assert torch.equal(x[0, [0, 2]], batch.images[0, [0, 2], 0])


def test_mmgan_implicit_conditioning_and_per_sequence_judgement():
    model = build_model(plans(), "mmgan")
    available = torch.tensor([[1.0, 1, 1, 0]])  # this case has no FLAIR
    batch = batch_of([[0]], [2], available=available)
    terms = model.generate(batch, progress=1.0)
    real = batch.images[:, :, 0]
    assert torch.equal(terms.fake[:, 0], real[:, 0])  # the real input is pasted back
    assert not torch.equal(terms.fake[:, 2], real[:, 2])  # the target is synthesised
    assert torch.equal(terms.fake_label, batch.source_mask)  # D should call only imputed maps fake
    assert torch.equal(terms.weight, available)  # FLAIR has no real counterpart: not judged
    assert torch.equal(terms.real[:, 3], terms.fake[:, 3].detach())
    scores = model.discriminate(terms.fake, None)
    assert scores.shape[1] == 4  # one PatchGAN map per sequence


def test_mmgan_curriculum_starts_with_one_missing_input():
    model = build_model(plans(), "mmgan")
    batch = batch_of([[0]] * 8, [1] * 8)
    early = model.scenario(batch, progress=0.0)
    assert torch.equal(early.sum(dim=1), torch.full((8,), 3.0)) and (early[:, 1] == 0).all()
    middle = model.scenario(batch, progress=0.3)  # at most two missing
    assert (middle.sum(dim=1) >= 2).all() and (middle[:, 1] == 0).all()
    assert torch.equal(model.scenario(batch, progress=0.5), batch.source_mask)


def test_pix2pix_averages_its_pair_generators():
    model = build_model(plans(), "pix2pix").eval()
    batch = batch_of([[0, 3]], [1])
    with torch.no_grad():
        both = model.synthesise(batch.images, batch.source_mask, batch.target).output
        g01 = model.generators[int(model.pair_index(torch.tensor(0), torch.tensor(1)))](batch.images[:, 0])
        g31 = model.generators[int(model.pair_index(torch.tensor(3), torch.tensor(1)))](batch.images[:, 3])
    assert len(model.generators) == 12
    assert model.pairs[int(model.pair_index(torch.tensor(3), torch.tensor(1)))] == (3, 1)
    torch.testing.assert_close(both, (g01 + g31) / 2)


def test_seq2seq_average_is_the_mean_of_one_to_one_outputs():
    model = build_model(plans(), "seq2seq-avg").eval()
    assert model.stages == ("pretrain",)
    batch = batch_of([[0, 2]], [3])
    with torch.no_grad():
        averaged = model.synthesise(batch.images, batch.source_mask, batch.target)
        singles = [model(batch.images[:, s], batch.target, phase="one_to_one") for s in (0, 2)]
    # float32: one batched pass against two single passes differ in the last bits only
    torch.testing.assert_close(averaged.output, (singles[0] + singles[1]) / 2, rtol=1e-4, atol=1e-5)
    assert averaged.weights.tolist() == [[0.5, 0.0, 0.5, 0.0]]


def test_early_fusion_tells_a_missing_input_from_a_black_one():
    """E sees the source mask as planes: T1 missing and T1 present but all zeros (the value
    a missing input is filled with) are different inputs, and give different syntheses."""
    model = build_model(plans(), "seq2seq-early").eval()
    images = torch.rand(1, 4, 1, SIZE, SIZE) * 2 - 1
    images[:, 0] = 0
    target = torch.tensor([2])
    with torch.no_grad():
        without_t1 = model.synthesise(images, torch.tensor([[0.0, 1, 0, 1]]), target).output
        black_t1 = model.synthesise(images, torch.tensor([[1.0, 1, 0, 1]]), target).output
    assert not torch.allclose(without_t1, black_t1)


def test_hinet_fusion_of_one_source_is_that_source_three_times():
    block = MixedFusionBlock(2, 4, None)
    seen = {}
    block.mix.register_forward_hook(lambda _m, args, _o: seen.setdefault("input", args[0]))
    features = torch.randn(2, 4, 4, 8, 8)
    mask = torch.tensor([[0.0, 1, 0, 0], [1.0, 0, 1, 0]])
    block(features, mask, None)
    mixed = seen["input"]
    one = features[0, 1]
    assert torch.equal(mixed[0], torch.cat([one, one, one]))
    a, b = features[1, 0], features[1, 2]
    torch.testing.assert_close(mixed[1], torch.cat([a + b, a * b, torch.maximum(a, b)]))


def test_adversarial_step_updates_generator_and_discriminator():
    model: AdversarialNetwork = build_model(plans(), "mmgan")
    stage = MMGANStage()
    optimizers = stage.optimizers(model, 1e-3)
    before_g = [p.detach().clone() for p in model.generator_parameters()]
    before_d = [p.detach().clone() for p in model.discriminator_parameters()]
    loss = stage.step(model, batch_of([[0, 1], [2]], [3, 0]), None, optimizers, 0.9)
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before_g, model.generator_parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(before_d, model.discriminator_parameters(), strict=True))


def test_least_squares_weights_maps():
    scores = torch.tensor([[[[1.0]], [[0.0]]]])  # (B=1, maps=2, 1, 1)
    weight = torch.tensor([[1.0, 0.0]])
    assert least_squares(scores, 1.0, weight) == 0  # the wrong map is ignored
    assert least_squares(scores, torch.tensor([[0.0, 0.0]]), torch.ones(1, 2)) == 0.5


@pytest.fixture(scope="module")
def baseline_store(store, tmp_path_factory) -> Path:
    """A copy of the tiny store whose plans shrink the baselines (plans are edited by hand)."""
    copy = Path(shutil.copytree(store, tmp_path_factory.mktemp("baselines") / store.name))
    edited = load_plans(copy / "plans.json")
    edited["fusion"].update(TINY_OPTIONS)
    save_plans(edited, copy / "plans.json")
    return copy


@pytest.mark.parametrize("fusion", BASELINES)
def test_baseline_trains_and_predicts_through_the_cli(fusion, baseline_store, tmp_path):
    results = tmp_path / "results"
    trained = tsfnet(
        "train", "-p", str(baseline_store), "--fusion", fusion, "--steps", "3", "--device", "cpu", "-o", str(results)
    )
    assert trained.returncode == 0, trained.stderr
    model_dir = results / f"{fusion}__plans__2d" / "fold_0"
    assert (model_dir / "checkpoint_best.pt").is_file()
    stages = {json.loads(line)["stage"] for line in (model_dir / "training_log.jsonl").read_text().splitlines()}
    assert stages == {BASELINE_STAGE.get(fusion, fusion)}
    raw = Path(load_plans(baseline_store / "plans.json")["raw_path"]) / "imagesTs"
    inputs = tmp_path / "in"
    inputs.mkdir()
    for channel in (0, 3):  # T1 and FLAIR present: T1Gd and T2 missing
        os.link(raw / f"PH_0006_{channel:04d}.nii.gz", inputs / f"B_{channel:04d}.nii.gz")
    predicted = tsfnet(
        "predict", "-i", str(inputs), "-o", str(tmp_path / "out"), "-m", str(model_dir), "--device", "cpu"
    )
    assert predicted.returncode == 0, predicted.stderr
    written = sorted(p.name for p in (tmp_path / "out").glob("B_*.nii.gz") if "tsem" not in p.name)
    assert written == ["B_T1Gd.nii.gz", "B_T2.nii.gz"]
    reference = nib.load(str(raw / "PH_0006_0000.nii.gz"))
    synthesis = nib.load(str(tmp_path / "out" / "B_T2.nii.gz"))
    assert synthesis.shape == reference.shape and np.allclose(synthesis.affine, reference.affine)
    meta = json.loads((tmp_path / "out" / "B_T2_weights.json").read_text())
    assert meta["fusion"] == fusion and sorted(meta["sources"]) == ["FLAIR", "T1"]
    explained = tsfnet("explain", "-m", str(model_dir), "-o", str(tmp_path / "explain"))
    assert explained.returncode == 1 and "without task weights" in explained.stderr
