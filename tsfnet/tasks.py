"""Tasks: (source set, target) pairs and their 2N-bit codes [c_src, c_tgt]."""

from __future__ import annotations

import itertools

import numpy as np
import torch


def task_code(source_mask: torch.Tensor, target: torch.Tensor, n_sequences: int) -> torch.Tensor:
    """(B, N) source bits and (B,) target indices -> (B, 2N) float code."""
    target_bits = torch.nn.functional.one_hot(target.long(), n_sequences).to(source_mask.dtype)
    return torch.cat([source_mask, target_bits], dim=1)


def source_subsets(available: list[int]) -> list[tuple[int, ...]]:
    """Every non-empty subset of `available`, smallest first."""
    return [s for r in range(1, len(available) + 1) for s in itertools.combinations(sorted(available), r)]


def all_tasks(available: list[int]) -> list[tuple[tuple[int, ...], int]]:
    """Every (non-empty source subset, target outside it) within `available`."""
    return [(sources, t) for t in sorted(available) for sources in source_subsets([a for a in available if a != t])]


def sample_one_to_one(rng: np.random.Generator, available: list[int]) -> tuple[tuple[int, ...], int]:
    """Stage 1: one random source and one random target; identity allowed."""
    return (int(rng.choice(available)),), int(rng.choice(available))


def sample_many_to_one(rng: np.random.Generator, available: list[int]) -> tuple[tuple[int, ...], int]:
    """Stage 2: a random target among those present, a random non-empty subset of the rest."""
    if len(available) < 2:
        return sample_one_to_one(rng, available)
    target = int(rng.choice(available))
    rest = [a for a in available if a != target]
    while True:
        keep = rng.uniform(size=len(rest)) < 0.5
        if keep.any():
            return tuple(int(r) for r, k in zip(rest, keep, strict=True) if k), target


def sample_source_count(rng: np.random.Generator, available: list[int]) -> tuple[tuple[int, ...], int]:
    """Stage 2 as the authors draw it: k ~ U{1..|A|} sources, a prefix of a shuffled list, and
    the target among the others, or among all when k = |A| (the target is then also a
    source). Each number of sources is equally likely; `sample_many_to_one` favours 1 and 2."""
    if len(available) < 2:
        return sample_one_to_one(rng, available)
    order = [int(a) for a in rng.permutation(available)]
    count = int(rng.integers(1, len(order) + 1))
    candidates = order[count:] or order
    return tuple(sorted(order[:count])), int(rng.choice(candidates))


def sample_pair(rng: np.random.Generator, available: list[int]) -> tuple[tuple[int, ...], int]:
    """One source and a different target (pix2pix's pairs); identity only for a lone sequence."""
    if len(available) < 2:
        return sample_one_to_one(rng, available)
    source, target = rng.choice(available, size=2, replace=False)
    return (int(source),), int(target)


# How a training batch draws its tasks: each sample its own (every HyperConv then runs a
# grouped convolution, one group per sample), or one task for the whole batch, as the
# authors train (one dense convolution per HyperConv).
TASK_SAMPLING = ("per_sample", "per_batch")

SAMPLERS = {
    "one_to_one": sample_one_to_one,
    "many_to_one": sample_many_to_one,
    "source_count": sample_source_count,
    "pairs": sample_pair,
}
