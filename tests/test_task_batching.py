"""One task per batch: the loader draws it, the batch says so on the host, and every
task-conditioned layer then runs dense with the same result as per-sample conditions."""

from __future__ import annotations

import shutil

import pytest
import torch

from tests.test_model import plans
from tests.test_training_parts import make_store
from tsfnet.errors import TsfnetError
from tsfnet.model import FusionModel, build_model
from tsfnet.nets.hyper import HyperLinear
from tsfnet.planning.plans import load_plans, save_plans, validate_plans
from tsfnet.training.data import TaskBatchLoader, to_batch
from tsfnet.training.meter import LossMeter
from tsfnet.training.runner import TrainOptions, train
from tsfnet.training.stages import PretrainStage

N = 4


def test_hyperlinear_shared_row_equals_one_row_per_sample():
    torch.manual_seed(0)
    layer = HyperLinear(6, 3, cond_dim=4)
    x, cond = torch.randn(5, 6), torch.randn(1, 4)
    assert torch.allclose(layer(x, cond), layer(x, cond.expand(5, 4)), atol=1e-6)


def test_model_with_a_shared_target_equals_one_target_per_sample():
    torch.manual_seed(0)
    model = FusionModel(plans(), "tsf")
    images = torch.randn(3, N, 1, 16, 16)
    mask = torch.tensor([[1.0, 0, 1, 0]]).expand(3, N)
    shared = model(images, mask, torch.tensor([3]))
    each = model(images, mask, torch.tensor([3, 3, 3]))
    for a, b in ((shared.output, each.output), (shared.base, each.base), (shared.weights, each.weights)):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    one_to_one = model(images[:, 0], torch.tensor([2]), phase="one_to_one")
    assert torch.allclose(one_to_one, model(images[:, 0], torch.tensor([2, 2, 2]), phase="one_to_one"), atol=1e-5)


@pytest.mark.parametrize("sampling", ["one_to_one", "many_to_one"])
def test_per_batch_sampling_gives_every_sample_one_task_its_case_has(store, sampling):
    _plans, cases = make_store(store)
    first = cases.case_ids[0]
    cases.available[first] = [0, 2]  # a case missing T1Gd and FLAIR
    loader = TaskBatchLoader(cases, [16, 16], 6, sampling, seed=0, task_sampling="per_batch")
    tasks = set()
    for _ in range(20):
        raw = loader.generate_train_batch()
        batch = to_batch(raw, N, 1)
        assert batch.shared_task
        assert (batch.target == batch.target[0]).all() and (batch.source_mask == batch.source_mask[0]).all()
        needed = set(batch.source_mask[0].nonzero()[:, 0].tolist()) | {int(batch.target[0])}
        for row in raw["available"]:
            assert needed <= set(row.nonzero()[0].tolist())
        tasks.add((tuple(batch.source_mask[0].tolist()), int(batch.target[0])))
    assert len(tasks) > 1  # a new task per batch


def test_per_sample_batches_mix_tasks_and_say_so(store):
    _plans, cases = make_store(store)
    loader = TaskBatchLoader(cases, [16, 16], 8, "many_to_one", seed=0)
    assert not to_batch(loader.generate_train_batch(), N, 1).shared_task


def test_plans_reject_an_unknown_task_sampling(store):
    plans_ = load_plans(store / "plans.json")
    plans_["training"]["task_sampling"] = "per_case"
    with pytest.raises(Exception, match="task_sampling"):
        validate_plans(plans_)


def test_loss_meter_reads_once_and_names_the_steps_of_a_bad_loss():
    meter = LossMeter("finetune")
    meter.add(torch.tensor(1.0), 1)
    meter.add(torch.tensor(3.0), 2)
    assert meter.mean(2) == 2.0
    meter.add(torch.tensor(1.0), 3)
    meter.add(torch.tensor(float("nan")), 4)
    with pytest.raises(TsfnetError, match=r"^finetune steps 3-4: loss is nan"):
        meter.check(4)


def test_non_finite_loss_stops_the_run_before_any_checkpoint(store, tmp_path, monkeypatch):
    def nan_loss(self, model, batch, criterion):
        return sum(p.sum() for p in model.parameters() if p.requires_grad) * float("nan")

    monkeypatch.setattr(PretrainStage, "loss", nan_loss)
    copy = shutil.copytree(store, tmp_path / "store")
    plans_ = load_plans(copy / "plans.json")
    plans_["training"]["task_sampling"] = "per_batch"
    save_plans(plans_, copy / "plans.json")
    options = TrainOptions(store=copy, output=tmp_path / "out", stage="pretrain", steps=3, progress=False, device="cpu")
    with pytest.raises(TsfnetError) as error:
        train(options)
    assert str(error.value) == "pretrain steps 1-3: loss is nan (try a lower --lr, or --precision fp32)"
    assert not list((tmp_path / "out").rglob("checkpoint_*.pt"))


def test_pretrain_forward_on_a_shared_task_compiles_without_graph_breaks():
    torch.manual_seed(0)
    model = FusionModel(plans(), "tsf")
    explained = torch._dynamo.explain(model)(torch.randn(4, 1, 16, 16), torch.tensor([2]), phase="one_to_one")
    assert explained.graph_break_count == 0 and explained.graph_count == 1


@pytest.mark.parametrize("fusion", ["tsf", "tsf-ms"])
def test_sources_known_on_the_host_give_the_masked_result(fusion):
    """Static indexing of shared sources (the training batch's `shared_sources`, inference's
    task) encodes exactly what indexing by the mask does, in either order of the sources."""
    torch.manual_seed(0)
    model = FusionModel(plans(), "tsf") if fusion == "tsf" else build_model(plans(), fusion)
    images = torch.randn(3, N, 1, 16, 16)
    mask = torch.tensor([[0.0, 1, 0, 1]]).expand(3, N)
    masked = model(images, mask, torch.tensor([0]))
    for sources in ((1, 3), (3, 1)):
        static = model(images, mask, torch.tensor([0]), sources=sources)
        assert torch.allclose(static.output, masked.output, atol=1e-6)
        assert torch.allclose(static.weights, masked.weights, atol=1e-6)


def test_loader_batch_names_its_shared_sources_on_the_host(store):
    _plans, cases = make_store(store)
    loader = TaskBatchLoader(cases, [16, 16], 4, "many_to_one", seed=1, task_sampling="per_batch")
    batch = to_batch(loader.generate_train_batch(), N, 1)
    assert batch.shared_sources == tuple(batch.source_mask[0].nonzero()[:, 0].tolist())


def test_finetune_forward_on_a_shared_task_compiles_without_graph_breaks():
    torch.manual_seed(0)
    model = FusionModel(plans(), "tsf")
    mask = torch.tensor([[1.0, 0, 1, 0]]).expand(2, N)
    explained = torch._dynamo.explain(model)(torch.randn(2, N, 1, 16, 16), mask, torch.tensor([3]), sources=(0, 2))
    assert explained.graph_break_count == 0 and explained.graph_count == 1
