"""The options that reproduce the TSF authors' public code (docs/fidelity.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tsfnet.fusion.tsf import TaskSpecificFusion, TaskWeighting
from tsfnet.nets.attention import TaskAttention
from tsfnet.nets.seq2seq import Encoder, HyperDecoder
from tsfnet.planning.plans import SCHEMA_VERSION, apply_preset
from tsfnet.preprocessing.normalization import normalize

NETWORK = {
    "encoder_widths": [8, 16, 32],
    "encoder_kernels": [7, 3, 3],
    "strides": [1, 2, 2],
    "residual_blocks": 1,
    "code_embedding": 8,
    "hyper_basis": 4,
}


def phantom_volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A bright 'brain' in a zero background, as skull-stripped BraTS volumes are."""
    image = np.zeros((40, 40, 30), np.float32)
    mask = np.zeros(image.shape, bool)
    mask[10:30, 10:30, 5:25] = True
    image[mask] = rng.gamma(4.0, 100.0, int(mask.sum()))
    return image, mask


def test_p99x2_over_the_volume_counts_the_background():
    image, mask = phantom_volume(np.random.default_rng(0))
    _, brain = normalize(image, mask, {"scheme": "p99x2", "percentile": 99.0})
    _, volume = normalize(image, mask, {"scheme": "p99x2", "percentile": 99.0, "over": "volume"})
    assert brain["hi"] == pytest.approx(2 * np.percentile(image[mask], 99.0))
    assert volume["hi"] == pytest.approx(2 * np.percentile(image, 99.0))
    assert volume["hi"] < brain["hi"]  # background zeros pull the volume's percentile down


def test_p99x2_takes_the_percentile_of_the_uncropped_volume_when_given():
    image, mask = phantom_volume(np.random.default_rng(1))
    crop = (slice(8, 32), slice(8, 32), slice(3, 27))
    settings = {"scheme": "p99x2", "percentile": 99.0, "over": "volume"}
    normalised, used = normalize(image[crop], mask[crop], settings, volume=image)
    assert used["hi"] == pytest.approx(2 * np.percentile(image, 99.0))
    assert normalised.min() >= -1 and normalised.max() <= 1
    assert np.all(normalised[~mask[crop]] == -1)
    # the percentile scheme has no `volume` parameter and does not receive it
    normalize(image[crop], mask[crop], {"scheme": "percentile"}, volume=image)


def test_p99x2_falls_back_to_the_brain_when_the_volume_percentile_is_background():
    image = np.zeros((20, 20, 20), np.float32)
    mask = np.zeros(image.shape, bool)
    mask[:2, :2, :2] = True  # 0.1 % of the voxels: the volume's P99 is 0
    image[mask] = np.arange(1, 9)
    _, used = normalize(image, mask, {"scheme": "p99x2", "over": "volume"})
    assert used["hi"] == pytest.approx(2 * np.percentile(image[mask], 99.0))
    with pytest.raises(ValueError, match="over"):
        normalize(image, mask, {"scheme": "p99x2", "over": "everything"})


@pytest.mark.parametrize("weighting", ["softmax", "sigmoid"])
def test_task_weights_are_masked_and_sum_to_one(weighting):
    torch.manual_seed(0)
    weighting_module = TaskWeighting(4, weighting)
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    code = torch.cat([mask, torch.eye(4)[[1, 3]]], dim=1)
    omega = weighting_module(code, mask)
    assert torch.allclose(omega.sum(1), torch.ones(2))
    assert torch.all(omega[mask == 0] == 0)
    assert omega[1, 1] == 1  # one source: f̂ = f_i exactly, whichever activation
    logits = weighting_module.fc(code[:1])
    raw = torch.sigmoid(logits) if weighting == "sigmoid" else torch.softmax(logits, 1)
    expected = (raw + 1e-5) * mask[:1] / ((raw + 1e-5) * mask[:1]).sum()
    assert torch.allclose(omega[:1], expected)


def test_unknown_weighting_is_refused():
    with pytest.raises(ValueError, match="sigmoid"):
        TaskWeighting(4, "relu")


def test_attention_options_reproduce_the_authors_cbam():
    fusion = TaskSpecificFusion(
        4, 32, channel_negative_slope=0.2, spatial_bias=False, spatial_padding="zeros", weighting="sigmoid"
    )
    layer = fusion.attention.layers[0]
    assert isinstance(layer.channel.act, nn.LeakyReLU) and layer.channel.act.negative_slope == 0.2
    assert layer.spatial.conv.bias is None and layer.spatial.conv.padding_mode == "zeros"
    default = TaskSpecificFusion(4, 32).attention.layers[0]  # unchanged defaults: checkpoints still load
    assert isinstance(default.channel.act, nn.ReLU) and default.spatial.conv.bias is not None
    features = torch.randn(2, 4, 32, 12, 12)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    features = features * mask[:, :, None, None, None]
    code = torch.cat([mask, torch.eye(4)[[2, 0]]], dim=1)
    result = fusion(features, mask, code)
    assert result.residual is not None and result.residual.shape == (2, 32, 12, 12)


@pytest.mark.parametrize("layers", [1, 2])
def test_later_attention_layers_see_the_fused_features_plus_the_residual_so_far(layers):
    torch.manual_seed(0)
    attention = TaskAttention(2, 8, layers=layers, reduction=4)
    stacked = torch.randn(1, 16, 10, 10)
    fused = torch.randn(1, 8, 10, 10)
    code = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    first = attention.layers[0](stacked, code)
    expected = first if layers == 1 else first + attention.layers[1](fused + first, code)
    assert torch.allclose(attention(stacked, code, fused), expected)


def test_network_options_give_leaky_relu_and_plain_instance_norms():
    default = Encoder(3, NETWORK)
    authors = Encoder(3, {**NETWORK, "negative_slope": 0.2, "instance_norm_affine": False})
    assert any(isinstance(m, nn.ReLU) for m in default.modules())
    assert not any(isinstance(m, nn.ReLU) for m in authors.modules())
    leaky = [m for m in authors.modules() if isinstance(m, nn.LeakyReLU)]
    assert leaky and all(m.negative_slope == 0.2 for m in leaky)
    norms = [m for m in authors.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and not any(m.affine for m in norms)
    assert all(m.affine for m in default.modules() if isinstance(m, nn.InstanceNorm2d))
    decoder = HyperDecoder({**NETWORK, "negative_slope": 0.2, "instance_norm_affine": False}, 8)
    assert not any(isinstance(m, nn.ReLU) for m in decoder.modules())
    assert not any(m.affine for m in decoder.modules() if isinstance(m, nn.InstanceNorm2d))
    out = decoder(authors(torch.randn(2, 3, 16, 16)), torch.randn(2, 8))
    assert out.shape == (2, 1, 16, 16)


def minimal_plans() -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "dataset": "x",
        "channel_names": ["t1", "t1ce", "t2", "flair"],
        "labels": {},
        "target_spacing": [1.0, 1.0, 1.0],
        "crop_size": [32, 32, 32],
        "normalization": {"scheme": "percentile", "lower": 0.5, "upper": 99.5},
        "intensity_reference": {},
        "network": dict(NETWORK),
        "fusion": {"default": "tsf"},
        "configurations": {"2d": {"patch_size": [32, 32], "batch_size": 4}},
        "training": {
            "seed": 0,
            "val_every": 10,
            "num_workers": 0,
            "augment": True,
            "loss": {"reconstruction": "l1", "rec_weight": 10.0, "perceptual_weight": 0.01},
            "pretrain": {"steps": 1, "lr": 2e-4, "schedule": "constant"},
            "finetune": {"steps": 1, "lr": 1e-4, "schedule": "poly"},
        },
    }


def test_paper_preset_names_the_authors_settings():
    plans = apply_preset(minimal_plans(), "brats2021_paper")
    assert plans["network"]["negative_slope"] == 0.2 and plans["network"]["instance_norm_affine"] is False
    assert plans["network"]["gated_layers"] == 3  # their ConvLSTM in E and in G
    assert plans["network"]["predict_context"] is True  # their G predicts the 3 slices
    tsf = plans["fusion"]["tsf"]
    assert tsf["weighting"] == "sigmoid" and tsf["spatial_bias"] is False and tsf["spatial_padding"] == "zeros"
    assert tsf["channel_negative_slope"] == 0.2
    loss = plans["training"]["loss"]
    assert loss["reconstruction"] == "smooth_l1" and "finetune_reconstruction" not in loss
    assert (loss["rec_weight"], loss["perceptual_weight"]) == (10.0, 0.01)
    finetune = plans["training"]["finetune"]  # theirs: poly over 500 epochs of 830 x 4 steps, floor 1e-6
    assert (finetune["schedule"], finetune["horizon_steps"], finetune["min_lr"]) == ("poly", 1_660_000, 1e-6)
    assert finetune["sampler"] == "source_count" and loss["source_reconstruction"] is True
    assert loss["cycle_weight"] == 10.0 and loss["perceptual"] == "nnseq2seq"  # their later VGG19 loss
    assert plans["training"]["augment"] == "authors"
    assert plans["training"]["brain_slice_probability"] == 1.0  # they skip slices without brain
    TaskSpecificFusion(4, 32, **tsf)  # every option is one the fusion takes


def recording_criterion(compared: list):
    """A SynthesisCriterion class that appends every reference it is given to `compared`."""
    from tsfnet.training.losses import SynthesisCriterion

    class Recording(SynthesisCriterion):
        def forward(self, prediction, reference):
            compared.append(reference)
            return super().forward(prediction, reference)

    return Recording


@pytest.mark.parametrize("shared", [True, False])
def test_stage_two_source_term_decodes_the_sources_to_one_of_them(shared):
    """The authors' third stage-2 term: with `source_reconstruction` the loss adds a decode of
    the same sources to one of them, compared with that source's own slice."""
    import torch

    from tests.test_model import plans
    from tsfnet.batch import Batch
    from tsfnet.model import FusionModel
    from tsfnet.training.stages import FinetuneStage

    torch.manual_seed(0)
    model = FusionModel(plans(), "tsf")
    images = torch.randn(3, 4, 1, 16, 16)
    each = torch.tensor([[1.0, 0, 1, 0], [0, 1, 1, 1], [1, 1, 0, 0]])
    mask = torch.tensor([[1.0, 0, 1, 0]]).expand(3, 4) if shared else each
    target = torch.tensor([3, 3, 3]) if shared else torch.tensor([3, 0, 2])
    batch = Batch(
        images=images,
        source_mask=mask,
        target=target,
        target_image=images[torch.arange(3), target, 0].unsqueeze(1),
        brain_mask=torch.ones(3, 1, 16, 16, dtype=torch.bool),
        shared_sources=(0, 2) if shared else None,
    )
    compared = []
    Recording = recording_criterion(compared)

    stage = FinetuneStage()
    plain = stage.loss(model, batch, Recording())
    assert len(compared) == 2  # G(f̂ + f_A) and G(f̂) against the target
    with_source = stage.loss(model, batch, Recording(source_reconstruction=True))
    assert len(compared) == 5 and with_source > plain
    for sample, reference in enumerate(compared[-1]):
        sources = mask[sample].nonzero()[:, 0].tolist()
        assert any(torch.equal(reference[0], images[sample, s, 0]) for s in sources)
    with_source.backward()
    assert model.fusion.weighting.fc.weight.grad is not None


def test_authors_augmentation_flips_left_right_and_shifts_in_plane():
    import numpy as np

    from tsfnet.training.data import AUTHORS_SHIFT, shifted, transforms

    sample = np.arange(2 * 6 * 5, dtype=np.float32).reshape(2, 6, 5)
    moved = shifted(sample, np.array([2, -1]), -1.0)
    assert (moved[:, 2:, :4] == sample[:, :4, 1:]).all() and (moved[:, :2] == -1).all() and (moved[:, :, 4] == -1).all()
    np.random.seed(0)
    data = np.random.uniform(-0.5, 1, (16, 1, 64, 64)).astype(np.float32)
    seg = np.ones((16, 2, 64, 64), np.float32)
    out = transforms([64, 64], "authors")(data=data.copy(), seg=seg.copy())
    assert out["data"].shape == data.shape and out["data"].min() >= -1
    background = (out["data"] == -1).mean(axis=(1, 2, 3))
    assert background.max() <= 1 - (64 - AUTHORS_SHIFT) ** 2 / 64**2 + 1e-6 and background.max() > 0  # shifted
    assert (out["seg"][:, 0][out["data"][:, 0] == -1] == 0).all()  # the labels move with the images


def test_plans_take_true_false_or_authors_for_augment():
    from tsfnet.errors import InputError
    from tsfnet.planning.plans import validate_plans

    plans = apply_preset(minimal_plans(), "brats2021_paper")
    for value in (True, False, "authors"):
        validate_plans({**plans, "training": {**plans["training"], "augment": value}})
    with pytest.raises(InputError, match=r"'training\.augment' must be true, false or"):
        validate_plans({**plans, "training": {**plans["training"], "augment": "strong"}})
    with pytest.raises(InputError, match=r"'network\.gated_layers' must be a whole number"):
        validate_plans({**plans, "network": {**plans["network"], "gated_layers": -1}})


def test_gated_layer_is_a_convlstm_cell_at_length_one_from_a_zero_state():
    import torch

    from tsfnet.nets.blocks import GatedConv

    torch.manual_seed(0)
    layer, channels = GatedConv(2, 4), 4
    x = torch.randn(2, channels, 9, 9)
    # A full ConvLSTM cell: one conv of [x, h] to (i, f, o, g); c = f*c0 + i*g, h = o*tanh(c).
    cell = torch.nn.Conv2d(2 * channels, 4 * channels, 3, padding=1)
    with torch.no_grad():
        i, o, g = layer.gates.weight.chunk(3)
        bi, bo, bg = layer.gates.bias.chunk(3)
        cell.weight[:, :channels] = torch.cat([i, torch.randn_like(i), o, g])  # f's kernel: anything
        cell.bias.copy_(torch.cat([bi, torch.randn_like(bi), bo, bg]))
        gi, gf, go, gg = cell(torch.cat([x, torch.zeros_like(x)], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(gf) * 0 + torch.sigmoid(gi) * torch.tanh(gg)
        expected = torch.sigmoid(go) * torch.tanh(c)
        assert torch.allclose(layer(x), expected, atol=1e-6)
    network = {**NETWORK, "gated_layers": 3}
    encoder, plain = Encoder(1, network), Encoder(1, dict(NETWORK))
    extra = sum(p.numel() for p in encoder.parameters()) - sum(p.numel() for p in plain.parameters())
    width = NETWORK["encoder_widths"][-1]
    assert extra == 3 * (9 * width * 3 * width + 3 * width)
    assert encoder(torch.randn(2, 1, 16, 16)).abs().max() < 1  # E's features bounded, as theirs
    decoder = HyperDecoder(network, NETWORK["code_embedding"])
    assert len(decoder.gated) == 3
    assert decoder(torch.randn(2, width, 4, 4), torch.randn(1, NETWORK["code_embedding"])).shape == (2, 1, 16, 16)


def test_predict_context_trains_on_every_slice_and_infers_the_centre_one():
    """The authors' G predicts all three slices of a 2.5D input; the losses take them all,
    inference and the TSEM keep the centre slice."""
    import torch

    from tests.test_model import plans
    from tsfnet.batch import Batch
    from tsfnet.inference.engine import predict_targets
    from tsfnet.model import FusionModel
    from tsfnet.training.stages import FinetuneStage, PretrainStage

    torch.manual_seed(0)
    raw = plans(context=3)
    raw["network"]["predict_context"] = True
    model = FusionModel(raw, "tsf")
    assert model.output_slices == 3
    images = torch.randn(2, 4, 3, 16, 16)
    mask = torch.tensor([[1.0, 1, 0, 0]]).expand(2, 4)
    out = model(images, mask, torch.tensor([2]), sources=(0, 1))
    assert out.output.shape == (2, 3, 16, 16) and out.base.shape == (2, 3, 16, 16)
    target = torch.tensor([2, 2])
    batch = Batch(images=images, source_mask=mask, target=target, target_image=images[:, 2, 1:2],
                  brain_mask=torch.ones(2, 1, 16, 16, dtype=torch.bool), shared_sources=(0, 1))  # fmt: skip
    compared = []
    Recording = recording_criterion(compared)

    FinetuneStage().loss(model, batch, Recording(source_reconstruction=True))
    PretrainStage().loss(model, batch, Recording())
    assert torch.equal(compared[0], images[:, 2]) and all(r.shape == (2, 3, 16, 16) for r in compared)
    volume = {c: np.random.default_rng(c).uniform(-1, 1, (16, 16, 5)).astype(np.float32) for c in (0, 1)}
    prediction = predict_targets(model, volume, (0, 1), [2], torch.device("cpu"), context=3)[2]
    assert prediction.output.shape == (1, 16, 16, 5) and prediction.tsem.shape == (16, 16, 5)
    with torch.no_grad():  # slice 2 of the volume: the centre channel of the model's 3
        x = torch.zeros(1, 4, 3, 16, 16)
        for c in (0, 1):
            x[0, c] = torch.from_numpy(np.moveaxis(volume[c][:, :, 1:4], -1, 0))
        full = model(x, torch.tensor([[1.0, 1, 0, 0]]), torch.tensor([2]), sources=(0, 1))
    assert np.allclose(prediction.synthesis[:, :, 2], full.output[0, 1].numpy(), atol=1e-5)


@pytest.mark.parametrize("context", [1, 3])
def test_stage_one_adds_the_source_and_cycle_terms(context):
    """Their stage 1: 10·[SL1(G(E(x_s)|t), x_t) + SL1(G(E(x_s)|s), x_s)] + perceptual terms
    + 10·SL1(G(E(G(E(x_s)|t))|s), x_s); the cycle needs G to predict E's whole input."""
    import torch

    from tests.test_model import plans
    from tsfnet.batch import Batch
    from tsfnet.errors import TsfnetError
    from tsfnet.model import FusionModel
    from tsfnet.training.stages import PretrainStage

    torch.manual_seed(0)
    raw = plans(context=context)
    raw["network"]["predict_context"] = True
    model = FusionModel(raw, "tsf")
    images = torch.randn(2, 4, context, 16, 16)
    mask = torch.tensor([[0.0, 0, 1, 0]]).expand(2, 4)
    batch = Batch(images=images, source_mask=mask, target=torch.tensor([1, 1]), target_image=images[:, 1, :1],
                  brain_mask=torch.ones(2, 1, 16, 16, dtype=torch.bool), shared_sources=(2,))  # fmt: skip
    compared = []
    Recording = recording_criterion(compared)

    stage = PretrainStage()
    plain = stage.loss(model, batch, Recording())
    full = stage.loss(model, batch, Recording(source_reconstruction=True, cycle_weight=10.0))
    assert len(compared) == 3 and torch.equal(compared[2], images[:, 2])  # target, target, then the source
    assert full > plain
    raw["network"]["predict_context"] = False
    if context > 1:  # G gives one slice, E takes three: no cycle
        with pytest.raises(TsfnetError, match="cycle_weight feeds G's output back into E"):
            stage.loss(FusionModel(raw, "tsf"), batch, Recording(cycle_weight=10.0))
