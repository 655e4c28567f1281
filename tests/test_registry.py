"""The plugin registry, and a third-party fusion found through its entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tsfnet.errors import TsfnetError
from tsfnet.registry import KINDS, Registry, UnknownPluginError, registry

PLUGIN_SRC = Path(__file__).resolve().parents[1] / "entrypoints" / "tsfnet-attention-pool" / "src"


def test_builtins_are_registered_in_every_kind():
    names = {kind: registry.names(kind) for kind in KINDS}
    assert {"tsf", "wavg", "mean", "max"} <= set(names["fusion"])
    assert {"synthesis", "segmentation"} <= set(names["head"])
    assert {"percentile", "p99x2"} <= set(names["normalization"])
    assert "default" in names["planner"]
    assert {"l1", "smooth_l1"} <= set(names["loss"])
    assert {"pretrain", "finetune", "segment"} <= set(names["stage"])


def test_unknown_name_lists_known_ones():
    with pytest.raises(UnknownPluginError, match=r"unknown fusion 'nope'; known: .*tsf"):
        registry.get("fusion", "nope")


def test_unknown_kind():
    with pytest.raises(TsfnetError, match="unknown plugin kind"):
        registry.get("widget", "x")


def test_decorator_registration_and_clash():
    local = Registry()
    local._loaded = True  # no built-ins needed here

    @local.register("normalization", "unit")
    def unit(image, mask):
        return image, {}

    assert local.get("normalization", "unit") is unit
    with pytest.raises(TsfnetError, match="clashes"):
        local.add("normalization", "unit", object(), "other-package")


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """Install the example package's metadata the way pip would (a dist-info with
    entry_points.txt on sys.path), without needing network or a build backend."""
    dist = tmp_path / "tsfnet_attention_pool-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tsfnet-attention-pool\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(
        "[tsfnet.fusion]\nattention-pool = tsfnet_attention_pool:AttentionPoolFusion\n"
    )
    monkeypatch.syspath_prepend(str(PLUGIN_SRC))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.refresh()
    yield
    monkeypatch.undo()
    sys.modules.pop("tsfnet_attention_pool", None)
    registry._plugins["fusion"].pop("attention-pool", None)


def test_entry_point_plugin_is_listed_with_its_package(installed_plugin):
    plugin = next(p for p in registry.plugins() if p.name == "attention-pool")
    assert plugin.kind == "fusion" and plugin.provider == "tsfnet-attention-pool"


def test_entry_point_fusion_trains_and_predicts(installed_plugin, store, tmp_path):
    from tsfnet.devices import resolve_device
    from tsfnet.inference.model_folder import load_model_folder
    from tsfnet.inference.predictor import predict_folder
    from tsfnet.training.runner import TrainOptions, train

    result = train(
        TrainOptions(
            store=store,
            fusion="attention-pool",
            output=tmp_path,
            device="cpu",
            steps=2,
            val_every=2,
            num_workers=0,
            progress=False,
        )
    )
    assert (result.model_dir / "checkpoint_best.pt").is_file()
    trained = load_model_folder(result.model_dir, resolve_device("cpu"))
    raw = Path(trained.plans.raw["raw_path"])
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for channel in (0, 1, 3):
        (inputs / f"X_{channel:04d}.nii.gz").symlink_to(raw / "imagesTs" / f"PH_0006_{channel:04d}.nii.gz")
    report = predict_folder(trained, inputs, tmp_path / "out", progress=False)
    assert [p.name for p in report.written] == ["X_T2.nii.gz"] and not report.failed
