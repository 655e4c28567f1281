"""TSF against the image-level baselines, for speed: training throughput (slices/s)
at the paper's 2D size and the time to predict one full BraTS-sized case, each with
the ratio to `tsf`. CPU always; on CUDA also fp32 against bf16, with and without
torch.compile (training).

    python benchmarks/speed.py [--fusions tsf,mmgan,hinet] [--batch 8] [--steps 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, write_result
from model_speed import step_time
from predict_speed import in_fresh_process, predict_times, prepare_case

SHAPE = (192, 192)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fusions", default="tsf,mmgan,hinet")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    fusions = args.fusions.split(",")
    settings = [("cpu", "fp32", {})]
    if torch.cuda.is_available():
        settings += [
            ("cuda", "fp32", {}),
            ("cuda", "bf16", {"precision": "bf16"}),
            ("cuda", "bf16 + compile", {"precision": "bf16", "compile_model": True}),
        ]
    train_rows = []
    for device, label, kwargs in settings:
        rates = {}
        for fusion in fusions:
            seconds, _ = step_time(fusion, "2d", SHAPE, args.batch, torch.device(device), args.steps, **kwargs)
            rates[fusion] = args.batch / seconds
        base = rates[fusions[0]]
        train_rows += [f"| {device} {label} | {f} | {rate:.2f} | {rate / base:.2f} |" for f, rate in rates.items()]
    predict_rows = []
    work = Path(tempfile.mkdtemp(prefix="tsfnet_speed_"))
    raw, plans = prepare_case(work)
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        seconds = {}
        for fusion in fusions:
            # A fresh process per method, so its peak memory is its own.
            times, peak, _, _ = in_fresh_process(predict_times, fusion, device, work / device, raw, plans)
            seconds[fusion] = (sum(times.values()) / len(times), peak)
        base = seconds[fusions[0]][0]
        predict_rows += [
            f"| {device} | {f} | {s:.1f} | {s / base:.2f} | {peak:.2f} |" for f, (s, peak) in seconds.items()
        ]
    lines = [
        "# speed: TSF against the image-level baselines",
        "",
        f"Command: `python benchmarks/speed.py --fusions {args.fusions} --batch {args.batch} --steps {args.steps}`",
        f"Machine: {machine()}",
        "",
        f"## Training: one step of each method's (last) stage, {SHAPE[0]}x{SHAPE[1]} slices, batch {args.batch}",
        "",
        "tsf: stage 2 (E frozen) with the paper's network; mmgan/hinet: one discriminator and one generator "
        "update with their default (paper) widths. Ratio: throughput / the first method's.",
        "",
        f"| device, precision | method | slices / s | ratio to {fusions[0]} |",
        "|---|---|---|---|",
        *train_rows,
        "",
        "## Inference: one 240x240x155 case, one missing sequence (mean of the three variants)",
        "",
        "The paper's preset (192x192x128 crop, 2.5D), read -> preprocess -> synthesise -> restore -> write. "
        "Peak: resident memory of the process that predicted (one per method).",
        "",
        f"| device | method | s / case | ratio to {fusions[0]} | peak GiB |",
        "|---|---|---|---|---|",
        *predict_rows,
    ]
    shutil.rmtree(work, ignore_errors=True)
    if not torch.cuda.is_available():
        lines += ["", "No CUDA device here: the CUDA rows come from the same command on a GPU machine."]
    print(write_result("speed", lines).read_text())


if __name__ == "__main__":
    main()
