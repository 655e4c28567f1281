"""Fingerprint + preprocess time per case on full-size (BraTS-shaped) phantom cases.

Target (issue 3): under 1 s per case on 2 cores.

    python benchmarks/plan_speed.py [--cases 50] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, write_result

from tsfnet.data.dataset import RawDataset
from tsfnet.data.phantom import BRATS_SHAPE, write_dataset
from tsfnet.planning.api import plan
from tsfnet.preprocessing.pipeline import preprocess_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        raw = write_dataset(Path(tmp), args.cases, downsample=1, seed=0, shape=BRATS_SHAPE, progress=True)
        generated = time.perf_counter() - began
        began = time.perf_counter()
        store, plans = plan(raw, Path(tmp) / "pre" / raw.name, workers=args.workers)
        fingerprint = time.perf_counter() - began
        began = time.perf_counter()
        preprocess_dataset(RawDataset.load(raw), store, plans, workers=args.workers)
        preprocess = time.perf_counter() - began
    per_case = (fingerprint + preprocess) / args.cases
    lines = [
        "# plan_speed",
        "",
        f"Command: `python benchmarks/plan_speed.py --cases {args.cases} --workers {args.workers}`",
        f"Machine: {machine()}",
        "",
        f"{args.cases} phantom cases, {'x'.join(map(str, BRATS_SHAPE))} at 1 mm, 4 sequences + labels, .nii.gz.",
        "",
        "| step | total s | s per case |",
        "|---|---|---|",
        f"| generate (not part of the target) | {generated:.1f} | {generated / args.cases:.2f} |",
        f"| fingerprint + plan | {fingerprint:.1f} | {fingerprint / args.cases:.2f} |",
        f"| preprocess | {preprocess:.1f} | {preprocess / args.cases:.2f} |",
        f"| **fingerprint + preprocess** | {fingerprint + preprocess:.1f} | **{per_case:.2f}** |",
        "",
        f"Target: < 1 s per case. {'Met' if per_case < 1 else 'Not met'}.",
        f"Planned crop {plans['crop_size']}, 2d batch {plans['configurations']['2d']['batch_size']}.",
    ]
    print(write_result("plan_speed", lines).read_text())


if __name__ == "__main__":
    main()
