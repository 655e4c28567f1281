"""Tests that pin TSF-Seq2Seq to the paper."""

from __future__ import annotations

import itertools
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import TINY_NETWORK
from tsfnet.fusion.tsf import EPSILON, TaskSpecificFusion, TaskWeighting
from tsfnet.model import FusionModel
from tsfnet.nets import hyper
from tsfnet.nets.hyper import HyperConv, HyperLinear
from tsfnet.tasks import all_tasks, source_subsets, task_code

N = 4


def plans(context: int = 1) -> dict:
    return {
        "channel_names": ["T1", "T1Gd", "T2", "FLAIR"],
        "labels": {"background": 0, "NCR": 1, "ED": 2, "ET": 3},
        "network": dict(TINY_NETWORK),
        "fusion": {"default": "tsf"},
        "configurations": {
            "2d": {"patch_size": [16, 16], "batch_size": 2, "context_slices": context},
            "3d": {"patch_size": [8, 8, 8], "batch_size": 2},
        },
    }


def test_fifteen_subsets_and_28_tasks():
    assert len(source_subsets(list(range(N)))) == 15
    assert len(all_tasks(list(range(N)))) == 4 * 7


@pytest.mark.parametrize("subset", source_subsets(list(range(N))))
def test_weights_sum_to_one_and_vanish_for_missing(subset):
    torch.manual_seed(0)
    weighting = TaskWeighting(N)
    for target in range(N):
        mask = torch.zeros(1, N)
        mask[0, list(subset)] = 1
        omega = weighting(task_code(mask, torch.tensor([target]), N), mask)
        assert torch.allclose(omega.sum(), torch.tensor(1.0), atol=1e-6)
        assert (omega[0, [i for i in range(N) if i not in subset]] == 0).all()
        assert (omega[0, list(subset)] > 0).all()


def test_weights_follow_the_formula():
    torch.manual_seed(1)
    weighting = TaskWeighting(N)
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    code = task_code(mask, torch.tensor([1]), N)
    omega0 = torch.softmax(code @ weighting.fc.weight.T + weighting.fc.bias, dim=1) + EPSILON
    expected = omega0 * mask / (omega0 * mask).sum()
    assert torch.allclose(weighting(code, mask), expected)


def test_single_source_fused_feature_is_the_encoder_output_bit_for_bit():
    torch.manual_seed(0)
    model = FusionModel(plans(), "tsf").eval()
    images = torch.randn(2, N, 1, 16, 16)
    for source, target in itertools.permutations(range(N), 2):
        mask = torch.zeros(2, N)
        mask[:, source] = 1
        features = model.encode(images, mask)
        fused = model.fusion(features, mask, task_code(mask, torch.full((2,), target), N))
        assert torch.equal(fused.fused, model.encoder(images[:, source]))
        assert torch.equal(fused.weights[:, source], torch.ones(2))


@pytest.mark.parametrize("dims", [2, 3])
def test_hyperconv_equals_plain_conv_with_its_generated_kernel(dims):
    torch.manual_seed(0)
    layer = HyperConv(3, 5, 3, cond_dim=6, dims=dims, padding_mode="zeros")
    x = torch.randn(4, 3, *([7] * dims))
    cond = torch.randn(1, 6).expand(4, 6)
    weight, bias = layer.kernels(cond[:1])
    conv = F.conv2d if dims == 2 else F.conv3d
    expected = conv(x, weight[0], bias[0], padding=1)
    assert torch.allclose(layer(x, cond), expected, atol=1e-5)


def test_hyperconv_gives_each_sample_its_own_kernel():
    torch.manual_seed(0)
    layer = HyperConv(2, 3, 3, cond_dim=4)
    x = torch.randn(3, 2, 6, 6)
    cond = torch.eye(4)[:3]
    together = layer(x, cond)
    for i in range(3):
        assert torch.allclose(together[i : i + 1], layer(x[i : i + 1], cond[i : i + 1]), atol=1e-5)


def test_hyperconv_shared_condition_path_matches_the_grouped_one_forward_and_backward():
    torch.manual_seed(0)
    layer = HyperConv(2, 5, 3, cond_dim=4)  # more outputs than BASIS_FORM_MAX_OUT: grouped
    x = torch.randn(3, 2, 6, 6)
    cond = torch.randn(1, 4)
    shared = layer(x, cond)  # one row for the batch: one kernel, plain convolution
    shared.square().sum().backward()
    shared_grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    per_sample = layer(x, cond.expand(3, 4))  # one row per sample: grouped convolution
    per_sample.square().sum().backward()
    assert torch.allclose(shared, per_sample, atol=1e-5)
    for shared_grad, parameter in zip(shared_grads, layer.parameters(), strict=True):
        assert torch.allclose(shared_grad, parameter.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("dims", "out_channels", "stride", "bias"), [(2, 1, 1, True), (2, 3, 2, False), (3, 1, 1, True)]
)
def test_hyperconv_basis_form_matches_the_grouped_convolution_forward_and_backward(
    monkeypatch, dims, out_channels, stride, bias
):
    """A CPU layer with few outputs convolves with its basis; the result and every gradient
    must be the grouped per-sample convolution's."""
    torch.manual_seed(0)
    layer = HyperConv(4, out_channels, 3, cond_dim=6, dims=dims, stride=stride, bias=bias)
    if bias:  # generated biases start at zero: make them count
        torch.nn.init.normal_(layer.bias.basis)
    layer.double()  # in float64 the two summation orders agree to far below any real error
    x = torch.randn(3, 4, *([8] * dims), dtype=torch.float64, requires_grad=True)
    cond = torch.randn(3, 6, dtype=torch.float64)

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        layer.zero_grad()
        x.grad = None
        out = layer(x, cond)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]

    basis_out, basis_grads = run()
    monkeypatch.setattr(hyper, "BASIS_FORM_MAX_OUT", 0)
    grouped_out, grouped_grads = run()
    assert basis_out.shape == grouped_out.shape == (3, out_channels, *([8 // stride] * dims))
    assert torch.allclose(basis_out, grouped_out, atol=1e-10)
    for basis_grad, grouped_grad in zip(basis_grads, grouped_grads, strict=True):
        assert torch.allclose(basis_grad, grouped_grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dims, stride, bias", [(2, 1, True), (2, 2, False), (3, 1, True)])
def test_hyperconv_channelwise_form_matches_the_dense_convolution_in_inference(dims, stride, bias):
    """A CPU one-output layer with a shared task sums a depthwise convolution in inference;
    it must equal the dense convolution with the generated kernel, which training still uses."""
    torch.manual_seed(0)
    layer = HyperConv(5, 1, 3, cond_dim=6, dims=dims, stride=stride, bias=bias)
    if bias:  # generated biases start at zero: make them count
        torch.nn.init.normal_(layer.bias.basis)
    x, cond = torch.randn(2, 5, *([9] * dims)), torch.randn(1, 6)
    weight, generated_bias = layer.kernels(cond)
    padded = F.pad(x, (1,) * (2 * dims), mode="reflect")
    conv = F.conv2d if dims == 2 else F.conv3d
    expected = conv(padded, weight[0], None if generated_bias is None else generated_bias[0], stride=stride)
    with torch.inference_mode():
        inferred = layer(x, cond)
    assert inferred.shape == expected.shape == (2, 1, *([-(-9 // stride)] * dims))
    assert torch.allclose(inferred, expected.detach(), atol=1e-5)
    assert torch.equal(layer(x, cond), expected)  # with gradients: the dense convolution itself


@pytest.mark.parametrize("dims, affine", [(2, True), (3, True), (2, False)])
def test_instance_norm_on_the_cpu_equals_torchs_forward_and_backward(dims, affine):
    """tsfnet's instance norm runs PyTorch's group-norm kernel on the CPU (one group per
    channel); output and gradients must be the instance norm's."""
    from tsfnet.nets.blocks import instance_norm

    torch.manual_seed(0)
    ours, reference = instance_norm(dims, 6, affine), torch.nn.modules.instancenorm._InstanceNorm
    torchs = (torch.nn.InstanceNorm2d if dims == 2 else torch.nn.InstanceNorm3d)(6, affine=affine)
    if affine:
        with torch.no_grad():
            for layer in (ours, torchs):
                layer.weight.copy_(torch.linspace(0.5, 2.0, 6))
                layer.bias.copy_(torch.linspace(-1.0, 1.0, 6))
    assert isinstance(ours, reference) and ours.state_dict().keys() == torchs.state_dict().keys()
    x = (3.0 * torch.randn(4, 6, *([7] * dims)) + 2.0).requires_grad_()
    upstream = torch.randn(x.shape)
    results = []
    for layer in (ours, torchs):
        x.grad = None
        out = layer(x)
        out.backward(upstream)
        results.append((out.detach(), x.grad.clone(), [p.grad.clone() for p in layer.parameters()]))
        layer.zero_grad()
    (out, grad, params), (expected_out, expected_grad, expected_params) = results
    assert torch.allclose(out, expected_out, atol=1e-5)
    assert torch.allclose(grad, expected_grad, atol=1e-5)
    for got, want in zip(params, expected_params, strict=True):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)


def test_hyperlinear_matches_its_generated_matrix():
    torch.manual_seed(0)
    layer = HyperLinear(6, 3, cond_dim=4)
    cond, x = torch.randn(2, 4), torch.randn(2, 6)
    weight = layer.weight(cond).view(2, 3, 6)
    expected = torch.stack([weight[i] @ x[i] for i in range(2)]) + layer.bias(cond)
    assert torch.allclose(layer(x, cond), expected, atol=1e-6)


def test_gradients_reach_the_weighting_layer_and_the_attention():
    torch.manual_seed(0)
    model = FusionModel(plans(), "tsf")
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    out = model(torch.randn(2, N, 1, 16, 16), mask, torch.tensor([3, 0]))
    (out.output.mean() + out.base.mean()).backward()
    fusion = model.fusion
    assert fusion.weighting.fc.weight.grad.abs().sum() > 0
    assert fusion.weighting.fc.bias.grad.abs().sum() > 0
    attention_grads = [p.grad for p in fusion.attention.parameters()]
    assert all(g is not None for g in attention_grads) and sum(g.abs().sum() for g in attention_grads) > 0


def test_tsem_is_zero_when_attention_residual_is_zero():
    torch.manual_seed(0)
    model = FusionModel(plans(), "tsf").eval()
    assert isinstance(model.fusion, TaskSpecificFusion)
    model.fusion.attention.forward = lambda stacked, code, fused: torch.zeros_like(fused)
    out = model(torch.randn(2, N, 1, 16, 16), torch.tensor([[1.0, 0, 1, 0], [0, 1, 1, 1]]), torch.tensor([1, 0]))
    assert torch.equal(out.tsem, torch.zeros_like(out.tsem))


@pytest.mark.parametrize(("config", "shape"), [("2d", (16, 16)), ("3d", (8, 8, 8))])
@pytest.mark.parametrize("fusion", ["tsf", "wavg", "mean", "max"])
def test_output_shapes(config, shape, fusion):
    model = FusionModel(plans(), fusion, config=config)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    out = model(torch.randn(2, N, 1, *shape), mask, torch.tensor([2, 1]))
    assert out.output.shape == (2, 1, *shape)
    assert out.output.abs().max() <= 1  # tanh output in [-1, 1]
    assert out.weights.shape == (2, N)
    assert (out.tsem is not None) == (fusion == "tsf")
    one_to_one = model(torch.randn(2, 1, *shape), torch.tensor([0, 3]), phase="one_to_one")
    assert one_to_one.shape == (2, 1, *shape)


def test_two_point_five_d_input_uses_context_slices():
    model = FusionModel(plans(context=3), "tsf")
    out = model(torch.randn(1, N, 3, 16, 16), torch.tensor([[1.0, 0, 0, 1]]), torch.tensor([2]))
    assert out.output.shape == (1, 1, 16, 16)


def test_mixed_task_batch_equals_each_task_alone():
    torch.manual_seed(0)
    model = FusionModel(plans(), "tsf").eval()
    images = torch.randn(3, N, 1, 16, 16)
    mask = torch.tensor([[1.0, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 0]])
    target = torch.tensor([2, 3, 3])
    together = model(images, mask, target)
    for i in range(3):
        alone = model(images[i : i + 1], mask[i : i + 1], target[i : i + 1])
        assert torch.allclose(together.output[i], alone.output[0], atol=1e-5)
        assert torch.allclose(together.tsem[i], alone.tsem[0], atol=1e-5)
        assert torch.allclose(together.weights[i], alone.weights[0], atol=1e-6)


def test_mean_and_max_fusions():
    from tsfnet.fusion.simple import MaxFusion, MeanFusion

    features = torch.randn(1, N, 2, 3, 3)
    mask = torch.tensor([[1.0, 0, 1, 0]])
    code = task_code(mask, torch.tensor([1]), N)
    mean = MeanFusion(N, 2)(features, mask, code)
    assert torch.allclose(mean.fused[0], (features[0, 0] + features[0, 2]) / 2)
    maximum = MaxFusion(N, 2)(features, mask, code)
    assert torch.equal(maximum.fused[0], torch.maximum(features[0, 0], features[0, 2]))
    assert maximum.weights[0, [1, 3]].sum() == 0 and torch.isclose(maximum.weights.sum(), torch.tensor(1.0))


def test_segmentation_head_outputs_label_logits():
    model = FusionModel(plans(), "tsf", head="segmentation")
    out = model(torch.randn(2, N, 1, 16, 16), torch.ones(2, N), torch.zeros(2, dtype=torch.long))
    assert out.output.shape == (2, 4, 16, 16)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("resampling", ["scale", "size"])
def test_resampling_runs_in_fp32_without_gradients_and_rounds_to_the_bf16_kernels_values(dims, resampling):
    from tsfnet.nets.blocks import Upsample, resize

    x = torch.randn(2, 3, *(5,) * dims).to(torch.bfloat16)
    size = (11,) * dims  # not a multiple: the odd sizes Hi-Net's and tsf-ms' decoders meet
    layer = Upsample(2) if resampling == "scale" else partial(resize, size=size)
    mode = "bilinear" if dims == 2 else "trilinear"
    amount = {"scale_factor": 2} if resampling == "scale" else {"size": size}
    bf16_kernel = F.interpolate(x, **amount, mode=mode, align_corners=False)
    with torch.no_grad():
        inference = layer(x)
    assert inference.dtype == torch.float32  # the padding after it wants fp32 under autocast
    assert torch.equal(inference, F.interpolate(x.float(), **amount, mode=mode, align_corners=False))
    if dims == 3 and resampling == "size":  # the bf16 trilinear kernel rounds in between: a bf16 step apart
        assert (inference - bf16_kernel.float()).abs().max() <= x.float().abs().max() * 2**-7
    else:
        assert torch.equal(inference.to(torch.bfloat16), bf16_kernel)
    training = layer(x.requires_grad_())
    assert training.dtype == torch.bfloat16  # gradients keep the input's dtype
    assert torch.equal(training, bf16_kernel)
