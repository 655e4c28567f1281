"""`tsfnet demo`: its test scenarios and the whole run, at a coarse resolution and a few steps."""

from __future__ import annotations

import json
import re

import pytest

from tsfnet.data.phantom import SEQUENCES, write_dataset
from tsfnet.demo import DEMO_TRAINING, make_nested_scenarios, run_demo, steps_of_other_stages
from tsfnet.registry import UnknownPluginError


def channels(folder, case: str) -> set[int]:
    return {int(p.name[-len("0000.nii.gz") : -len(".nii.gz")]) for p in folder.glob(f"{case}_????.nii.gz")}


def test_each_test_case_withholds_one_target_and_gains_one_input_per_scenario(tmp_path):
    raw = write_dataset(tmp_path, 1, downsample=8, seed=2, n_test=5)
    inputs, reference = tmp_path / "inputs", tmp_path / "reference"
    folders = make_nested_scenarios(raw, inputs, reference)
    assert sorted(folders) == sorted(SEQUENCES)  # five cases: every target, one of them twice
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (raw / "imagesTs").glob("*_0000.nii.gz"))
    for index, case in enumerate(cases):
        target = SEQUENCES[index % 4]
        given = [channels(folders[target], f"{case}_in{k}") for k in (1, 2, 3)]
        assert [len(g) for g in given] == [1, 2, 3] and given[0] < given[1] < given[2]
        assert SEQUENCES.index(target) not in given[2]
        for k in (1, 2, 3):
            assert channels(reference, f"{case}_in{k}") == {0, 1, 2, 3}
            assert (tmp_path / "labelsTs" / f"{case}_in{k}.nii.gz").is_file()


@pytest.mark.parametrize("fusion", ["tsf", "hinet"])  # a feature fusion with ω, a whole network without
def test_demo_runs_end_to_end_and_reports_every_number_of_inputs(tmp_path, fusion):
    run_demo(tmp_path / "demo", False, 8, 8, 0, "cpu", 2, 0.0, False, fusion)
    demo = tmp_path / "demo"
    syntheses = sorted(p.name for p in (demo / "predictions").glob("*_in?_*.nii.gz") if "_tsem" not in p.name)
    assert len(syntheses) == 12  # 4 test cases x 1, 2 and 3 inputs, one target each
    assert all(re.fullmatch(r"PH_\d{4}_in[123]_(T1|T1Gd|T2|FLAIR)\.nii\.gz", name) for name in syntheses)
    assert len(list((demo / "evaluation" / "previews").glob("*.png"))) == 12
    assert len(list((demo / "predictions").glob("*_preview.png"))) == 12
    summary = (demo / "evaluation" / "summary.md").read_text()
    assert all(f"| {k} | 4 |" in summary for k in (1, 2, 3))  # Table 1: the same 4 targets per row
    assert "Lesion region" in summary
    assert (demo / "explanations" / "task_weights.png").is_file() == (fusion == "tsf")
    assert (demo / "tsfnet_results" / "Dataset001_Phantom" / f"{fusion}__plans__2d" / "fold_0").is_dir()
    plans = json.loads((demo / "tsfnet_preprocessed" / "Dataset001_Phantom" / "plans.json").read_text())
    assert plans["budget"] == "cpu" and plans["network"]["encoder_widths"] == [16, 32, 64]
    assert plans["training"]["pretrain"] == {"steps": 2, "lr": 5e-4, "schedule": "poly"}


def test_a_mistyped_fusion_fails_before_the_demo_writes_anything(tmp_path):
    with pytest.raises(UnknownPluginError, match=r"unknown fusion 'tfs'; known: .*tsf-ms"):
        run_demo(tmp_path / "demo", False, 8, 8, 0, "cpu", 2, 0.0, False, "tfs")
    assert not (tmp_path / "demo").exists()


def test_a_fusion_with_its_own_stages_gets_the_demos_whole_budget_split_between_them():
    total = sum(stage["steps"] for stage in DEMO_TRAINING.values())
    assert steps_of_other_stages(("pretrain", "finetune"), None) is None  # the plans' 800 + 200
    assert steps_of_other_stages(("pretrain",), 7) is None  # seq2seq-avg: --steps went into the plans
    assert steps_of_other_stages(("hinet",), None) == total
    assert steps_of_other_stages(("generator", "critic"), None) == total // 2
    assert steps_of_other_stages(("hinet",), 7) == 7
