"""Time and peak memory of one training step at the paper's 2D size (192x192 slices,
batch 8) and a 3D patch. `tsf` is timed in its stage 2 (E frozen; loss on G(f̂) and
G(f̂ + f_A)); any other fusion in its last stage (the GAN baselines: one discriminator
and one generator update). CPU always; on CUDA fp32, bf16 autocast, channels_last
and torch.compile variants. Tasks are drawn as the training sampler draws them: by the
stage's sampler, one per batch (`per_batch`, this script's default, the faster) or one per
sample (`per_sample`, what new plans train with).

    python benchmarks/model_speed.py [--steps 3] [--batch 8] [--patch3d 64] [--fusion tsf]
        [--task-sampling per_batch]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, write_result

from tsfnet.batch import Batch
from tsfnet.model import build_model
from tsfnet.planning.planner import network_for
from tsfnet.registry import registry
from tsfnet.tasks import SAMPLERS
from tsfnet.training.losses import SynthesisCriterion

N = 4


def paper_plans() -> dict:
    return {
        "channel_names": ["T1", "T1Gd", "T2", "FLAIR"],
        "labels": {},
        "network": network_for([192, 192, 128]),
        "fusion": {"default": "tsf"},
        "configurations": {"2d": {"patch_size": [192, 192], "batch_size": 8}, "3d": {"patch_size": [64] * 3}},
    }


def random_batch(shape: tuple[int, ...], batch: int, device: torch.device, sampling: str, per_batch: bool) -> Batch:
    """Random images, tasks drawn by the stage's sampler: one for the batch or one per sample."""
    images = torch.rand(batch, N, 1, *shape, device=device) * 2 - 1
    rng = np.random.default_rng(0)
    draw = SAMPLERS[sampling]
    tasks = [draw(rng, list(range(N)))] * batch if per_batch else [draw(rng, list(range(N))) for _ in range(batch)]
    mask = torch.zeros(batch, N, device=device)
    for b, (sources, _) in enumerate(tasks):
        mask[b, list(sources)] = 1
    target = torch.tensor([t for _, t in tasks], device=device)
    return Batch(
        images=images,
        source_mask=mask,
        target=target,
        target_image=images[torch.arange(batch), target, :1].contiguous(),
        brain_mask=torch.ones(batch, 1, *shape, dtype=torch.bool, device=device),
        available=torch.ones(batch, N, device=device),
        shared_sources=tuple(tasks[0][0]) if per_batch else None,
    )


def step_time(
    fusion: str,
    config: str,
    shape: tuple[int, ...],
    batch: int,
    device: torch.device,
    steps: int,
    compile_model: bool = False,
    channels_last: bool = False,
    precision: str = "fp32",
    task_sampling: str = "per_batch",
) -> tuple[float, float]:
    """(seconds per step, peak GiB) of the fusion's last training stage, through Stage.step."""
    torch.manual_seed(0)
    plans = paper_plans()
    plans["configurations"][config]["patch_size"] = list(shape)
    model = build_model(plans, fusion, config=config).to(device)
    if channels_last and config == "2d":  # the weights; the batch is (B, sequences, 1, H, W) and stays as is
        model = model.to(memory_format=torch.channels_last)
    stage = registry.get("stage", model.stages[-1])(precision=precision)
    optimizers = stage.optimizers(model, 1e-4)
    criterion = SynthesisCriterion().to(device) if stage.uses_criterion else None
    network = torch.compile(model) if compile_model else model
    data = random_batch(shape, batch, device, stage.sampling, task_sampling == "per_batch")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        stage.step(network, data, criterion, optimizers, 0.5)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:  # the first step warms up (allocations, compilation)
            times.append(time.perf_counter() - began)
    peak = (
        torch.cuda.max_memory_allocated()
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return sum(times) / len(times), peak / 1024**3


def gpu_variants() -> tuple[tuple[str, dict], ...]:
    return (
        ("fp32", {}),
        ("bf16", {"precision": "bf16"}),
        ("bf16 channels_last", {"precision": "bf16", "channels_last": True}),
        ("bf16 compile", {"precision": "bf16", "compile_model": True}),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch3d", type=int, default=64)
    parser.add_argument("--fusion", default="tsf")
    parser.add_argument("--task-sampling", default="per_batch", choices=["per_batch", "per_sample"])
    args = parser.parse_args()
    rows = []
    cases = [("2d", (192, 192), args.batch), ("3d", (args.patch3d,) * 3, 2)]
    cpu = torch.device("cpu")
    for config, shape, batch in cases:
        seconds, peak = step_time(args.fusion, config, shape, batch, cpu, args.steps, task_sampling=args.task_sampling)
        size = "x".join(map(str, shape))
        rows.append(f"| cpu fp32 | {config} | {size} | {batch} | {seconds:.2f} | {peak:.1f} (RSS) |")
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        for config, shape, batch in cases:
            for label, kwargs in gpu_variants():
                seconds, peak = step_time(
                    args.fusion, config, shape, batch, gpu, args.steps, task_sampling=args.task_sampling, **kwargs
                )
                size = "x".join(map(str, shape))
                rows.append(f"| cuda {label} | {config} | {size} | {batch} | {seconds:.3f} | {peak:.1f} |")
    lines = [
        f"# model_speed ({args.fusion})",
        "",
        f"Command: `python benchmarks/model_speed.py --steps {args.steps} --batch {args.batch} "
        f"--patch3d {args.patch3d} --fusion {args.fusion} --task-sampling {args.task_sampling}`",
        f"Machine: {machine()}",
        "",
        f"One training step of `{args.fusion}` (its last stage; for tsf stage 2: E frozen, L1 on G(f̂) and "
        "G(f̂+f_A), Adam) with the paper's network (widths 64/128/256, 6 residual blocks, HyperConv basis 16), "
        f"tasks drawn {args.task_sampling.replace('_', ' ')} by the stage's sampler, mean of the timed steps "
        "after one warm-up step.",
        "",
        "| device | config | input | batch | s / step | peak GiB |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    if not torch.cuda.is_available():
        lines += [
            "",
            "No CUDA device on this machine: the GPU rows (bf16, channels_last, torch.compile) come from the "
            "same command on a GPU machine.",
        ]
    print(write_result(f"model_speed_{args.fusion}", lines).read_text())


if __name__ == "__main__":
    main()
