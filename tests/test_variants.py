"""Stages and heads from outside tsfnet, the typed plans view, and plans variants side by side."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tsfnet.errors import TsfnetError
from tsfnet.planning.plans import DEFAULT_PLANS, Plans, load_plans, plans_identifier, read_plans, save_plans
from tsfnet.registry import Registry, registry
from tsfnet.training.stages import Stage

PLUGIN = '''
"""A head and a stage from outside tsfnet: an upsampling head trained by its own stage."""
from typing import ClassVar

from torch import nn

from tsfnet.training.stages import Stage


class WarmupStage(Stage):
    defaults: ClassVar[dict] = {"steps": 4, "lr": 1e-3, "schedule": "constant"}

    def loss(self, model, batch, criterion):
        return criterion(model(batch.images, batch.source_mask, batch.task_target).output, batch.target_image)


class LegacyStage(WarmupStage):
    """Declared in the old entry-point group, tsfnet.trainer."""


class UpsampleHead(nn.Module):
    stages = ("warmup",)

    def __init__(self, network, n_sequences, dims=2, n_labels=0):
        super().__init__()
        scale = 1
        for stride in network["strides"]:
            scale *= stride
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        mode = "bilinear" if dims == 2 else "trilinear"
        self.layers = nn.Sequential(
            nn.Upsample(scale_factor=scale, mode=mode), conv(network["encoder_widths"][-1], 1, 1), nn.Tanh()
        )

    def forward(self, features, target):
        return self.layers(features)
'''

ENTRY_POINTS = """[tsfnet.head]
upsample = tsfnet_upsample:UpsampleHead

[tsfnet.stage]
warmup = tsfnet_upsample:WarmupStage

[tsfnet.trainer]
legacy = tsfnet_upsample:LegacyStage
"""


@pytest.fixture
def plugin_path(tmp_path) -> Path:
    """A plugin package installed the way pip would (module + dist-info with entry points)."""
    site = tmp_path / "site"
    (site / "tsfnet_upsample").mkdir(parents=True)
    (site / "tsfnet_upsample" / "__init__.py").write_text(PLUGIN)
    dist = site / "tsfnet_upsample-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tsfnet-upsample\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    return site


def run_tsfnet(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(pythonpath), env.get("PYTHONPATH", "")) if p)
    command = [str(Path(sys.executable).with_name("tsfnet")), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def log_entries(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "training_log.jsonl").read_text().splitlines()]


def test_plugin_stage_and_head_train_through_the_cli(plugin_path, store, tmp_path):
    trained = run_tsfnet(
        "train", "-p", str(store), "--head", "upsample", "--steps", "3", "--device", "cpu", "-o", str(tmp_path / "r"),
        pythonpath=plugin_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    folder = tmp_path / "r" / "tsf__plans__2d__upsample" / "fold_0"
    entries = log_entries(folder)
    assert {e["stage"] for e in entries} == {"warmup"}
    # No training.warmup in the plans: the stage's own defaults (lr 1e-3, constant), not finetune's.
    assert {e["lr"] for e in entries if "lr" in e} == {1e-3}
    assert {"checkpoint_warmup.pt", "checkpoint_best.pt", "checkpoint_latest.pt"} <= {
        p.name for p in folder.glob("*.pt")
    }
    assert json.loads((folder / "model.json").read_text())["head"] == "upsample"

    listed = run_tsfnet("plugins", pythonpath=plugin_path)
    assert listed.returncode == 0, listed.stderr
    rows = [line.replace("│", " ").split() for line in listed.stdout.splitlines()]
    assert ["stage", "legacy", "tsfnet-upsample"] in rows, listed.stdout


def test_stage_is_named_by_its_registration_and_plugins_are_checked():
    local = Registry()
    local._loaded = True

    class Mine(Stage):
        pass

    local.add("trainer", "mine", Mine, "my-package")  # the old kind name still works
    assert local.get("stage", "mine") is Mine and Mine.name == "mine"
    with pytest.raises(TsfnetError, match="stage 'other' from my-package is already registered as 'mine'"):
        local.add("stage", "other", Mine, "my-package")
    with pytest.raises(TsfnetError, match=r"stage plugin 'bad' from my-package must subclass .*Stage"):
        local.add("stage", "bad", object, "my-package")
    with pytest.raises(TsfnetError, match=r"fusion plugin 'bad' from my-package must subclass .*FeatureFusion or"):
        local.add("fusion", "bad", lambda: None, "my-package")
    assert registry.get("trainer", "pretrain") is registry.get("stage", "pretrain")


def test_a_stage_without_plans_section_or_defaults_is_an_error(store):
    plans = read_plans(store)

    class Bare(Stage):
        name = "bare"

    with pytest.raises(TsfnetError, match=r"training\.bare is missing and stage 'bare' declares no defaults"):
        plans.training_for(Bare())
    finetune = plans.training_for(registry.get("stage", "finetune")())
    assert (finetune.lr, finetune.schedule) == (plans.raw["training"]["finetune"]["lr"], "poly")


def test_typed_view_reads_the_plans(store):
    plans = read_plans(store)
    raw = load_plans(store / "plans.json")
    assert plans.name == DEFAULT_PLANS and plans.raw == raw
    two_d = plans.configuration("2d")
    assert two_d.patch_size == raw["configurations"]["2d"]["patch_size"] and two_d.dims == 2
    assert plans.configuration("3d").context_slices == 1
    assert plans.channel_names == raw["channel_names"] and plans.n_sequences == len(raw["channel_names"])
    assert plans.label_classes == max(2, max(raw["labels"].values(), default=1) + 1)
    with pytest.raises(TsfnetError, match="unknown configuration '4d'"):
        plans.configuration("4d")
    assert plans_identifier("brats2021_paper") == plans_identifier("plans_brats2021_paper") == "plans_brats2021_paper"
    with pytest.raises(TsfnetError, match="not a plans name"):
        plans_identifier("a__b")


def test_preset_is_written_beside_the_planned_plans(raw_dataset, tmp_path):
    from tsfnet.planning.api import plan

    store, plans = plan(raw_dataset, tmp_path / "pre", preset="brats2021_paper", progress=False, workers=1)
    assert plans["preset"] == "brats2021_paper"
    assert "preset" not in load_plans(store / "plans.json")  # the planned plans stay as planned
    assert load_plans(store / "plans_brats2021_paper.json") == plans


@pytest.fixture
def variant_store(store, tmp_path) -> Path:
    """The tiny store with two variants: `lr` (preprocessed alike) and `small` (a smaller crop)."""
    copy = Path(shutil.copytree(store, tmp_path / "store", ignore=shutil.ignore_patterns("unpacked*")))
    plans = load_plans(copy / "plans.json")
    faster = json.loads(json.dumps(plans))
    faster["training"]["pretrain"].update(lr=5e-4, schedule="constant")  # the logged rate is the plan's
    save_plans(faster, copy / "plans_lr.json")
    small = json.loads(json.dumps(plans))
    small["crop_size"] = [v - 4 for v in plans["crop_size"]]
    small["configurations"]["2d"]["patch_size"] = small["crop_size"][:2]
    save_plans(small, copy / "plans_small.json")
    return copy


def test_two_plans_variants_train_side_by_side(variant_store, raw_dataset, tmp_path):
    from tsfnet.training.runner import TrainOptions, train

    pre = run_tsfnet("preprocess", "-d", str(raw_dataset), "-o", str(variant_store), "--plans", "small")
    assert pre.returncode == 0, pre.stderr
    small_crop = tuple(load_plans(variant_store / "plans_small.json")["crop_size"])
    from tsfnet.preprocessing.pipeline import load_preprocessed

    assert load_preprocessed(variant_store, "PH_0001", "cases_small").mask.shape == small_crop
    assert load_preprocessed(variant_store, "PH_0001").mask.shape != small_crop  # the default's cases untouched
    results = tmp_path / "results"
    cli = run_tsfnet(
        "train", "-p", str(variant_store), "--plans", "small", "--stage", "pretrain", "--steps", "2",
        "--device", "cpu", "-o", str(results),
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    common = {"store": variant_store, "stage": "pretrain", "steps": 2, "output": results, "device": "cpu"}
    default = train(TrainOptions(**common, num_workers=0, progress=False))
    faster = train(TrainOptions(**common, plans="lr", num_workers=0, progress=False))
    assert not (variant_store / "cases_lr").exists()  # preprocessed as plans.json: the cases are shared
    folders = sorted(p.name for p in results.iterdir())
    assert folders == ["tsf__plans__2d", "tsf__plans_lr__2d", "tsf__plans_small__2d"]
    assert default.model_dir.parent.name == "tsf__plans__2d"
    assert {e["lr"] for e in faster.history if "lr" in e} == {5e-4}
    for name in folders:
        settings = json.loads((results / name / "fold_0" / "model.json").read_text())
        assert settings["plans"] == name.split("__")[1]
    small_model = Plans.load(results / "tsf__plans_small__2d" / "fold_0" / "plans.json")
    assert small_model.crop_size == list(small_crop)


def test_old_model_folder_still_predicts(trained, tmp_path):
    """A folder from before plans had names: <fusion>__<config>, no "plans" in model.json."""
    from tsfnet.devices import resolve_device
    from tsfnet.inference.model_folder import load_model_folder
    from tsfnet.inference.predictor import predict_folder

    old = Path(shutil.copytree(trained.model_dir, tmp_path / "tsf__2d" / "fold_0"))
    settings = json.loads((old / "model.json").read_text())
    settings.pop("plans")
    (old / "model.json").write_text(json.dumps(settings))
    model = load_model_folder(old, resolve_device("cpu"))
    assert model.plans.name == DEFAULT_PLANS
    raw = Path(model.plans.raw["raw_path"]) / "imagesTs"
    inputs = tmp_path / "in"
    inputs.mkdir()
    for channel in (0, 1, 3):
        (inputs / f"X_{channel:04d}.nii.gz").symlink_to(raw / f"PH_0006_{channel:04d}.nii.gz")
    report = predict_folder(model, inputs, tmp_path / "out", progress=False)
    assert [p.name for p in report.written] == ["X_T2.nii.gz"] and not report.failed
    assert np.isfinite(np.asarray(nib.load(str(report.written[0])).dataobj)).all()
