"""benchmarks/quality.py's verdicts, learning curves and lesion previews: what its result
file is read and looked at for."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tests.conftest import import_benchmark
from tsfnet.demo import make_nested_scenarios
from tsfnet.inference.model_folder import load_model_folder


@pytest.fixture(scope="module")
def quality():
    yield from import_benchmark("quality")


def outcome(psnr_by_inputs: dict[int, float], history: list[dict] | None = None) -> dict:
    rows = [{"n_inputs": n, "psnr": value} for n, value in psnr_by_inputs.items()]
    return {"rows": rows, "history": history if history is not None else [{"stage": "s", "step": 1}]}


def validations(stage: str, points: list[tuple[int, float, float]]) -> list[dict]:
    return [{"stage": stage, "step": s, "train_s": t, "val_psnr": v} for s, t, v in points]


def test_verdicts_name_the_winner_margins_and_the_fusion_gain(quality):
    outcomes = {
        "tsf": outcome({1: 20.0, 2: 21.0, 3: 21.5}),
        "mean": outcome({1: 20.0, 2: 20.9, 3: 21.4}),
        "hinet": outcome({1: 21.0, 2: 22.0, 3: 21.9}),
        "tsf x5 folds": outcome({1: 30.0, 2: 30.0, 3: 30.0}, history=[]),  # an ensemble is no contender
    }
    text = "\n".join(quality.verdicts(outcomes))
    assert "Winner (mean PSNR over 2 and 3 inputs): **hinet**" in text
    assert "- hinet: 21.00 -> 22.00 -> 21.90 dB for 1 -> 2 -> 3 inputs (Table 1): does **not** rise." in text
    assert "- tsf: 20.00 -> 21.00 -> 21.50 dB for 1 -> 2 -> 3 inputs (Table 1): rises." in text
    assert "- 2 inputs: 21.00 dB, -1.00 dB against the best, hinet: **not** ahead of every baseline." in text
    assert "- 3 inputs: +0.10 dB: **no**." in text  # tsf - mean under the 0.3 dB target
    weights = [{"T1": 1.0}, {"T1": 0.6, "T2": 0.4}, {"T1": 0.2, "T2": 0.4, "T1Gd": 0.4}]
    outcomes["tsf"]["omega_spread"] = quality.omega_spread([{"weights": w} for w in weights])
    assert outcomes["tsf"]["omega_spread"] == pytest.approx((0.1167, 0.1333), abs=1e-4)  # one source: no say
    said = "\n".join(quality.verdicts(outcomes))
    assert "tsf's ω lies 0.117 on average (at most 0.133) from a plain mean's 1/k" in said


def test_rise_with_inputs_is_judged_on_the_same_targets(quality):
    """Table 1's 3-input row falls because its one target is the hard one; on the (case,
    target) pairs synthesised with 1, 2 and 3 inputs the synthesis gets better."""
    rows = [
        {"case": "PH_0001_in1", "target": "T2", "n_inputs": 1, "psnr": 20.0},
        {"case": "PH_0001_in1", "target": "FLAIR", "n_inputs": 1, "psnr": 20.0},
        {"case": "PH_0001_in2", "target": "T2", "n_inputs": 2, "psnr": 21.0},
        {"case": "PH_0001_in2", "target": "T1Gd", "n_inputs": 2, "psnr": 16.0},
        {"case": "PH_0001_in3", "target": "T2", "n_inputs": 3, "psnr": 22.0},
    ]
    said = quality.rises_with_inputs("tsf", {"rows": rows})
    assert "20.00 -> 18.50 -> 22.00 dB for 1 -> 2 -> 3 inputs (Table 1)" in said
    assert said.endswith("pairs synthesised with 1, 2 and 3 inputs 20.00 -> 21.00 -> 22.00 dB: rises.")
    assert "on the 1 (case, target)" in said


def test_stage_curves_continue_steps_and_minutes_across_stages(quality):
    history = validations("pretrain", [(5, 60.0, 14.0), (10, 120.0, 15.0)])
    history += [{"stage": "finetune", "step": 3, "loss": 1.0}]  # loss lines are not validations
    history += validations("finetune", [(5, 30.0, 16.0), (10, 60.0, 16.05)])
    curves = quality.stage_curves(history)
    assert [stage for stage, _ in curves] == ["pretrain", "finetune"]
    assert curves[1][1] == [(15, 2.5, 16.0), (20, 3.0, 16.05)]
    assert quality.plateau({"history": history}) == "finetune: +0.05 dB over its last 5 steps: levelled off"
    rising = validations("finetune", [(5, 30.0, 16.0), (10, 60.0, 17.0)])
    assert "**still rising**" in quality.plateau({"history": rising})


def test_learning_curve_chart_is_written(quality, tmp_path):
    history = validations("pretrain", [(5, 60.0, 14.0), (10, 120.0, 15.0)])
    history += validations("finetune", [(5, 30.0, 16.0), (10, 60.0, 16.5)])
    path = quality.plot_learning_curves({"tsf": {"history": history}, "mean": {"history": history}}, tmp_path / "c.png")
    assert path.is_file() and path.stat().st_size > 10_000


@pytest.mark.parametrize("sampling", ["per_sample", "per_batch"])
def test_a_resumed_run_reports_the_task_sampling_it_trained_with(quality, store, tmp_path, sampling):
    from tsfnet.planning.plans import load_plans, save_plans

    plans = load_plans(store / "plans.json")
    plans["training"]["task_sampling"] = sampling
    save_plans(plans, tmp_path / "preprocessed" / "Dataset001" / "plans.json")
    args = quality.argparse.Namespace(
        task_sampling=None, budget=1.0, downsample=1, full=False, fusions=",".join(quality.FUSIONS), seed=0
    )  # the defaults
    quality.existing_data(args, tmp_path)
    assert args.task_sampling == sampling
    assert quality.result_name(args) == f"quality_1mm_{sampling}"  # one run never overwrites the other's file
    args.budget = 1.6
    assert quality.result_name(args) == f"quality_1mm_{sampling}_x1.6"
    args.downsample = 4
    assert quality.result_name(args) == f"quality_4mm_{sampling}_x1.6"  # a coarser phantom is named as such
    args.full = True
    assert quality.result_name(args) == f"quality_1mm_{sampling}_x1.6"  # --full always runs at 1 mm
    args.fusions = "mean,seq2seq-early"
    assert quality.result_name(args) == f"quality_1mm_{sampling}_x1.6_mean+seq2seq-early"  # not the full comparison
    args.seed = 1
    assert quality.result_name(args) == f"quality_1mm_{sampling}_x1.6_seed1_mean+seq2seq-early"  # nor another seed's


def test_lesion_previews_show_each_target_through_the_tumour(quality, trained, raw_dataset, tmp_path):
    """One PNG per test case, a row per method that predicted it (methods without predictions
    are left out), written as the benchmark's report names them."""
    work = tmp_path / "work"
    make_nested_scenarios(raw_dataset, work / "test" / "inputs", work / "test" / "reference")
    model = load_model_folder(trained.model_dir, torch.device("cpu"))
    assert not quality.predict_scenarios(model, work / "test" / "inputs", work / "predictions" / "tsf")
    written = quality.plot_lesion_previews(["tsf", "mean"], work, tmp_path / "quality_x")
    labelled = sorted((work / "test" / "labelsTs").glob("*_in3.nii.gz"))
    assert len(written) == len(labelled) > 0
    for path in written:
        assert path.name.startswith("quality_x_lesion_") and path.stat().st_size > 10_000
        width, height = Image.open(path).size
        assert width > 3 * height  # one row (tsf): the reference and 1, 2, 3 inputs
