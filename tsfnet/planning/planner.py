"""Derive plans from a fingerprint. Registered, so users can add their own."""

from __future__ import annotations

import math

import numpy as np

from tsfnet.errors import TsfnetError
from tsfnet.planning.memory import estimate_gb
from tsfnet.planning.plans import SCHEMA_VERSION, VAL_SLICES, total_stride, validate_plans
from tsfnet.registry import register, registry

MAX_BATCH = 64
BUDGETS = ("gpu", "cpu")
# A CPU budget keeps the data's voxel size and shrinks what a step costs instead: 2D patches
# of the slices (inference still runs on whole slices), a narrower network, fewer steps.
CPU_PATCH = 96
CPU_BATCH = 8
CPU_WIDTH = 32
CPU_RESIDUAL_BLOCKS = 3
CPU_STEP_FRACTION = 0.2  # of every stage's own budget: 20,000 + 10,000 steps become 4,000 + 2,000
# The task weightings' (ω) rate in the CPU plan's stage 2. Adam moves each of their 36 parameters
# by about its rate a step: at the stage's 1e-4, the demo's 200 steps moved them by under 0.006, so
# its ω was the random initialisation; at 1e-2 they can travel a logit unit even there
# (benchmarks/results/weighting_rate_2026-11-29.md). The paper's 300k steps at 1e-4 go much further.
CPU_WEIGHTING_LR = 1e-2


def round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def crop_size(fingerprint: dict, target_spacing: list[float], stride: int) -> list[int]:
    """Smallest box (in target voxels) holding every case's brain, a multiple of `stride`."""
    extents = []
    for case in fingerprint["cases"]:
        sizes = [hi - lo for lo, hi in case["bbox"]]
        extents.append([s * sp / t for s, sp, t in zip(sizes, case["spacing"], target_spacing, strict=True)])
    largest = np.max(np.asarray(extents), axis=0)
    return [round_up(float(v) - 1e-6, stride) for v in largest]


def median_scaled_normalization(fingerprint: dict) -> dict:
    """`median_scaled` with each channel's ratios the median over cases of its 0.5 / 99.5
    percentiles over its brain median: the typical case's range, anchored where a lesion
    cannot move it (a T1Gd case with a large enhancing tumour has its 99.5th percentile at
    twice the usual ratio, so `percentile` would give its healthy tissue half the scale)."""
    channels = {}
    for name in fingerprint["channel_names"]:
        stats = [case["channels"][name] for case in fingerprint["cases"] if name in case["channels"]]
        ratios = [(s["p0_5"] / s["p50"], s["p99_5"] / s["p50"]) for s in stats if s["p50"] > 0]
        if ratios:
            lower, upper = np.median(np.asarray(ratios), axis=0)
            channels[name] = {"lower": round(float(lower), 4), "upper": round(float(upper), 4)}
    return {"scheme": "median_scaled", "channels": channels}


def network_for(size: list[int]) -> dict:
    """The paper's network for full-size images; narrower and shallower for tiny ones."""
    smallest = min(size[:2])
    base, blocks = (64, 6) if smallest >= 128 else (32, 4) if smallest >= 64 else (16, 2)
    return {
        "encoder_widths": [base, 2 * base, 4 * base],
        "encoder_kernels": [7, 3, 3],
        "strides": [1, 2, 2],
        "residual_blocks": blocks,
        "code_embedding": 64,
        "hyper_basis": 16,
    }


def cpu_network() -> dict:
    return {
        **network_for([256, 256, 256]),
        "encoder_widths": [CPU_WIDTH, 2 * CPU_WIDTH, 4 * CPU_WIDTH],
        "residual_blocks": CPU_RESIDUAL_BLOCKS,
    }


def largest_batch(patch: list[int], network: dict, budget_gb: float) -> int:
    batch = 1
    while batch < MAX_BATCH and estimate_gb(patch, batch * 2, network) <= budget_gb:
        batch *= 2
    return batch


def patch_3d(crop: list[int], network: dict, budget_gb: float, stride: int) -> list[int]:
    """Shrink the largest axis of the crop until a batch of 2 fits the budget."""
    patch = list(crop)
    while estimate_gb(patch, 2, network) > budget_gb and max(patch) > stride:
        patch[int(np.argmax(patch))] -= stride
    return patch


def default_training() -> dict:
    """Run-wide settings, then training.<stage> for every registered stage: the budget the
    stage declares (its `defaults`), so a plugin's stage is planned like a built-in one."""
    training = {
        "seed": 0,
        "val_every": 250,
        "val_slices": VAL_SLICES,
        "num_workers": 2,
        "augment": True,
        # A task per sample: at equal steps it synthesises 0.3-0.7 dB better than one task per
        # batch, which runs dense HyperConvs and so steps faster (per_batch, the faster option;
        # benchmarks/results/task_sampling_2026-11-26.md).
        "task_sampling": "per_sample",
        # A third of the samples hold a tumour voxel where labels exist (nnU-Net's foreground
        # oversampling): the lesion is a few per cent of the brain.
        "lesion_oversampling": 0.33,
        "loss": {"reconstruction": "l1", "rec_weight": 10.0, "perceptual_weight": 0.01},
    }
    for name, stage in registry.items("stage"):
        if getattr(stage, "defaults", None):
            training[name] = dict(stage.defaults)
    return training


def resolve_budget(budget: str) -> str:
    """'auto' plans for a CPU when this machine has no CUDA GPU."""
    if budget == "auto":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    if budget not in BUDGETS:
        raise TsfnetError(f"unknown --budget '{budget}'; use auto, {' or '.join(BUDGETS)}")
    return budget


def cpu_steps(steps: int) -> int:
    """A stage's step budget in the CPU plan."""
    return max(1, round(steps * CPU_STEP_FRACTION))


def cpu_training() -> dict:
    """Fewer steps, and every stage's learning rate decays to zero over them (poly): on a short
    budget the annealed end is worth about 1 dB of validation PSNR over a constant rate.
    Batches load in the training process: the step already uses every core, loading takes
    under 1 % of it, and two worker processes slowed it by 13 %
    (benchmarks/results/train_speed_cpu_bf16_2026-11-26.md)."""
    training = default_training()
    training["num_workers"] = 0
    for section in training.values():
        if isinstance(section, dict) and "steps" in section:
            section["steps"] = cpu_steps(section["steps"])
            section["schedule"] = "poly"
    return training


def with_weighting_lr(training: dict) -> dict:
    """Stage 2 gives ω the rate that lets its parameters travel as far over the planned steps
    as the CPU plan's 1e-2 over its 2,000 (Adam moves each by about its rate a step: some 10
    on the poly schedule, against some 27 in the authors' 300k steps at 1e-4). At the stage's
    own 1e-4 the GPU plan's 10,000 steps would allow 0.5, half the demo's 200 steps at 1e-2:
    so 2e-3 there."""
    finetune = training["finetune"]
    planned_on_cpu = cpu_steps(registry.get("stage", "finetune").defaults["steps"])
    finetune["weighting_lr"] = CPU_WEIGHTING_LR * planned_on_cpu / finetune["steps"]
    return training


@register("planner", "default")
def plan_dataset(fingerprint: dict, gpu_memory_gb: float = 8.0, budget: str = "gpu") -> dict:
    """`budget` 'gpu': whole slices and the paper-sized network within `gpu_memory_gb`;
    'cpu': the same voxel size, with 2D patches, a narrower network and fewer steps."""
    budget = resolve_budget(budget)
    target_spacing = [float(v) for v in fingerprint["median_spacing"]]
    probe = network_for([256, 256, 256])
    stride = int(np.prod(probe["strides"]))
    crop = crop_size(fingerprint, target_spacing, stride)
    if budget == "cpu":
        network = cpu_network() if min(crop[:2]) >= CPU_PATCH else network_for(crop)
        patch_2d = [min(c, CPU_PATCH) for c in crop[:2]]
        batch_2d, training = CPU_BATCH, with_weighting_lr(cpu_training())
    else:
        network = network_for(crop)
        patch_2d = crop[:2]
        batch_2d = largest_batch(patch_2d, network, gpu_memory_gb)
        training = with_weighting_lr(default_training())
    plans = {
        "schema_version": SCHEMA_VERSION,
        "dataset": fingerprint["dataset"],
        "planner": "default",
        "channel_names": list(fingerprint["channel_names"]),
        "labels": dict(fingerprint.get("labels", {})),
        "target_spacing": target_spacing,
        "crop_size": crop,
        "normalization": median_scaled_normalization(fingerprint),
        "intensity_reference": {
            name: [stats["p0_5"], stats["p99_5"]] for name, stats in fingerprint["channels"].items()
        },
        "network": network,
        "fusion": {"default": "tsf"},
        "configurations": {
            "2d": {
                "patch_size": patch_2d,
                "batch_size": batch_2d,
                "context_slices": 1,
                # Whole slices in inference: windows of the patch gain PSNR but darken T2's
                # ventricles and cost 3.5x (benchmarks/results/inference_window_*.md).
                "sliding_window": False,
            },
            "3d": {
                "patch_size": patch_3d(crop, network, gpu_memory_gb, stride),
                "batch_size": 2,
            },
        },
        "training": training,
        "budget": budget,
        "gpu_memory_gb": gpu_memory_gb,
    }
    assert total_stride(plans) == stride
    return validate_plans(plans)
