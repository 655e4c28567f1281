"""Seconds and peak RAM to predict one BraTS-sized case (240x240x155, 1 mm) in each of
its three missing-target variants (BraSyn's setting: one sequence missing, here T1Gd,
T2 or FLAIR in turn, synthesised from the other three), with the paper's preset
(2.5D, 192x192x128 crop, widths 64/128/256). The weights are random: speed does not
depend on them. Targets (issue 6): CPU under 60 s and 4 GB on 2 cores; CUDA under 2 s
(issue 16: under 1 s). Each variant's time is split into its phases (reading the NIfTI
files, preprocessing, the network, restoring the geometry, writing), so what a GPU cannot
speed up is visible on any machine.

    python benchmarks/predict_speed.py [--device cpu] [--fusion tsf] [--precision auto|bf16|fp32]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, peak_rss_gib, write_result

import tsfnet.inference.predictor as predictor
from tsfnet.atomic import write_json
from tsfnet.data.phantom import BRATS_SHAPE, write_dataset
from tsfnet.devices import resolve_device
from tsfnet.inference.model_folder import load_model_folder
from tsfnet.inference.predictor import predict_folder
from tsfnet.model import build_model
from tsfnet.planning.api import plan
from tsfnet.training.checkpoint import save_checkpoint

MISSING = (1, 2, 3)  # T1Gd, T2, FLAIR
# The functions `predict_folder` runs, by phase (names in tsfnet.inference.predictor).
PHASES = {
    "read": "load_case",
    "preprocess": "preprocess_volumes",
    "restore": "restore_geometry",
    "write": "write_volume",
}


@contextmanager
def timed_phases(trained, device: torch.device) -> Iterator[dict[str, float]]:
    """Seconds spent in each phase while the block runs; "network" is the model's predict
    (synchronised on CUDA), "other" what none of them covers."""
    spent: dict[str, float] = defaultdict(float)

    def timed(name: str, function: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                spent[name] += time.perf_counter() - began

        return wrapper

    originals = {attr: getattr(predictor, attr) for attr in PHASES.values()}
    for name, attr in PHASES.items():
        setattr(predictor, attr, timed(name, originals[attr]))
    network = trained.predict
    trained.predict = timed("network", network)
    try:
        yield spent
    finally:
        for attr, function in originals.items():
            setattr(predictor, attr, function)
        trained.predict = network


def random_model_folder(folder: Path, plans: dict, fusion: str) -> Path:
    """A model folder as `tsfnet train` writes it, with untrained weights."""
    torch.manual_seed(0)
    model = build_model(plans, fusion)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "plans.json", plans)
    write_json(folder / "model.json", {"fusion": fusion, "head": "synthesis", "config": "2d", "fold": 0})
    save_checkpoint(folder / "checkpoint_best.pt", {"fusion": fusion, "head": "synthesis", "model": model.state_dict()})
    return folder


def prepare_case(work: Path) -> tuple[Path, dict]:
    """One full-size phantom case and its plans under the paper's preset."""
    raw = write_dataset(work / "raw", 1, downsample=1, seed=0, shape=BRATS_SHAPE)
    _, plans = plan(raw, work / "pre" / raw.name, preset="brats2021_paper", workers=1, progress=False)
    return raw, plans


def predict_times(
    fusion: str, device: str, work: Path, raw: Path, plans: dict, precision: str = "auto"
) -> tuple[dict[str, float], dict[str, dict[str, float]], float, str, int]:
    """({variant: seconds}, {variant: {phase: seconds}}, peak RSS GiB of this process,
    precision, batch size) with `tsfnet predict`'s defaults. Run it in a fresh process
    (`in_fresh_process`) so the peak is the prediction's own."""
    folder = random_model_folder(work / f"model_{fusion}_{precision}", plans, fusion)
    trained = load_model_folder(folder, resolve_device(device), precision=precision)
    images = raw / "imagesTr"
    times, phases = {}, {}
    for missing in MISSING:
        inputs = work / f"in_{fusion}_{precision}_{missing}"
        inputs.mkdir(parents=True)
        for channel in range(4):
            if channel != missing:
                os.link(images / f"PH_0000_{channel:04d}.nii.gz", inputs / f"PH_0000_{channel:04d}.nii.gz")
        name = plans["channel_names"][missing]
        with timed_phases(trained, trained.device) as spent:
            began = time.perf_counter()
            report = predict_folder(trained, inputs, work / f"out_{fusion}_{precision}_{missing}", progress=False)
            if trained.device.type == "cuda":
                torch.cuda.synchronize()
            times[name] = time.perf_counter() - began
        phases[name] = {**spent, "other": times[name] - sum(spent.values())}
        assert len(report.written) == 1 and not report.failed
    return times, phases, peak_rss_gib(), trained.precision, trained.batch_size


def in_fresh_process(function, *args):
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fusion", default="tsf")
    parser.add_argument("--precision", default="auto", help="as tsfnet predict --precision")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw, plans = prepare_case(Path(tmp))
        job = (predict_times, args.fusion, args.device, Path(tmp), raw, plans, args.precision)
        times, phases, peak, precision, batch_size = in_fresh_process(*job)
    target_s = 2.0 if args.device.startswith("cuda") else 60.0
    columns = [*PHASES, "network", "other"]
    rows = [
        f"| {name} | {seconds:.2f} | {'yes' if seconds < target_s else 'no'} | "
        + " | ".join(f"{phases[name].get(phase, 0.0):.2f}" for phase in columns)
        + " |"
        for name, seconds in times.items()
    ]
    crop = "x".join(map(str, plans["crop_size"]))
    lines = [
        f"# predict_speed ({args.fusion}, {args.device})",
        "",
        f"Command: `python benchmarks/predict_speed.py --device {args.device} --fusion {args.fusion} "
        f"--precision {args.precision}`",
        f"Machine: {machine()}; torch threads {torch.get_num_threads()}",
        f"Inference: {precision}, {batch_size} slices per forward pass (`tsfnet predict`'s defaults on this device "
        "unless --precision is given)",
        "",
        f"One phantom case of {'x'.join(map(str, BRATS_SHAPE))} voxels; preset brats2021_paper (crop {crop}, "
        f"{plans['configurations']['2d']['context_slices']} context slices, widths "
        f"{plans['network']['encoder_widths']}); the whole `predict_folder` call per variant: read, "
        "preprocess, synthesise every slice, restore the geometry, write the synthesis, TSEM and weights.",
        "",
        f"| missing (synthesised) | seconds | under {target_s:.0f} s | " + " | ".join(columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
        *rows,
        "",
        f"Peak resident memory of the predicting process (model + three predictions): {peak:.2f} GiB "
        f"(target under 4 GB: {'met' if peak < 4 else 'not met'}).",
    ]
    name = f"predict_speed_{args.fusion}_{args.device.split(':')[0]}_{precision}"
    print(write_result(name, lines).read_text())


if __name__ == "__main__":
    main()
