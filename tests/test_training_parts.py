"""Batches, task sampling, augmentation workers, the perceptual loss, and 3D training."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tsfnet.planning.plans import load_plans
from tsfnet.tasks import sample_many_to_one, sample_one_to_one, sample_source_count
from tsfnet.training.data import CaseStore, TaskBatchLoader, batch_iterator, to_batch
from tsfnet.training.losses import PerceptualLoss, SynthesisCriterion, build_perceptual, vgg19_perceptual


@pytest.mark.parametrize("available", [[0], [1, 3], [0, 1, 2, 3]])
def test_task_sampling_stays_within_what_a_case_has(available):
    rng = np.random.default_rng(0)
    for _ in range(200):
        sources, target = sample_one_to_one(rng, available)
        assert len(sources) == 1 and sources[0] in available and target in available
        if len(available) > 1:
            sources, target = sample_many_to_one(rng, available)
            assert target in available and target not in sources
            assert sources and set(sources) <= set(available)


def test_many_to_one_draws_every_subset_size():
    rng = np.random.default_rng(1)
    sizes = {len(sample_many_to_one(rng, [0, 1, 2, 3])[0]) for _ in range(300)}
    assert sizes == {1, 2, 3}


def test_source_count_sampling_draws_every_number_of_sources_alike():
    """The authors' stage 2: 1, 2, 3 or 4 of 4 sources equally often; with all four the
    target is one of them, otherwise never."""
    rng = np.random.default_rng(2)
    draws = [sample_source_count(rng, [0, 1, 2, 3]) for _ in range(4000)]
    counts = np.bincount([len(sources) for sources, _ in draws], minlength=5)[1:]
    assert np.allclose(counts / len(draws), 0.25, atol=0.03)
    assert all((target in sources) == (len(sources) == 4) for sources, target in draws)
    assert {sample_source_count(rng, [1, 3])[1] for _ in range(50)} == {1, 3}
    assert sample_source_count(rng, [2]) == ((2,), 2)


def test_a_stage_section_may_choose_its_sampler(store):
    from tsfnet.errors import TsfnetError
    from tsfnet.planning.plans import Plans
    from tsfnet.training.stages import FinetuneStage

    raw = load_plans(store / "plans.json")
    assert Plans(raw).training_for(FinetuneStage).sampler is None  # the stage's own: many_to_one
    raw["training"]["finetune"]["sampler"] = "source_count"
    assert Plans(raw).training_for(FinetuneStage).sampler == "source_count"
    raw["training"]["finetune"]["sampler"] = "uniform"
    with pytest.raises(TsfnetError, match=r"training\.finetune\.sampler must be one of"):
        Plans(raw).training_for(FinetuneStage)


def test_the_runner_draws_tasks_with_the_planned_sampler(store, tmp_path, monkeypatch):
    import shutil

    from tsfnet.planning.plans import save_plans
    from tsfnet.training import runner

    copy = Path(shutil.copytree(store, tmp_path / "store", ignore=shutil.ignore_patterns("unpacked")))
    plans = load_plans(copy / "plans.json")
    plans["training"]["finetune"]["sampler"] = "source_count"
    save_plans(plans, copy / "plans.json")
    used = []

    class Recording(TaskBatchLoader):
        def __init__(self, cases, patch, batch, sampling, *args, **kwargs):
            used.append(sampling)
            super().__init__(cases, patch, batch, sampling, *args, **kwargs)

    monkeypatch.setattr(runner, "TaskBatchLoader", Recording)
    runner.train(runner.TrainOptions(store=copy, output=tmp_path / "out", device="cpu", steps=1, num_workers=0,
                                     progress=False))  # fmt: skip
    assert used == ["one_to_one", "source_count"]  # pretrain keeps its stage's own


def test_the_runner_validates_on_the_planned_number_of_slices_spread_over_the_brain(store, tmp_path, monkeypatch):
    import shutil

    import tsfnet.training.validation as validation
    from tsfnet.planning.plans import save_plans
    from tsfnet.training import runner

    copy = Path(shutil.copytree(store, tmp_path / "store", ignore=shutil.ignore_patterns("unpacked")))
    plans = load_plans(copy / "plans.json")
    assert plans["training"]["val_slices"] == 16  # what new plans hold
    plans["training"]["val_slices"] = 3
    save_plans(plans, copy / "plans.json")
    chosen: list[tuple[np.ndarray, list[int]]] = []
    choose = validation.evaluation_slices

    def recording(mask, limit):
        chosen.append((mask, choose(mask, limit)))
        return chosen[-1][1]

    monkeypatch.setattr(validation, "evaluation_slices", recording)
    runner.train(runner.TrainOptions(store=copy, output=tmp_path / "out", device="cpu", steps=1, num_workers=0,
                                     progress=False))  # fmt: skip
    assert chosen
    for mask, slices in chosen:
        brain = np.flatnonzero(mask.any(axis=(0, 1)))
        assert len(slices) == 3 and slices[0] == brain[0] and slices[-1] == brain[-1]  # the brain's ends
        assert abs(slices[1] - (brain[0] + brain[-1]) / 2) <= 1  # and its middle


def test_poly_schedule_decays_over_its_horizon_down_to_its_floor():
    from tsfnet.training.schedules import rate_factor

    stage = rate_factor("poly", 100, 1e-3)
    assert stage(0) == 1.0 and stage(50) == pytest.approx(0.5**0.9) and stage(100) == 0.0
    authors = rate_factor("poly", 1_000_000, 2e-4, horizon_steps=6_640_000, min_lr=1e-6)
    assert authors(1_000_000) == pytest.approx(0.863, abs=1e-3)  # where their stage 1 stops
    assert rate_factor("poly", 10, 1e-3, min_lr=1e-4)(10) == pytest.approx(0.1)
    assert rate_factor("constant", 10, 1e-3)(7) == 1.0
    with pytest.raises(ValueError, match="schedule must be one of constant, poly"):
        rate_factor("cosine", 10, 1e-3)


def test_plans_refuse_an_unknown_schedule_or_a_bad_horizon(store):
    from tsfnet.errors import TsfnetError
    from tsfnet.planning.plans import Plans
    from tsfnet.training.stages import FinetuneStage

    raw = load_plans(store / "plans.json")
    raw["training"]["finetune"]["schedule"] = "polly"  # was silently constant
    with pytest.raises(TsfnetError, match=r"training\.finetune\.schedule must be one of constant, poly"):
        Plans(raw).training_for(FinetuneStage)
    raw["training"]["finetune"].update(schedule="poly", horizon_steps=0)
    with pytest.raises(TsfnetError, match="horizon_steps must be a positive integer"):
        Plans(raw).training_for(FinetuneStage)
    raw["training"]["finetune"].update(horizon_steps=10, weighting_lr="fast")
    with pytest.raises(TsfnetError, match=r"training\.finetune\.weighting_lr must be a positive number, got 'fast'"):
        Plans(raw).training_for(FinetuneStage)


@pytest.mark.parametrize("fusion", ["tsf", "tsf-ms", "mean"])
def test_task_weightings_train_at_their_own_rate(store, fusion):
    """Adam moves a parameter by about its rate a step: ω's layers at `weighting_lr`, the rest
    of what the stage trains at its rate, the frozen encoder not at all."""
    from tsfnet.fusion.tsf import TaskWeighting
    from tsfnet.model import build_model
    from tsfnet.training.stages import FinetuneStage

    torch.manual_seed(0)
    model = build_model(load_plans(store / "plans.json"), fusion)
    weightings = [m for m in model.modules() if isinstance(m, TaskWeighting)]
    assert len(weightings) == {"tsf": 1, "tsf-ms": 3, "mean": 0}[fusion]  # tsf-ms: one per scale
    for module in weightings:  # random, so that the softmax has a gradient
        nn.init.normal_(module.fc.weight)
    (optimizer,) = FinetuneStage().optimizers(model, 1e-4, 5e-2).values()
    marked = {id(p) for m in weightings for p in m.parameters()}
    groups = optimizer.param_groups
    assert [g["lr"] for g in groups] == ([1e-4, 5e-2] if weightings else [1e-4])
    if weightings:
        assert {id(p) for p in groups[1]["params"]} == marked
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    images = torch.randn(2, 4, 1, 16, 16)
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 0]])
    out = model(images, mask, torch.tensor([3, 3]))
    (out.output.mean() + (0 if out.weights is None else out.weights[..., 0].sum())).backward()
    optimizer.step()
    moved = {name: (p.detach() - before[name]).abs().max().item() for name, p in model.named_parameters()}
    for name, step in moved.items():
        if name.startswith("encoder."):
            assert step == 0, name
        elif any(name.startswith(f"fusion.{path}") for path in ("weighting.", "skips.", "bottleneck.weighting.")):
            assert step == pytest.approx(5e-2, rel=0.01), name
        else:
            assert step <= 1e-4 * 1.01, name
    (plain,) = FinetuneStage().optimizers(model, 1e-4).values()  # without weighting_lr: one rate
    assert [g["lr"] for g in plain.param_groups] == [1e-4]


def make_store(store):
    plans = load_plans(store / "plans.json")
    ids = sorted(p.stem for p in (store / "cases").glob("*.b2zip"))
    return plans, CaseStore(store, ids, plans["channel_names"]).unpack()


def test_batches_hold_the_sampled_task(store):
    plans, cases = make_store(store)
    loader = TaskBatchLoader(
        cases, plans["configurations"]["2d"]["patch_size"], 6, sampling="many_to_one", seed=0, context_slices=3
    )
    batch = to_batch(loader.generate_train_batch(), 4, 3)
    assert batch.images.shape == (6, 4, 3, *plans["configurations"]["2d"]["patch_size"])
    assert batch.target_image.shape == (6, 1, *plans["configurations"]["2d"]["patch_size"])
    for b in range(6):
        assert batch.source_mask[b, batch.target[b]] == 0
        assert torch.equal(batch.target_image[b, 0], batch.images[b, batch.target[b], 1])  # centre slice
    assert batch.brain_mask.any()


def test_the_store_maps_each_array_once_and_workers_map_their_own(store):
    import pickle

    _plans, cases = make_store(store)
    case = cases.case_ids[0]
    image = cases.image(case, 0)
    assert cases.image(case, 0) is image  # mapped once, not per sample
    assert cases.array(case, "no_such_array") is None
    copy = pickle.loads(pickle.dumps(cases))  # as a worker process receives it
    assert copy._opened == {}  # a pickled memmap would copy the whole volume
    assert np.array_equal(copy.image(case, 0), image)


def test_three_d_patches(store):
    _plans, cases = make_store(store)
    loader = TaskBatchLoader(cases, [16, 16, 16], 2, sampling="one_to_one", seed=0)
    batch = to_batch(loader.generate_train_batch(), 4, 1)
    assert batch.images.shape == (2, 4, 1, 16, 16, 16) and batch.label.shape == (2, 16, 16, 16)


def test_augmenting_worker_processes_produce_distinct_batches(store):
    plans, cases = make_store(store)
    loader = TaskBatchLoader(cases, plans["configurations"]["2d"]["patch_size"], 4, sampling="many_to_one", seed=3)
    batches = batch_iterator(loader, augment=True, workers=2, seed=3)
    try:
        first, second = next(batches), next(batches)
    finally:
        batches._finish()
    assert first["data"].shape == second["data"].shape == (4, 4, *plans["configurations"]["2d"]["patch_size"])
    assert not np.array_equal(first["data"], second["data"])
    assert first["data"].min() >= -1 - 1e-5 and first["data"].max() <= 1 + 1e-5  # augmentation keeps the range


def tiny_backbone() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU())


def test_perceptual_loss_plumbing():
    loss = PerceptualLoss(tiny_backbone(), layers=(1, 3), layer_weights=(1.0, 0.5))
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    y = torch.rand(2, 1, 16, 16) * 2 - 1
    assert loss(x, x).item() == 0
    prediction = x.clone().requires_grad_(True)
    value = loss(prediction, y)
    value.backward()
    assert value.item() > 0 and prediction.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.backbone.parameters())  # frozen
    volume = torch.rand(1, 1, 8, 8, 4) * 2 - 1
    assert loss(volume, volume.flip(2)).item() > 0  # 3D goes slice by slice


def test_criterion_weights_match_the_paper():
    perceptual = PerceptualLoss(tiny_backbone(), layers=(3,), layer_weights=(1.0,))
    criterion = SynthesisCriterion("l1", 10.0, perceptual, 0.01)
    x, y = torch.zeros(1, 1, 16, 16), torch.full((1, 1, 16, 16), 0.5)
    assert criterion(x, y).item() == pytest.approx(10 * 0.5 + 0.01 * perceptual(x, y).item(), rel=1e-5)


def test_vgg19_loads_from_a_local_file(tmp_path):
    from torchvision.models import vgg19

    path = tmp_path / "vgg19-local.pth"
    torch.save({f"features.{k}": v for k, v in vgg19(weights=None).features.state_dict().items()}, path)
    loss = build_perceptual(path, 0.01)
    assert isinstance(loss, PerceptualLoss)
    assert len(loss.backbone) == 36
    assert loss(torch.zeros(1, 1, 32, 32), torch.ones(1, 1, 32, 32)).item() > 0
    assert vgg19_perceptual(path).layers == loss.layers


def test_nnseq2seq_variant_average_pools_and_sums_the_squared_error_after_every_relu(tmp_path):
    from torchvision.models import vgg19

    path = tmp_path / "vgg19-local.pth"
    torch.save({f"features.{k}": v for k, v in vgg19(weights=None).features.state_dict().items()}, path)
    loss = vgg19_perceptual(path, "nnseq2seq")
    assert not any(isinstance(m, nn.MaxPool2d) for m in loss.backbone)
    assert sum(isinstance(m, nn.AvgPool2d) for m in loss.backbone) == 4  # the fifth pool comes after relu5_4
    assert len(loss.layers) == 16 and set(loss.layer_weights) == {1.0}
    x, y = torch.rand(1, 1, 32, 32) * 2 - 1, torch.rand(1, 1, 32, 32) * 2 - 1
    expected = sum(((a - b) ** 2).mean() for a, b in zip(loss.features(x), loss.features(y), strict=True))
    assert loss(x, y).item() == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="nnseq2seq"):
        vgg19_perceptual(path, "lpips")


def test_missing_vgg19_falls_back_to_l1_with_one_clear_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("TSFNET_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="tsfnet"):
        assert build_perceptual(None, 0.01) is None
    messages = [r.message for r in caplog.records]
    assert len(messages) == 1 and "L1 term only" in messages[0] and "--perceptual-weights" in messages[0]


def test_weights_dir_is_searched(tmp_path, monkeypatch):
    from tsfnet.weights import find_weights

    (tmp_path / "vgg19-dcbb9e9d.pth").write_bytes(b"x")
    monkeypatch.setenv("TSFNET_WEIGHTS_DIR", str(tmp_path))
    assert find_weights(None, "vgg19") == tmp_path / "vgg19-dcbb9e9d.pth"


def test_three_d_training_and_sliding_window_prediction(store, tmp_path):
    import nibabel as nib

    from tsfnet.devices import resolve_device
    from tsfnet.inference.model_folder import load_model_folder
    from tsfnet.inference.predictor import predict_folder
    from tsfnet.training.runner import TrainOptions, train

    result = train(
        TrainOptions(
            store=store, config="3d", steps=2, val_every=2, output=tmp_path, device="cpu", num_workers=0, progress=False
        )
    )
    assert result.model_dir.parts[-2] == "tsf__plans__3d"
    trained = load_model_folder(result.model_dir, resolve_device("cpu"))
    assert trained.model.dims == 3
    raw = trained.plans.raw["raw_path"]
    (tmp_path / "in").mkdir()
    for channel in (0, 2):
        (tmp_path / "in" / f"V_{channel:04d}.nii.gz").symlink_to(f"{raw}/imagesTs/PH_0007_{channel:04d}.nii.gz")
    report = predict_folder(trained, tmp_path / "in", tmp_path / "out", targets="FLAIR", progress=False)
    output = nib.load(str(report.written[0]))
    assert output.shape == nib.load(f"{raw}/imagesTs/PH_0007_0000.nii.gz").shape
    assert np.isfinite(output.get_fdata()).all()


def test_validation_runs_in_the_devices_inference_batch_and_scores_as_any_batch_would(store, trained, monkeypatch):
    import tsfnet.training.validation as validation
    from tsfnet.devices import inference_batch_size
    from tsfnet.tasks import all_tasks

    _plans, cases = make_store(store)
    case = cases.case_ids[:1]
    run = validation.predict_targets
    seen: list[int] = []

    def predict_in(batch: int | None):
        def predict(*args, **kwargs):
            seen.append(kwargs["batch_size"])
            return run(*args, **{**kwargs, "batch_size": batch or kwargs["batch_size"]})

        return predict

    device = torch.device("cpu")
    monkeypatch.setattr(validation, "predict_targets", predict_in(None))
    scores = validation.validate(trained.model, cases, case, all_tasks, device)
    assert set(seen) == {inference_batch_size(device)}  # what `tsfnet predict` uses on the CPU
    monkeypatch.setattr(validation, "predict_targets", predict_in(16))
    assert validation.validate(trained.model, cases, case, all_tasks, device) == pytest.approx(scores, abs=1e-5)
