"""`tsfnet demo`: the whole product on a generated phantom dataset, on the CPU in minutes.

generate -> plan -> preprocess -> train (both stages) -> predict with 1, 2 and 3
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

log = logging.getLogger("tsfnet")
N_TEST = 3
DEMO_BATCH = 8


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def make_test_scenarios(raw: Path, inputs_dir: Path, reference_dir: Path, seed: int, every_subset: bool = False) -> int:
    """From each complete test case, virtual cases that keep only some inputs: one random
    subset per number of inputs (1, 2, 3), or with `every_subset` all 14 proper
    subsets (every one of the 28 tasks); the reference keeps all four, and the labels go
    to labelsTs/ beside the reference folder."""
    rng = np.random.default_rng(seed)
    cases = RawDataset.load(raw, images_folder="imagesTs").cases
    n = len(SEQUENCES)
    count = 0
    for case, n_inputs in itertools.product(cases, range(1, n)):
        if every_subset:
            subsets = [list(s) for s in itertools.combinations(range(n), n_inputs)]
        else:
            subsets = [sorted(rng.choice(n, n_inputs, replace=False).tolist())]
        for keep in subsets:
            # CASE_in2 (one subset per size) or CASE_in2s03 (kept channels 0 and 3)
            virtual = f"{case.case_id}_in{n_inputs}" + ("s" + "".join(map(str, keep)) if every_subset else "")
            for channel, path in case.channel_files.items():
                name = f"{virtual}_{channel:04d}.nii.gz"
                _link(path, reference_dir / name)
                if channel in keep:
                    _link(path, inputs_dir / name)
            if case.label_file is not None:  # where evaluate finds it: the lesion-region scores
                _link(case.label_file, reference_dir.parent / "labelsTs" / f"{virtual}.nii.gz")
            count += 1
    return count


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
    steps: int,
    missing_rate: float,
    overwrite: bool,
) -> None:
    """Everything lands under `output` in the layout the short commands expect: the raw
    dataset, `tsfnet_preprocessed/` and `tsfnet_results/` beside it (so `tsfnet train` run in
    `output` or in the dataset finds the store), then the test inputs, predictions and reports."""
    from tsfnet.devices import resolve_device
    from tsfnet.evaluation.evaluate import evaluate
    from tsfnet.inference.explain import explain_weights
    from tsfnet.inference.model_folder import load_model_folder
    from tsfnet.inference.predictor import predict_folder
    from tsfnet.planning.api import plan
    from tsfnet.preprocessing.pipeline import preprocess_dataset
    from tsfnet.training.runner import TrainOptions, train

    output = Path(output)
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
    store, plans = plan(raw)
    preprocess_dataset(RawDataset.load(raw), store, plans)
    result = train(
        TrainOptions(
            store=store,
            fusion="tsf",
            device=device,
            steps=steps,
            batch_size=DEMO_BATCH,
            val_every=max(steps // 3, 1),
            num_workers=0,
        )
    )
    log.info(f"model folder: {result.model_dir}")
    inputs, reference = output / "test" / "inputs", output / "test" / "reference"
    make_test_scenarios(raw, inputs, reference, seed)
    trained = load_model_folder(result.model_dir, resolve_device(device))
    predictions = output / "predictions"
    report = predict_folder(trained, inputs, predictions, preview=True)
    if report.failed:
        raise InputError(predictions, "; ".join(report.failed.values()))
    _rows, report_dir = evaluate(predictions, reference, output / "evaluation")
    explain_weights(trained, output / "explanations")
    summary = (report_dir / "summary.md").read_text()
    from rich.console import Console
    from rich.markdown import Markdown

    Console().print(Markdown(summary))
    log.info(
        f"demo finished: predictions in {predictions}, report in {report_dir}, ω chart in "
        f"{output / 'explanations' / 'task_weights.png'}"
    )
