"""Training throughput through the real `tsfnet train` path: TaskBatchLoader, batchgenerators
augmentation and workers, to_batch, the stage's step, loss bookkeeping and logging, all run
by Runner.run_stage on a phantom store. Per row: steps/s, slices/s, the share of wall time
spent waiting for the next batch, the bare step (Stage.step replayed on the timed steps' own
batches, already on the device) and the runner's overhead over it; on CUDA also the FLOPs of one step
(torch.utils.flop_counter) as TFLOP/s and as a share of the GPU's dense bf16 peak.

Sizes: `demo` (the phantom at 1/4 resolution, the planned network, batch 8: the demo's size when issue 16 was filed),
`cpu` (the CPU plan at 1 mm, 96x96 patches, with the network `tsfnet demo` and benchmarks/quality.py train, batch 8)
and `paper` (192x192 slices, the paper's network, batch 8). Rows: tsf pretrain and finetune
with one task per sample and per batch (`training.task_sampling`), mmgan and hinet.

    python benchmarks/train_speed.py [--device cpu] [--sizes demo,cpu,paper] [--rows all] [--work DIR]
        [--warmup 2] [--steps 6] [--bare 3] [--workers 2] [--precision auto] [--compile]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, write_result

import tsfnet.training.runner as runner
from tsfnet.atomic import write_json
from tsfnet.data.dataset import RawDataset
from tsfnet.data.phantom import write_dataset
from tsfnet.demo import compact_plans
from tsfnet.devices import resolve_precision
from tsfnet.planning.api import plan
from tsfnet.planning.planner import network_for
from tsfnet.planning.plans import save_plans
from tsfnet.preprocessing.pipeline import list_preprocessed, preprocess_dataset
from tsfnet.registry import registry
from tsfnet.training.splits import SPLITS_FILE

# (fusion, stage, task sampling); a finetune row starts from the pretrain row before it.
ROWS = {
    "tsf-pretrain-sample": ("tsf", "pretrain", "per_sample"),
    "tsf-pretrain-batch": ("tsf", "pretrain", "per_batch"),
    "tsf-finetune-sample": ("tsf", "finetune", "per_sample"),
    "tsf-finetune-batch": ("tsf", "finetune", "per_batch"),
    "mmgan": ("mmgan", "mmgan", "per_batch"),
    "hinet": ("hinet", "hinet", "per_batch"),
}
BATCH = 8
# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, SXM parts.
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}


def make_store(work: Path, size: str, workers: int) -> Path:
    """Four phantom cases (three train, one validates); `cpu` and `paper` at full resolution,
    `cpu` with the CPU plan and the demo's network, `paper` with the paper's network.
    A store already made under `work` is reused."""
    ready = work / "store.txt"
    if ready.is_file():
        return Path(ready.read_text())
    raw = write_dataset(work / "raw", 4, 4 if size == "demo" else 1, seed=0)
    budget = "cpu" if size == "cpu" else "auto"
    store, plans = plan(raw, work / "preprocessed" / raw.name, workers=2, budget=budget)
    if size == "cpu":
        plans = compact_plans(plans)
    if size == "paper":
        plans["network"] = network_for([192, 192, 128])
        plans["crop_size"] = [192, 192, 128]
        plans["configurations"]["2d"]["patch_size"] = [192, 192]
    plans["configurations"]["2d"]["batch_size"] = BATCH
    plans["training"]["num_workers"] = workers
    save_plans(plans, store / "plans.json")
    preprocess_dataset(RawDataset.load(raw), store, plans, workers=2)
    ids = list_preprocessed(store)
    write_json(store / SPLITS_FILE, [{"train": ids[:3], "val": ids[3:]}])
    ready.write_text(str(store))
    return store


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class TimedBatches:
    """The runner's device batches, timing how long each `next` keeps the step waiting."""

    def __init__(self, inner: Iterator) -> None:
        self.inner, self.waits = inner, []

    def __iter__(self) -> TimedBatches:
        return self

    def __next__(self) -> dict:
        began = time.perf_counter()
        item = next(self.inner)
        self.waits.append(time.perf_counter() - began)
        return item

    def _finish(self) -> None:
        self.inner._finish()


@dataclass
class Measured:
    steps_s: float
    data_share: float
    bare_s: float
    flops: float | None


def measure(store: Path, out: Path, fusion: str, stage_name: str, sampling: str, args) -> Measured:
    """Runs warmup + steps through Runner.run_stage, then times the bare step on the batches of
    the timed window itself: tasks differ from batch to batch (a finetune step costs more with
    more sources), so one batch repeated is not the step the runner timed."""
    options = runner.TrainOptions(
        store=store,
        fusion=fusion,
        output=out,
        stage=stage_name,
        steps=args.warmup + args.steps,
        val_every=10**9,  # validation only after the last (timed) step
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        progress=False,
    )
    trainer = runner.Runner(options)
    trainer.training = dataclasses.replace(trainer.training, task_sampling=sampling)
    trainer.write_model_folder()
    trainer.cases.unpack()
    base = registry.get("stage", stage_name)
    starts: list[float] = []
    seen: list = []
    last: dict = {}

    class Timed(base):
        def step(self, model, batch, criterion, optimizers, progress):
            starts.append(time.perf_counter())
            seen.append(batch)
            last.update(model=model, criterion=criterion, optimizers=optimizers)
            return super().step(model, batch, criterion, optimizers, progress)

    stage = Timed(precision=trainer.precision)
    batches: list[TimedBatches] = []
    original = runner.device_batches

    def timed_batches(*positional, **keywords) -> TimedBatches:
        batches.append(TimedBatches(original(*positional, **keywords)))
        return batches[-1]

    runner.device_batches = timed_batches
    try:
        trainer.run_stage(stage, None)
    finally:
        runner.device_batches = original
    device = trainer.device
    sync(device)
    # Iterations warmup+1 .. warmup+steps-1 lie between step starts; the last one ends at the validation.
    timed = starts[args.warmup :]
    wall = timed[-1] - timed[0]
    waits = batches[0].waits[args.warmup + 1 : args.warmup + len(timed)]
    window = seen[args.warmup : args.warmup + len(timed) - 1]  # the steps between the timed starts
    bare = []
    for _ in range(args.bare):
        for batch in window:
            sync(device)
            began = time.perf_counter()
            base.step(stage, last["model"], batch, last["criterion"], last["optimizers"], 0.5)
            sync(device)
            bare.append(time.perf_counter() - began)
    flops = None
    if device.type == "cuda":
        with FlopCounterMode(display=False) as counter:
            for batch in window:
                base.step(stage, last["model"], batch, last["criterion"], last["optimizers"], 0.5)
        flops = float(counter.get_total_flops()) / len(window)
    return Measured((len(timed) - 1) / wall, sum(waits) / wall, sum(bare) / len(bare), flops)


def bf16_peak() -> float | None:
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return next((peak for key, peak in BF16_PEAK.items() if key in name), None)


def row(size: str, name: str, m: Measured, device: torch.device) -> str:
    overhead = 1 / (m.steps_s * m.bare_s) - 1
    cells = [size, name, f"{m.steps_s:.3f}", f"{m.steps_s * BATCH:.2f}", f"{100 * m.data_share:.0f} %"]
    cells += [f"{m.bare_s:.3f}", f"{100 * overhead:+.0f} %"]
    if device.type == "cuda":
        peak = bf16_peak()
        achieved = m.flops * m.steps_s / 1e12 if m.flops else float("nan")
        cells += [f"{achieved:.1f}", f"{100 * achieved * 1e12 / peak:.1f} %" if peak else "n/a"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="demo,paper")
    parser.add_argument("--rows", default="all", help=f"comma-separated of {', '.join(ROWS)}")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocation, compilation)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps")
    parser.add_argument("--bare", type=int, default=3, help="repeats of the bare step")
    parser.add_argument("--workers", type=int, default=2, help="augmentation worker processes")
    parser.add_argument("--precision", default="auto", help="auto (bf16 where native), bf16 or fp32, as `tsfnet train`")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--work", type=Path, default=None, help="keep the stores here")
    args = parser.parse_args()
    names = list(ROWS) if args.rows == "all" else args.rows.split(",")
    device = torch.device(args.device)
    work = args.work or Path(tempfile.mkdtemp(prefix="tsfnet_train_speed_"))
    lines = []
    for size in args.sizes.split(","):
        store = make_store(work / size, size, args.workers)
        for name in names:
            fusion, stage, sampling = ROWS[name]
            measured = measure(store, work / size / "results", fusion, stage, sampling, args)
            lines.append(row(size, name, measured, device))
            print(lines[-1], flush=True)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    cuda = device.type == "cuda"
    precision = resolve_precision(device, args.precision)
    header = "| size | row | steps / s | slices / s | waiting for data | bare step s | runner overhead |"
    header += " TFLOP/s | of bf16 peak |" if cuda else ""
    result = [
        f"# train_speed ({device.type}, {precision}{', compile' if args.compile else ''})",
        "",
        f"Command: `python benchmarks/train_speed.py {' '.join(sys.argv[1:])}`",
        f"Machine: {machine()}",
        "",
        f"Batch {BATCH}; {args.steps} timed steps after {args.warmup} warm-up steps, through Runner.run_stage with "
        f"{args.workers} augmentation workers. Waiting for data: time the step waits for its next device batch "
        "(conversion and copy included; on CUDA they are prefetched) / wall time. "
        "Bare step: Stage.step replayed on the timed steps' own batches (the same tasks), already on the device, "
        f"{args.bare} times. Runner overhead: wall time per "
        "step over the bare step (data wait, to_batch, the copy, logging; on the CPU the workers also share the "
        "cores with the step). Finetune rows start from the pretrain row's weights.",
        "",
        header,
        "|---|---|---|---|---|---|---|" + ("---|---|" if cuda else ""),
        *lines,
    ]
    if not cuda:
        result += ["", "CPU run: the CUDA rows (bf16, TFLOP/s) come from `benchmarks/gpu_check.sh` on a GPU machine."]
    suffix = f"{device.type}_{precision}" + ("_compile" if args.compile else "")
    print(write_result(f"train_speed_{suffix}", result).read_text())


if __name__ == "__main__":
    main()
