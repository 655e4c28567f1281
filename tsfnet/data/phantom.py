"""BraTS-like phantom cases from real anatomy.

Tissue maps come from the MNI152 2009a template that nilearn ships (T1, GM, WM
probabilities; CSF = brain mask - GM - WM). Each subject gets a smooth random
deformation and a small affine, a tumour (necrotic core, enhancing rim, oedema),
per-tissue T1/T2/PD values and spin-echo / inversion-recovery signal equations,
a smooth bias field, Rician noise and an arbitrary scanner scaling per sequence.
Everything is drawn from one seeded generator, so a seed fixes the case.
"""

from __future__ import annotations

import importlib.util
import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

SEQUENCES = ("T1", "T1Gd", "T2", "FLAIR")
LABELS = {"background": 0, "NCR": 1, "ED": 2, "ET": 3}
BRATS_SHAPE = (240, 240, 155)

# (T1 ms, T2 ms, PD) at 3 T.
TISSUES: dict[str, tuple[float, float, float]] = {
    "WM": (830.0, 80.0, 0.65),
    "GM": (1330.0, 110.0, 0.80),
    "CSF": (4000.0, 2000.0, 1.0),
    "oedema": (1500.0, 180.0, 0.90),
    "necrosis": (2500.0, 300.0, 0.95),
    "enhancing": (1200.0, 120.0, 0.85),
}
GADOLINIUM_T1 = 400.0  # enhancing tissue T1 after contrast


def spin_echo(pd: float, t1: float, t2: float, tr: float, te: float) -> float:
    return pd * (1.0 - np.exp(-tr / t1)) * np.exp(-te / t2)


def inversion_recovery(pd: float, t1: float, t2: float, tr: float, ti: float, te: float) -> float:
    return pd * abs(1.0 - 2.0 * np.exp(-ti / t1) + np.exp(-tr / t1)) * np.exp(-te / t2)


def tissue_signal(sequence: str, tissue: str) -> float:
    t1, t2, pd = TISSUES[tissue]
    if sequence == "T1":
        return spin_echo(pd, t1, t2, tr=500, te=10)
    if sequence == "T1Gd":
        return spin_echo(pd, GADOLINIUM_T1 if tissue == "enhancing" else t1, t2, tr=500, te=10)
    if sequence == "T2":
        return spin_echo(pd, t1, t2, tr=4000, te=100)
    if sequence == "FLAIR":
        return inversion_recovery(pd, t1, t2, tr=9000, ti=2500, te=100)
    raise ValueError(f"unknown sequence {sequence}")


@dataclass
class Template:
    gm: np.ndarray
    wm: np.ndarray
    mask: np.ndarray  # float in [0, 1]
    affine: np.ndarray


@dataclass
class PhantomCase:
    images: dict[str, np.ndarray]
    label: np.ndarray
    affine: np.ndarray


def _nilearn_data_dir() -> Path:
    """nilearn's shipped data folder, found without importing nilearn: only its files are
    needed, and importing it pulls in scikit-learn and pandas (and checks their versions)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the phantom needs nilearn's MNI152 template: pip install nilearn")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    """Downsample by averaging factor^3 blocks (edges that do not fill a block are dropped)."""
    shape = [s // factor for s in volume.shape]
    cropped = volume[: shape[0] * factor, : shape[1] * factor, : shape[2] * factor]
    return cropped.reshape(shape[0], factor, shape[1], factor, shape[2], factor).mean(axis=(1, 3, 5))


@lru_cache(maxsize=4)
def load_template(downsample: int = 1) -> Template:
    """MNI152 tissue maps, optionally block-downsampled by an integer factor."""
    folder = _nilearn_data_dir()

    def load(kind: str) -> nib.Nifti1Image:
        return nib.load(str(folder / f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"))

    t1_image = load("t1")
    t1 = np.asarray(t1_image.dataobj, dtype=np.float32)
    gm = np.asarray(load("gm").dataobj, dtype=np.float32) / 255.0
    wm = np.asarray(load("wm").dataobj, dtype=np.float32) / 255.0
    mask = ndimage.binary_fill_holes((t1 > 0) | (gm + wm > 0.1)).astype(np.float32)
    affine = t1_image.affine.copy()
    if downsample > 1:
        gm, wm, mask = (block_mean(v, downsample) for v in (gm, wm, mask))
        affine[:3, :3] *= downsample
        affine[:3, 3] += affine[:3, :3] @ np.full(3, (1 - 1 / downsample) / 2)  # block centres
    return Template(gm, wm, mask, affine)


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], control_points: int = 5) -> torch.Tensor:
    """Random smooth field in [-1, 1]: coarse uniform noise, trilinearly upsampled."""
    coarse = torch.from_numpy(rng.uniform(-1, 1, size=(1, 1) + (control_points,) * 3).astype(np.float32))
    return F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)[0, 0]


def _warp(template: Template, rng: np.random.Generator, spacing: float) -> tuple[np.ndarray, ...]:
    """Resample the tissue maps through a small random affine plus a smooth displacement."""
    shape = template.mask.shape
    angle = np.deg2rad(rng.uniform(-5, 5))
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    matrix = rotation @ np.diag(rng.uniform(0.94, 1.06, size=3))
    shift_voxels = rng.uniform(-3, 3, size=3) / spacing
    # grid_sample works in normalised (z, y, x) order on a (D, H, W) = (X, Y, Z) volume.
    half = (np.asarray(shape, dtype=float) - 1) / 2
    theta = np.zeros((3, 4))
    theta[:, :3] = (matrix / half[:, None] * half[None, :])[::-1, ::-1]
    theta[:, 3] = (shift_voxels / half)[::-1]
    grid = F.affine_grid(torch.from_numpy(theta[None]).float(), [1, 1, *shape], align_corners=True)
    amplitude = 4.0 / spacing / half  # up to ~4 mm of displacement, normalised per axis
    for axis in range(3):
        grid[0, ..., 2 - axis] += float(amplitude[axis]) * smooth_field(rng, shape)
    volumes = torch.from_numpy(np.stack([template.gm, template.wm, template.mask]))[None]
    warped = F.grid_sample(volumes, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    return tuple(v.numpy() for v in warped)


def _tumour(rng: np.random.Generator, wm: np.ndarray, mask: np.ndarray, spacing: float) -> np.ndarray:
    """Label map 1 NCR / 2 ED / 3 ET of an irregular blob centred in white matter."""
    margin = max(2, int(25 / spacing))
    inner = np.zeros_like(mask, dtype=bool)
    inner[margin:-margin, margin:-margin, margin:-margin] = True
    candidates = np.argwhere((wm > 0.5) & inner)
    if len(candidates) == 0:
        candidates = np.argwhere(mask > 0.5)
    centre = candidates[rng.integers(len(candidates))]
    radius = rng.uniform(15, 30) / spacing  # oedema extent in voxels
    axes = [torch.arange(s, dtype=torch.float32) - float(c) for s, c in zip(mask.shape, centre, strict=True)]
    gx, gy, gz = torch.meshgrid(*axes, indexing="ij")
    distance = torch.sqrt(gx**2 + gy**2 + gz**2) / radius
    # Lobes at the tumour's own scale: a few control points across one tumour diameter.
    control_points = max(4, round(max(mask.shape) / radius * 1.5))
    distance = (distance * (1.0 + 0.3 * smooth_field(rng, mask.shape, control_points))).numpy()
    core, rim = rng.uniform(0.28, 0.38), rng.uniform(0.5, 0.62)
    label = np.zeros(mask.shape, dtype=np.uint8)
    label[distance < 0.75 + 0.5 * wm] = LABELS["ED"]  # oedema spreads along white matter
    label[distance < rim] = LABELS["ET"]
    label[distance < core] = LABELS["NCR"]
    label[mask < 0.5] = 0
    return label


def generate_case(rng: np.random.Generator, downsample: int = 1) -> PhantomCase:
    template = load_template(downsample)
    spacing = float(downsample)
    gm, wm, mask = _warp(template, rng, spacing)
    label = _tumour(rng, wm, mask, spacing)
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    fractions = {"GM": gm, "WM": wm, "CSF": csf}
    tumour_tissue = {LABELS["ED"]: "oedema", LABELS["ET"]: "enhancing", LABELS["NCR"]: "necrosis"}
    in_tumour = label > 0
    for tissue in ("GM", "WM", "CSF"):
        fractions[tissue] = np.where(in_tumour, 0.0, fractions[tissue])
    for value, tissue in tumour_tissue.items():
        fractions[tissue] = np.where(label == value, mask, 0.0).astype(np.float32)
    bias = np.exp(0.15 * smooth_field(rng, mask.shape, control_points=4).numpy())
    brain = mask > 0.5
    images = {}
    for sequence in SEQUENCES:
        signal = sum(tissue_signal(sequence, t) * f for t, f in fractions.items()) * bias
        sigma = 0.025 * float(np.percentile(signal[brain], 99))
        noisy = np.sqrt((signal + rng.normal(0, sigma, signal.shape)) ** 2 + rng.normal(0, sigma, signal.shape) ** 2)
        scale = rng.uniform(200.0, 3000.0)
        images[sequence] = np.where(brain, noisy * scale, 0.0).astype(np.float32)
    return PhantomCase(images, label, template.affine.copy())


def fit_to_shape(case: PhantomCase, shape: tuple[int, int, int]) -> PhantomCase:
    """Centre-pad or crop to `shape` (e.g. BraTS' 240x240x155), keeping world coordinates."""
    current = case.label.shape
    src, dst, offset = [], [], np.zeros(3)
    for axis, (have, want) in enumerate(zip(current, shape, strict=True)):
        if have >= want:
            start = (have - want) // 2 if axis < 2 else 0  # axial: keep the top of the head
            src.append(slice(start, start + want))
            dst.append(slice(0, want))
            offset[axis] = start
        else:
            before = (want - have) // 2
            src.append(slice(0, have))
            dst.append(slice(before, before + have))
            offset[axis] = -before
    affine = case.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ offset

    def fit(volume: np.ndarray) -> np.ndarray:
        out = np.zeros(shape, dtype=volume.dtype)
        out[tuple(dst)] = volume[tuple(src)]
        return out

    return PhantomCase({k: fit(v) for k, v in case.images.items()}, fit(case.label), affine)


def write_dataset(
    out_dir: Path,
    n_cases: int = 10,
    downsample: int = 4,
    seed: int = 0,
    name: str = "Dataset001_Phantom",
    missing_rate: float = 0.0,
    shape: tuple[int, int, int] | None = None,
    progress: bool = False,
    n_test: int = 0,
) -> Path:
    """Write an nnU-Net-style raw dataset of phantom cases; returns its folder.

    `missing_rate` drops each channel of a training case with that probability (never
    all), to mimic clinical data with absent sequences. The last `n_test` cases go,
    complete, to imagesTs/labelsTs.
    """
    from tsfnet.data.volume_io import Geometry, write_volume
    from tsfnet.progress import track

    root = Path(out_dir) / name
    rng = np.random.default_rng(seed)
    # A case is compressed and written on a thread while the next one is drawn (zlib releases
    # the GIL: a quarter of the 1 mm demo's generation time); the draws stay in this thread,
    # in the same order, so a seed still fixes every case.
    with ThreadPoolExecutor(1, "tsfnet-phantom-write") as writer:
        writing: list[Future] = []
        for index in track(range(n_cases + n_test), "generating phantom cases", enabled=progress):
            test = index >= n_cases
            images_dir, labels_dir = (
                root / ("imagesTs" if test else "imagesTr"),
                root / ("labelsTs" if test else "labelsTr"),
            )
            case = generate_case(rng, downsample)
            if shape is not None:
                case = fit_to_shape(case, shape)
            geometry = Geometry(tuple(case.label.shape), case.affine)
            case_id = f"PH_{index:04d}"
            keep = rng.uniform(size=len(SEQUENCES)) >= (0.0 if test else missing_rate)
            if not keep.any():
                keep[rng.integers(len(SEQUENCES))] = True
            for done in writing:  # at most one case waits in memory; a failed write raises here
                done.result()
            writing = [
                writer.submit(write_volume, images_dir / f"{case_id}_{c:04d}.nii.gz", case.images[s], geometry, True)
                for c, s in enumerate(SEQUENCES)
                if keep[c]
            ]
            label_path = labels_dir / f"{case_id}.nii.gz"
            writing.append(writer.submit(write_volume, label_path, case.label, geometry, True, np.uint8))
        for done in writing:
            done.result()
    meta = {
        "name": name,
        "description": f"tsfnet phantom dataset (seed {seed}, downsample {downsample})",
        "channel_names": {str(i): s for i, s in enumerate(SEQUENCES)},
        "labels": LABELS,
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return root
