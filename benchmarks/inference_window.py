"""Whole slices or windows of the training patch: how a patch-trained 2D model should predict.

A CPU plan trains on 96 x 96 patches of the 1 mm slices; its instance norms learn the
statistics of such patches. This predicts a finished `tsfnet demo`'s test scenarios with
the demo's own model twice, on whole slices and in Gaussian-blended windows of the patch
size (`configurations.2d.sliding_window`), and evaluates both with `tsfnet evaluate`:
Table 1, the lesion region, and the seconds each took.

    tsfnet demo -o tsfnet_demo && python benchmarks/inference_window.py --demo tsfnet_demo
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, write_result

from tsfnet.devices import resolve_device
from tsfnet.evaluation.evaluate import evaluate
from tsfnet.inference.model_folder import load_model_folder
from tsfnet.inference.predictor import predict_folder

MODES = {"whole slices": False, "windows of the patch": True}


def table_rows(summary: str, heading: str) -> list[str]:
    """The data rows of one table of an evaluation summary.md."""
    lines = summary.split(heading, 1)[1].splitlines()
    return [line for line in lines[1:] if line.startswith("| ") and line[2].isdigit()][:3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, required=True, help="a finished `tsfnet demo` output folder")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model_dir = next((args.demo / "tsfnet_results").glob("*/tsf__*__2d/fold_0"))
    trained = load_model_folder(model_dir, resolve_device(args.device))
    folders = sorted(p for p in (args.demo / "test" / "inputs").iterdir() if p.is_dir())
    patch = trained.plans.configuration("2d").patch_size
    lines = [
        "# inference_window: a patch-trained 2D model on whole slices or in windows of its patch",
        "",
        f"Command: `python benchmarks/inference_window.py --demo {args.demo}`",
        f"Machine: {machine()}; device {args.device}.",
        f"Model: the demo's ({model_dir.relative_to(args.demo)}), trained on {patch[0]} x {patch[1]} patches; "
        f"its {len(folders) * 3} test scenarios (1, 2, 3 inputs per test case), metrics from `tsfnet evaluate`.",
        "",
    ]
    with tempfile.TemporaryDirectory() as work:
        for mode, windowed in MODES.items():
            trained.plans.raw["configurations"]["2d"]["sliding_window"] = windowed
            predictions = Path(work) / "predictions"
            start = time.perf_counter()
            for folder in folders:
                predict_folder(trained, folder, predictions, targets=folder.name, progress=False)
            seconds = time.perf_counter() - start
            _rows, report = evaluate(predictions, args.demo / "test" / "reference", Path(work) / "evaluation")
            summary = (report / "summary.md").read_text()
            lines += [
                f"## {mode}: predicted in {seconds:.0f} s",
                "",
                "| inputs | n | PSNR box | SSIM box | SSIM 3D box | PSNR brain | SSIM brain | LPIPS |",
                "|---|---|---|---|---|---|---|---|",
                *table_rows(summary, "## Table 1"),
                "",
                "| inputs | n | PSNR lesion | SSIM lesion |",
                "|---|---|---|---|",
                *table_rows(summary, "## Lesion region"),
                "",
            ]
            shutil.rmtree(predictions)
            shutil.rmtree(Path(work) / "evaluation")
    print(write_result("inference_window", lines))


if __name__ == "__main__":
    main()
