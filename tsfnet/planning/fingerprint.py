"""What a dataset looks like: shapes, spacings, brain boxes, intensities, availability."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from tsfnet.data.dataset import RawCase, RawDataset, foreground_values, load_case
from tsfnet.parallel import parallel_map

PERCENTILES = (0.5, 50.0, 99.5)
SAMPLES_PER_CASE = 10_000


def brain_bbox(mask: np.ndarray) -> list[list[int]]:
    """[[start, stop), ...] per axis of the nonzero region (the whole volume if empty)."""
    if not mask.any():
        return [[0, s] for s in mask.shape]
    bbox = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        bbox.append([int(hits[0]), int(hits[-1]) + 1])
    return bbox


def intensity_stats(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"p0_5": 0.0, "p50": 0.0, "p99_5": 0.0, "mean": 0.0, "std": 0.0}
    p = np.percentile(values, PERCENTILES)
    return {
        "p0_5": float(p[0]),
        "p50": float(p[1]),
        "p99_5": float(p[2]),
        "mean": float(values.mean()),
        "std": float(values.std()),
    }


def case_fingerprint(case: RawCase, channel_names: list[str], seed: int = 0) -> dict:
    volumes = load_case(case).canonical()  # shapes, spacings and boxes per axis as the network sees them
    mask = volumes.brain_mask
    rng = np.random.default_rng(seed)
    channels, samples = {}, {}
    for index, image in volumes.images.items():
        foreground = foreground_values(image, mask)
        channels[channel_names[index]] = intensity_stats(foreground)
        take = min(SAMPLES_PER_CASE, foreground.size)
        samples[channel_names[index]] = rng.choice(foreground, take, replace=False) if take else foreground
    return {
        "case_id": case.case_id,
        "shape": list(volumes.geometry.shape),
        "spacing": list(volumes.geometry.spacing),
        "bbox": brain_bbox(mask),
        "channels": channels,
        "_samples": samples,
    }


def compute_fingerprint(dataset: RawDataset, workers: int | None = None, progress: bool = True) -> dict:
    """Per-case facts plus per-channel pooled statistics (from sampled foreground voxels)."""
    job = partial(case_fingerprint, channel_names=dataset.channel_names)
    cases = parallel_map(job, dataset.cases, "fingerprinting", workers, progress)
    channels = {}
    for name in dataset.channel_names:
        pooled = [c["_samples"][name] for c in cases if name in c["_samples"]]
        values = np.concatenate(pooled) if pooled else np.zeros(0, dtype=np.float32)
        channels[name] = {"available": len(pooled), **intensity_stats(values)}
    for case in cases:
        del case["_samples"]
    spacings = np.asarray([c["spacing"] for c in cases])
    return {
        "dataset": dataset.name,
        "raw_path": str(Path(dataset.root).resolve()),
        "channel_names": dataset.channel_names,
        "labels": dataset.labels,
        "num_cases": len(cases),
        "median_spacing": [float(v) for v in np.median(spacings, axis=0)],
        "channels": channels,
        "cases": cases,
    }
