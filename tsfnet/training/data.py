"""Training batches from the preprocessed store, through batchgenerators.

Tasks are drawn from the channels a case actually has: each sample its own
(`per_sample`), or one task for the whole batch (`per_batch`, the authors' practice:
every HyperConv then runs one dense convolution), whose samples then come from the
cases that have the task's sources and target. Spatial
augmentations (rotation, scaling, mirroring) and a gamma change are applied to all
sequences of a sample alike, so the source -> target mapping stays consistent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from batchgenerators.dataloading.data_loader import SlimDataLoaderBase
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform_2

from tsfnet.batch import Batch
from tsfnet.planning.plans import BRAIN_SLICE_PROBABILITY
from tsfnet.preprocessing.pipeline import CASES_FOLDER, load_preprocessed
from tsfnet.tasks import SAMPLERS, TASK_SAMPLING

LESION_VOXELS_KEPT = 4096  # per case: enough tumour voxels to draw windows from


class CaseStore:
    """Preprocessed cases as memory-mapped .npy arrays, unpacked from the compressed case files
    by an explicit `unpack()` (once per case: later runs reuse the arrays). `folder` is the
    plans' cases folder (`cases`, `cases_<name>`); its arrays go to `unpacked`, `unpacked_<name>`."""

    def __init__(self, store: Path, case_ids: list[str], channel_names: list[str], folder: str = CASES_FOLDER) -> None:
        self.store, self.case_ids, self.channel_names = Path(store), list(case_ids), list(channel_names)
        self.folder = folder
        self.unpacked = self.store / ("unpacked" + folder.removeprefix(CASES_FOLDER))
        self._available: dict[str, list[int]] | None = None
        self._opened: dict[str, np.ndarray | None] = {}

    @property
    def available(self) -> dict[str, list[int]]:
        """Case id -> the channel indices it has."""
        if self._available is None:
            raise RuntimeError("CaseStore.unpack() first")
        return self._available

    def unpack(self) -> CaseStore:
        """Write each case's arrays as .npy files (skipping cases already unpacked)."""
        self._available = {c: self._unpack(c) for c in self.case_ids}
        self._opened.clear()  # arrays looked up before they were written
        return self

    def _unpack(self, case_id: str) -> list[int]:
        marker = self.unpacked / f"{case_id}.done"
        if not marker.is_file():
            self.unpacked.mkdir(parents=True, exist_ok=True)
            case = load_preprocessed(self.store, case_id, self.folder)
            arrays = {**{f"image_{k}": v for k, v in case.images.items()}, "mask": case.mask.astype(np.uint8)}
            if case.label is not None:
                arrays["label"] = case.label
            for key, array in arrays.items():
                tmp = self.unpacked / f".{case_id}__{key}.{os.getpid()}.npy"
                np.save(tmp, np.asfortranarray(array))  # axial slices (the last axis) contiguous: 2D reads
                os.replace(tmp, self.unpacked / f"{case_id}__{key}.npy")
            marker.write_text(",".join(case.images))
        names = [n for n in marker.read_text().split(",") if n]
        return sorted(self.channel_names.index(n) for n in names)

    def __getstate__(self) -> dict:
        """Workers open their own maps (a pickled memmap would copy its whole array)."""
        return {**self.__dict__, "_opened": {}}

    def array(self, case_id: str, key: str) -> np.ndarray | None:
        """The unpacked array, memory-mapped once per store: opening a map (path checks, the
        .npy header) cost the training loop about 14 ms of a 45 ms batch of eight."""
        name = f"{case_id}__{key}"
        if name not in self._opened:
            path = self.unpacked / f"{name}.npy"
            self._opened[name] = np.load(path, mmap_mode="r") if path.is_file() else None
        return self._opened[name]

    def image(self, case_id: str, channel: int) -> np.ndarray | None:
        return self.array(case_id, f"image_{self.channel_names[channel]}")


class TaskBatchLoader(SlimDataLoaderBase):
    """Random (case, slice or patch, task) samples; context slices become channels (2.5D)."""

    def __init__(
        self,
        store: CaseStore,
        patch_size: list[int],
        batch_size: int,
        sampling: str,
        seed: int,
        context_slices: int = 1,
        needs_labels: bool = False,
        task_sampling: str = "per_sample",
        lesion_oversampling: float = 0.0,
        brain_slice_probability: float = BRAIN_SLICE_PROBABILITY,
    ) -> None:
        """`lesion_oversampling`: the share of samples whose window holds a tumour voxel (cases
        with labels), as nnU-Net oversamples foreground: the lesion is a few per cent of the
        brain, and the part a reader looks at first. `brain_slice_probability`: how often the
        other 2D samples take a slice inside the brain rather than any slice."""
        if task_sampling not in TASK_SAMPLING:
            raise ValueError(f"task_sampling must be one of {', '.join(TASK_SAMPLING)}, got {task_sampling!r}")
        super().__init__(store.case_ids, batch_size, None)
        self.per_batch = task_sampling == "per_batch"
        self.store, self.patch_size, self.sample_task = store, list(patch_size), SAMPLERS[sampling]
        self.context, self.needs_labels, self.seed = context_slices, needs_labels, seed
        self.rng: np.random.Generator | None = None
        self.usable = [c for c in store.case_ids if len(store.available[c]) >= (1 if sampling == "one_to_one" else 2)]
        if not self.usable:
            self.usable = list(store.case_ids)
        self.brain_slices = {c: self._brain_slices(c) for c in self.usable}
        self.lesion_oversampling, self.brain_slice_probability = lesion_oversampling, brain_slice_probability
        self.lesion_voxels = {c: self._lesion_voxels(c) for c in self.usable} if lesion_oversampling > 0 else {}

    def _lesion_voxels(self, case_id: str) -> np.ndarray:
        """Up to LESION_VOXELS_KEPT tumour voxels (K, 3) of the case, none without labels."""
        label = self.store.array(case_id, "label")
        if label is None:
            return np.empty((0, 3), np.int64)
        voxels = np.argwhere(np.asarray(label) > 0)
        if len(voxels) > LESION_VOXELS_KEPT:
            chosen = np.random.default_rng([self.seed, len(voxels)]).choice(len(voxels), LESION_VOXELS_KEPT, False)
            voxels = voxels[chosen]
        return voxels

    def _brain_slices(self, case_id: str) -> np.ndarray:
        mask = self.store.array(case_id, "mask")
        return np.flatnonzero(np.asarray(mask).any(axis=(0, 1)))

    def generate_train_batch(self) -> dict:
        if self.rng is None:  # one stream per worker
            self.rng = np.random.default_rng([self.seed, getattr(self, "thread_id", 0)])
        rng = self.rng
        if not self.per_batch:
            cases = [self._case(rng, self.usable) for _ in range(self.batch_size)]
            samples = [self._sample(rng, c, self.sample_task(rng, self.store.available[c])) for c in cases]
        else:
            first = self._case(rng, self.usable)
            task = self.sample_task(rng, self.store.available[first])
            needed = {*task[0], task[1]}
            eligible = [c for c in self.usable if needed <= set(self.store.available[c])]
            cases = [first] + [self._case(rng, eligible) for _ in range(self.batch_size - 1)]
            samples = [self._sample(rng, c, task) for c in cases]
        return {key: np.stack([s[key] for s in samples]) for key in samples[0]}

    @staticmethod
    def _case(rng: np.random.Generator, cases: list[str]) -> str:
        return cases[rng.integers(len(cases))]

    def _sample(self, rng: np.random.Generator, case_id: str, task: tuple[tuple[int, ...], int]) -> dict:
        available = self.store.available[case_id]
        sources, target = task
        mask = self.store.array(case_id, "mask")
        window = self._window(rng, case_id, mask.shape)
        n = len(self.store.channel_names)
        data = []
        for channel in range(n):
            image = self.store.image(case_id, channel)
            data.append(self._crop(image, window) if image is not None else self._blank(window))
        label = self.store.array(case_id, "label")
        seg = [
            self._crop(mask, window),
            self._crop(label, window) if label is not None else self._blank(window, 0),
        ]
        source_mask = np.zeros(n, dtype=np.float32)
        source_mask[list(sources)] = 1
        present = np.zeros(n, dtype=np.float32)
        present[available] = 1
        return {
            "data": np.concatenate(data).astype(np.float32),
            "seg": np.concatenate(seg).astype(np.float32),
            "source_mask": source_mask,
            "available": present,
            "target": np.int64(target),
        }

    def _window(self, rng: np.random.Generator, case_id: str, shape: tuple[int, ...]) -> tuple[slice, ...]:
        lesion = self.lesion_voxels.get(case_id, ())
        oversample = len(lesion) and rng.uniform() < self.lesion_oversampling
        voxel = lesion[rng.integers(len(lesion))] if oversample else None
        if len(self.patch_size) == 2:  # a slice (plus context): whole, or a random patch of it (CPU plans)
            brain = self.brain_slices[case_id]
            if voxel is not None:
                z = int(voxel[2])
            elif len(brain) and rng.uniform() < self.brain_slice_probability:
                z = int(rng.choice(brain))
            else:
                z = int(rng.integers(shape[2]))
            in_plane = [
                slice(start := self._start(rng, s, p, None if voxel is None else voxel[axis]), start + p)
                for axis, (s, p) in enumerate(zip(shape[:2], self.patch_size, strict=True))
            ]
            return (*in_plane, slice(z - self.context // 2, z + self.context // 2 + 1))
        starts = [
            self._start(rng, s, p, None if voxel is None else voxel[axis])
            for axis, (s, p) in enumerate(zip(shape, self.patch_size, strict=True))
        ]
        return tuple(slice(st, st + p) for st, p in zip(starts, self.patch_size, strict=True))

    @staticmethod
    def _start(rng: np.random.Generator, size: int, patch: int, inside: int | None) -> int:
        """A random window start along one axis; with `inside`, among the windows holding it."""
        if patch >= size:
            return 0
        lo, hi = 0, size - patch
        if inside is not None:
            lo, hi = max(lo, int(inside) - patch + 1), min(hi, int(inside))
        return int(rng.integers(lo, hi + 1))

    def _crop(self, volume: np.ndarray, window: tuple[slice, ...]) -> np.ndarray:
        """(1 or context, *patch), clamping context slices at the volume's ends."""
        if len(self.patch_size) == 2:
            z = np.clip(np.arange(window[2].start, window[2].stop), 0, volume.shape[2] - 1)
            return np.moveaxis(np.asarray(volume[window[0], window[1]][..., z]), -1, 0)
        patch = np.asarray(volume[window])
        if patch.shape != tuple(self.patch_size):  # crop smaller than patch: pad with background
            padded = np.full(self.patch_size, volume.flat[0] if volume.dtype.kind == "f" else 0, patch.dtype)
            padded[tuple(slice(0, s) for s in patch.shape)] = patch
            patch = padded
        return patch[None]

    def _blank(self, window: tuple[slice, ...], fill: float = -1.0) -> np.ndarray:
        count = self.context if len(self.patch_size) == 2 else 1
        return np.full((count, *self.patch_size), fill, dtype=np.float32)


class SharedGamma(AbstractTransform):
    """x -> ((x+1)/2)^γ * 2 - 1 with one γ per sample for all channels (keeps [-1, 1], background -1)."""

    def __init__(self, gamma_range: tuple[float, float] = (0.8, 1.25), probability: float = 0.3) -> None:
        self.gamma_range, self.probability = gamma_range, probability

    def __call__(self, **data: np.ndarray) -> dict:
        images = data["data"]
        for b in range(images.shape[0]):
            if np.random.uniform() < self.probability:
                gamma = np.exp(np.random.uniform(*np.log(self.gamma_range)))
                images[b] = np.power(np.clip((images[b] + 1) / 2, 0, 1), gamma) * 2 - 1
        return data


def augmentations(patch_size: list[int]) -> Compose:
    dims = len(patch_size)
    angle = (-np.pi / 12, np.pi / 12)
    spatial = SpatialTransform_2(
        patch_size,
        patch_center_dist_from_border=None,
        do_elastic_deform=False,
        do_rotation=True,
        angle_x=angle if dims == 3 else (0, 0),
        angle_y=angle if dims == 3 else (0, 0),
        angle_z=angle,
        do_scale=True,
        scale=(0.9, 1.1),
        border_mode_data="constant",
        border_cval_data=-1,
        order_data=1,
        border_mode_seg="constant",
        border_cval_seg=0,
        order_seg=0,
        random_crop=False,
        p_rot_per_sample=0.3,
        p_scale_per_sample=0.3,
    )
    return Compose([spatial, MirrorTransform(axes=tuple(range(dims))), SharedGamma()])


class RandomShift(AbstractTransform):
    """Moves each sample in-plane by up to `max_shift` voxels per axis, background filling
    what comes in: the authors' random crop position of a 192 x 192 window in 240 x 240."""

    def __init__(self, max_shift: int) -> None:
        self.max_shift = max_shift

    def __call__(self, **data: np.ndarray) -> dict:
        for b in range(data["data"].shape[0]):
            offsets = np.random.randint(-self.max_shift, self.max_shift + 1, size=2)
            data["data"][b] = shifted(data["data"][b], offsets, -1.0)
            data["seg"][b] = shifted(data["seg"][b], offsets, 0.0)
        return data


def shifted(sample: np.ndarray, offsets: np.ndarray, fill: float) -> np.ndarray:
    """(C, X, Y, ...) moved by `offsets` along X and Y, `fill` where nothing moved in."""
    out = np.full_like(sample, fill)
    source, target = [slice(None)], [slice(None)]
    for offset, size in zip(offsets, sample.shape[1:3], strict=True):
        source.append(slice(max(0, -offset), size - max(0, offset)))
        target.append(slice(max(0, offset), size - max(0, -offset)))
    out[tuple(target)] = sample[tuple(source)]
    return out


# `training.augment`: true (rotation, scaling, mirroring, gamma), false, or "authors" (the
# TSF-Seq2Seq code's: a left-right flip and a random in-plane shift of up to 24 voxels).
AUTHORS_SHIFT = 24


def transforms(patch_size: list[int], augment: bool | str) -> AbstractTransform:
    if augment == "authors":
        return Compose([MirrorTransform(axes=(0,)), RandomShift(AUTHORS_SHIFT)])
    return augmentations(patch_size) if augment else NoTransform()


class NoTransform(AbstractTransform):
    def __call__(self, **data: np.ndarray) -> dict:
        return data


def batch_iterator(loader: TaskBatchLoader, augment: bool | str, workers: int, seed: int):
    transform = transforms(loader.patch_size, augment)
    if workers <= 0:
        np.random.seed(seed)
        return SingleThreadedAugmenter(loader, transform)
    return MultiThreadedAugmenter(loader, transform, workers, seeds=[seed + i for i in range(workers)])


def to_batch(raw: dict, n_sequences: int, context: int) -> Batch:
    """A Batch on the CPU; whether its samples share one task is read here, from the host arrays."""
    data = torch.from_numpy(np.ascontiguousarray(raw["data"]))
    spatial = data.shape[2:]
    images = data.view(data.shape[0], n_sequences, context, *spatial)
    targets = np.asarray(raw["target"])
    target = torch.from_numpy(targets).long()
    centre = images[torch.arange(len(target)), target, context // 2]
    seg = torch.from_numpy(np.ascontiguousarray(raw["seg"]))
    source_mask = np.asarray(raw["source_mask"])
    shared = bool((targets == targets[0]).all() and (source_mask == source_mask[:1]).all())
    sources = tuple(int(s) for s in np.flatnonzero(source_mask[0])) if shared else None
    return Batch(
        images=images,
        source_mask=torch.from_numpy(source_mask).float(),
        available=torch.from_numpy(np.asarray(raw["available"])).float(),
        target=target,
        target_image=centre.unsqueeze(1).contiguous(),
        brain_mask=seg[:, :1] > 0.5,
        label=seg[:, 1].round().long(),
        shared_sources=sources,
    )
