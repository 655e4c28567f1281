"""Forward + backward time and peak memory of one `tsf` training step (stage 2 loss on
both outputs) at the paper's 2D size (192x192 slices, batch 8) and a 3D patch.

CPU always; on CUDA also bf16 autocast, channels_last and torch.compile variants.

    python benchmarks/model_speed.py [--steps 3] [--batch 8] [--patch3d 64]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, write_result

from tsfnet.devices import autocast
from tsfnet.model import FusionModel
from tsfnet.planning.planner import network_for

N = 4


def paper_plans() -> dict:
    return {
        "channel_names": ["T1", "T1Gd", "T2", "FLAIR"],
        "labels": {},
        "network": network_for([192, 192, 128]),
        "fusion": {"default": "tsf"},
        "configurations": {"2d": {"patch_size": [192, 192], "batch_size": 8}, "3d": {"patch_size": [64] * 3}},
    }


def step_time(
    config: str,
    shape: tuple[int, ...],
    batch: int,
    device: torch.device,
    steps: int,
    compile_model: bool = False,
    channels_last: bool = False,
) -> tuple[float, float]:
    torch.manual_seed(0)
    model = FusionModel(paper_plans(), "tsf", config=config).to(device)
    for p in model.encoder.parameters():
        p.requires_grad_(False)  # stage 2: E frozen
    network = torch.compile(model) if compile_model else model
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    images = torch.randn(batch, N, 1, *shape, device=device)
    if channels_last and config == "2d":
        images = images.contiguous(memory_format=torch.channels_last)
    mask = torch.zeros(batch, N, device=device)
    mask[:, :3] = 1
    target = torch.full((batch,), 3, device=device)
    reference = torch.rand(batch, 1, *shape, device=device) * 2 - 1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        with autocast(device):
            out = network(images, mask, target)
            loss = (out.output - reference).abs().mean() + (out.base - reference).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch3d", type=int, default=64)
    args = parser.parse_args()
    rows = []
    cases = [("2d", (192, 192), args.batch), ("3d", (args.patch3d,) * 3, 2)]
    cpu = torch.device("cpu")
    for config, shape, batch in cases:
        seconds, peak = step_time(config, shape, batch, cpu, args.steps)
        rows.append(
            f"| cpu fp32 | {config} | {'x'.join(map(str, shape))} | {batch} | {seconds:.2f} | {peak:.1f} (RSS) |"
        )
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        for config, shape, batch in cases:
            for label, kwargs in (
                ("bf16", {}),
                ("bf16 channels_last", {"channels_last": True}),
                ("bf16 compile", {"compile_model": True}),
            ):
                seconds, peak = step_time(config, shape, batch, gpu, args.steps, **kwargs)
                rows.append(
                    f"| cuda {label} | {config} | {'x'.join(map(str, shape))} | {batch} | {seconds:.3f} | {peak:.1f} |"
                )
    lines = [
        "# model_speed",
        "",
        f"Command: `python benchmarks/model_speed.py --steps {args.steps} --batch {args.batch} "
        f"--patch3d {args.patch3d}`",
        f"Machine: {machine()}",
        "",
        "One stage-2 `tsf` step (E frozen; L1 on G(f̂) and G(f̂+f_A); Adam) with the paper's network "
        "(widths 64/128/256, 6 residual blocks, HyperConv basis 16), 3 sources, mean of the timed steps.",
        "",
        "| device | config | input | batch | s / step | peak GiB |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    if not torch.cuda.is_available():
        lines += [
            "",
            "No CUDA device on this machine: the GPU rows (bf16, channels_last, torch.compile) are "
            "produced by the same command on a GPU machine.",
        ]
    print(write_result("model_speed", lines).read_text())


if __name__ == "__main__":
    main()
