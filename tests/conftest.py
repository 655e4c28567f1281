"""Shared tiny fixtures: a 6-case phantom dataset at 1/6 resolution (~32^3), its plans
with a deliberately small network, and a model trained for a few steps."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tsfnet.data.dataset import RawDataset
from tsfnet.data.phantom import write_dataset
from tsfnet.planning.api import plan
from tsfnet.planning.plans import load_plans, save_plans
from tsfnet.preprocessing.pipeline import preprocess_dataset
from tsfnet.training.runner import TrainOptions, train

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

TINY_NETWORK = {
    "encoder_widths": [8, 16, 32],
    "encoder_kernels": [7, 3, 3],
    "strides": [1, 2, 2],
    "residual_blocks": 1,
    "code_embedding": 16,
    "hyper_basis": 4,
}


def make_tiny(store: Path) -> dict:
    """Shrink the planned network (plans are meant to be edited by hand)."""
    plans = load_plans(store / "plans.json")
    plans["network"] = dict(TINY_NETWORK)
    plans["configurations"]["2d"]["batch_size"] = 4
    plans["configurations"]["3d"]["patch_size"] = [16, 16, 16]
    plans["training"]["num_workers"] = 0
    plans["training"]["augment"] = False
    save_plans(plans, store / "plans.json")
    return plans


@pytest.fixture(scope="session")
def raw_dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("raw"), n_cases=6, downsample=6, seed=1, n_test=2)


@pytest.fixture
def raw_copy(raw_dataset, tmp_path) -> Path:
    """A private copy a test may damage."""
    return Path(shutil.copytree(raw_dataset, tmp_path / raw_dataset.name))


@pytest.fixture(scope="session")
def store(raw_dataset, tmp_path_factory) -> Path:
    folder, plans = plan(raw_dataset, tmp_path_factory.mktemp("pre") / raw_dataset.name, progress=False, workers=1)
    plans = make_tiny(folder)
    preprocess_dataset(RawDataset.load(raw_dataset), folder, plans, workers=1, progress=False)
    return folder


@pytest.fixture(scope="session")
def trained(store, tmp_path_factory):
    """tsf trained 6 + 6 steps: enough to exercise every file a model folder holds."""
    options = TrainOptions(
        store=store,
        fusion="tsf",
        output=tmp_path_factory.mktemp("results"),
        device="cpu",
        steps=6,
        val_every=3,
        num_workers=0,
        progress=False,
    )
    return train(options)


def import_benchmark(name: str) -> Iterator[ModuleType]:
    """`benchmarks/<name>.py` as a module, for a module-scoped fixture to yield from (the
    scripts import their `common` helper from beside them)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # where dataclasses look up the module's annotations
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(f"{name}_benchmark", None)
        sys.path.remove(str(BENCHMARKS))
