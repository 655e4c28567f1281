"""`tsfnet demo`: the whole product on a generated phantom dataset, on the CPU in minutes.

generate -> plan -> preprocess -> train (TSF's two stages, or --fusion's) -> predict with 1, 2 and 3
inputs on held-out cases -> evaluate -> explain.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from tsfnet.data.dataset import RawDataset
from tsfnet.data.phantom import LABELS, SEQUENCES, write_dataset
from tsfnet.errors import InputError
from tsfnet.registry import registry

log = logging.getLogger("tsfnet")
N_TEST = 4  # one per target sequence (make_nested_scenarios)
DEMO_BATCH = 8
# Over the CPU plan's training (poly schedules, lesion oversampling): a short budget, stage 1
# at 5e-4 (benchmarks/results/cpu_schedule_2026-11-26.md: +0.6 dB over 2e-4 at 800 steps).
DEMO_TRAINING = {"pretrain": {"steps": 800, "lr": 5e-4}, "finetune": {"steps": 200}}
# The CPU plan keeps the phantom's 1 mm voxels and trains on 96 x 96 patches; the demo
# narrows its network further (16 wide, 2 residual blocks) so that it trains in minutes;
# benchmarks/quality.py trains every method at this width.
DEMO_NETWORK = {
    "encoder_widths": [16, 32, 64],
    "encoder_kernels": [7, 3, 3],
    "strides": [1, 2, 2],
    "residual_blocks": 2,
    "code_embedding": 32,
    "hyper_basis": 8,
}
DEMO_BASELINES = {  # the baselines at the same width scale (benchmarks/quality.py trains them)
    "mmgan": {"base_channels": 16, "discriminator_channels": 16},
    "hinet": {"base_channels": 16, "discriminator_channels": 16},
    "pix2pix": {"base_channels": 8, "discriminator_channels": 8},
}


def compact_plans(plans: dict) -> dict:
    """The plans with the demo's network and the baselines' matching widths."""
    plans["network"] = dict(DEMO_NETWORK)
    plans["fusion"].update(DEMO_BASELINES)
    return plans


def steps_of_other_stages(stages: tuple[str, ...], steps: int | None) -> int | None:
    """Steps per stage for a fusion that trains stages other than TSF's (hinet, joint, ...):
    --steps if given, else the demo's whole budget split evenly between them, as
    benchmarks/quality.py splits it. None where the demo's pretrain/finetune settings apply."""
    if set(stages) <= set(DEMO_TRAINING):
        return None
    return steps or sum(stage["steps"] for stage in DEMO_TRAINING.values()) // len(stages)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def make_all_subset_scenarios(raw: Path, inputs_dir: Path, reference_dir: Path) -> int:
    """From each complete test case, one virtual case per proper subset of its sequences (14,
    every one of the 28 tasks once): CASE_in2s03 keeps channels 0 and 3. The references keep
    all four; the labels go to labelsTs/ beside the reference folder."""
    cases = RawDataset.load(raw, images_folder="imagesTs").cases
    n = len(SEQUENCES)
    count = 0
    for case, n_inputs in itertools.product(cases, range(1, n)):
        for keep in itertools.combinations(range(n), n_inputs):
            virtual = f"{case.case_id}_in{n_inputs}s" + "".join(map(str, keep))
            for channel, path in case.channel_files.items():
                name = f"{virtual}_{channel:04d}.nii.gz"
                _link(path, reference_dir / name)
                if channel in keep:
                    _link(path, inputs_dir / name)
            if case.label_file is not None:  # where evaluate finds it: the lesion-region scores
                _link(case.label_file, reference_dir.parent / "labelsTs" / f"{virtual}.nii.gz")
            count += 1
    return count


def nested_sources(target: int) -> list[list[int]]:
    """The inputs of a target's scenarios: 1, 2, then 3 of the other sequences, in the order
    after the target (T1Gd for T1 first, then T2, then FLAIR)."""
    n = len(SEQUENCES)
    others = [(target + step) % n for step in range(1, n)]
    return [others[:k] for k in range(1, n)]


def make_nested_scenarios(raw: Path, inputs_dir: Path, reference_dir: Path) -> dict[str, Path]:
    """Test case i withholds one target, sequence i mod 4, and gets 1, 2, then 3 of the other
    sequences, each scenario adding one: every row of Table 1 then holds the same targets,
    so the rows compare numbers of inputs and nothing else. The inputs go to one folder per
    target (`inputs_dir/<target>/`, predicted for that target only); the references, all
    four sequences, to `reference_dir`, and the labels to labelsTs/ beside it."""
    cases = RawDataset.load(raw, images_folder="imagesTs").cases
    folders = {}
    for index, case in enumerate(cases):
        target = index % len(SEQUENCES)
        folder = folders.setdefault(SEQUENCES[target], inputs_dir / SEQUENCES[target])
        for n_inputs, sources in enumerate(nested_sources(target), start=1):
            virtual = f"{case.case_id}_in{n_inputs}"
            for channel, path in case.channel_files.items():
                _link(path, reference_dir / f"{virtual}_{channel:04d}.nii.gz")
                if channel in sources:
                    _link(path, folder / f"{virtual}_{channel:04d}.nii.gz")
            if case.label_file is not None:
                _link(case.label_file, reference_dir.parent / "labelsTs" / f"{virtual}.nii.gz")
    return folders


def write_case_figure(raw: Path, path: Path) -> Path:
    """Mid axial slices of the first training case, through its enhancing tumour: every
    sequence and the labels (the README's phantom figure is made this way)."""
    from tsfnet.data.dataset import load_case
    from tsfnet.plotting import mid_axial, save_montage

    dataset = RawDataset.load(raw)
    case = load_case(dataset.cases[0], with_label=True)
    enhancing = np.argwhere(case.label == LABELS["ET"]) if case.label is not None else np.empty((0, 3))
    z = int(enhancing[:, 2].mean()) if len(enhancing) else None
    panels = [(dataset.channel_names[c], mid_axial(image, z)) for c, image in sorted(case.images.items())]
    if case.label is not None:
        panels.append(("labels (NCR/ED/ET)", mid_axial(case.label.astype(float), z)))
    last = len(panels) - 1
    return save_montage(path, panels, cmap={last: "viridis"}, value_range={last: (0, 3)})


def run_demo(
    output: Path,
    generate_only: bool,
    cases: int,
    downsample: int,
    seed: int,
    device: str,
    steps: int | None,
    missing_rate: float,
    overwrite: bool,
    fusion: str = "tsf",
) -> None:
    """Everything lands under `output` in the layout the short commands expect: the raw
    dataset, `tsfnet_preprocessed/` and `tsfnet_results/` beside it (so `tsfnet train` run in
    `output` or in the dataset finds the store), then the test inputs, predictions and reports."""
    from tsfnet.atomic import write_json
    from tsfnet.devices import resolve_device
    from tsfnet.evaluation.evaluate import evaluate
    from tsfnet.inference.explain import explain_weights
    from tsfnet.inference.model_folder import load_model_folder
    from tsfnet.inference.predictor import predict_folder
    from tsfnet.model import FusionModel, build_model
    from tsfnet.planning.api import PLANS_FILE, plan
    from tsfnet.planning.plans import save_plans
    from tsfnet.preprocessing.pipeline import list_preprocessed, preprocess_dataset
    from tsfnet.training.runner import TrainOptions, train
    from tsfnet.training.splits import SPLITS_FILE

    output = Path(output)
    registry.get("fusion", fusion)  # a mistyped name fails before minutes of data generation
    if output.exists() and any(output.iterdir()):
        if not overwrite:
            raise InputError(output, "already exists and is not empty (pass --overwrite or another -o)")
        shutil.rmtree(output)
    n_train = cases if generate_only else max(cases - N_TEST, 4)
    n_test = 0 if generate_only else N_TEST
    raw = write_dataset(output, n_train, downsample, seed, missing_rate=missing_rate, progress=True, n_test=n_test)
    log.info(f"phantom dataset: {raw}; one case pictured in {write_case_figure(raw, output / 'phantom.png')}")
    if generate_only:
        return
    store, plans = plan(raw, budget="cpu")
    for stage, settings in DEMO_TRAINING.items():
        plans["training"][stage].update(settings, **({"steps": steps} if steps else {}))
    save_plans(compact_plans(plans), store / PLANS_FILE)
    own_steps = steps_of_other_stages(build_model(plans, fusion).stages, steps)
    preprocess_dataset(RawDataset.load(raw), store, plans)
    ids = list_preprocessed(store)  # one validation case: the demo validates once per stage
    write_json(store / SPLITS_FILE, [{"train": ids[:-1], "val": ids[-1:]}])
    result = train(
        TrainOptions(
            store=store,
            fusion=fusion,
            device=device,
            batch_size=DEMO_BATCH,
            steps=own_steps,
            val_every=own_steps or max(plans["training"][stage]["steps"] for stage in DEMO_TRAINING),
            num_workers=0,
        )
    )
    log.info(f"model folder: {result.model_dir}")
    inputs, reference = output / "test" / "inputs", output / "test" / "reference"
    folders = make_nested_scenarios(raw, inputs, reference)
    trained = load_model_folder(result.model_dir, resolve_device(device))
    predictions = output / "predictions"
    for target, folder in folders.items():
        report = predict_folder(trained, folder, predictions, targets=target, preview=True)
        if report.failed:
            raise InputError(predictions, "; ".join(report.failed.values()))
    _rows, report_dir = evaluate(predictions, reference, output / "evaluation", previews=True)
    chart = ""
    if isinstance(trained.model, FusionModel):
        _weights_json, chart_png = explain_weights(trained, output / "explanations")
        chart = f", ω chart in {chart_png}"
    else:
        log.info(f"no ω chart: '{fusion}' is a whole network without task weights")
    summary = (report_dir / "summary.md").read_text()
    from rich.console import Console
    from rich.markdown import Markdown

    Console().print(Markdown(summary))
    log.info(f"demo finished: predictions in {predictions}, report in {report_dir}{chart}")
