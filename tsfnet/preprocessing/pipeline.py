"""Raw case -> preprocessed arrays + properties, and predictions back to raw geometry.

Steps: reorder the voxels to RAS (so the storage orientation does not matter), crop to
the brain box, resample to the target spacing, normalise each channel inside the brain,
then centre-crop/pad to the plans' crop size. The properties keep everything needed to
invert the steps exactly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from tsfnet.atomic import atomic_path, read_json, remove_stale_temporaries, write_json
from tsfnet.data.dataset import CaseVolumes, RawCase, RawDataset, load_case
from tsfnet.data.orientation import canonical_geometry, from_canonical
from tsfnet.data.volume_io import Geometry
from tsfnet.errors import InputError
from tsfnet.parallel import parallel_map
from tsfnet.planning.fingerprint import brain_bbox
from tsfnet.preprocessing import geometry as geo
from tsfnet.preprocessing.array_file import SUFFIX, read_arrays, write_arrays
from tsfnet.preprocessing.normalization import BACKGROUND, normalize

CASES_FOLDER = "cases"


@dataclass
class PreprocessedCase:
    case_id: str
    images: dict[str, np.ndarray]  # channel name -> (X, Y, Z) in [-1, 1]; absent channels absent
    mask: np.ndarray  # brain mask, bool
    label: np.ndarray | None
    properties: dict


def plans_signature(plans: dict) -> str:
    """Hash of the plans fields that change preprocessed data, and of the voxel order (cases
    preprocessed before they were reoriented to RAS are stale)."""
    relevant = {k: plans[k] for k in ("channel_names", "target_spacing", "crop_size", "normalization")}
    relevant["voxel_order"] = "RAS"
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def preprocess_volumes(volumes: CaseVolumes, plans: dict) -> PreprocessedCase:
    """The network's view of a case: RAS voxel order, then crop, resample, normalise."""
    names = plans["channel_names"]
    stored = volumes.geometry
    volumes = volumes.canonical()
    geometry = volumes.geometry
    full_mask = volumes.brain_mask
    if not full_mask.any():
        raise InputError(volumes.case_id, "all channels are zero: no brain voxels")
    bbox = brain_bbox(full_mask)
    bbox_shape = tuple(hi - lo for lo, hi in bbox)
    target_shape = geo.resampled_shape(bbox_shape, geometry.spacing, plans["target_spacing"])
    crop = plans["crop_size"]
    offsets = geo.centre_offsets(target_shape, crop)

    region_mask = geo.resize(geo.crop_to_bbox(full_mask.view(np.uint8), bbox), target_shape, True) > 0
    mask = geo.crop_or_pad(region_mask, crop, offsets, False)
    images, used = {}, {}
    for index, image in volumes.images.items():
        region = geo.resize(geo.crop_to_bbox(image, bbox), target_shape)
        normalised, used[names[index]] = normalize(region, region_mask, plans["normalization"], volume=image)
        images[names[index]] = geo.crop_or_pad(normalised, crop, offsets, BACKGROUND)
    label = None
    if volumes.label is not None:
        region_label = geo.resize(geo.crop_to_bbox(volumes.label, bbox), target_shape, True)
        label = geo.crop_or_pad(region_label, crop, offsets, 0).astype(np.uint8)
    properties = {
        "case_id": volumes.case_id,
        "available": [names[i] for i in sorted(volumes.images)],
        "geometry": stored.to_json(),  # the input's own voxel order, restored on output
        "bbox": bbox,
        "resampled_shape": list(target_shape),
        "offsets": offsets,
        "normalization": used,
        "plans_signature": plans_signature(plans),
    }
    return PreprocessedCase(volumes.case_id, images, mask, label, properties)


def restore_geometry(volume: np.ndarray, properties: dict, fill: float, nearest: bool = False) -> np.ndarray:
    """Inverse of preprocessing's spatial steps: plan grid -> the raw file's grid and voxel order."""
    stored = Geometry.from_json(properties["geometry"])
    bbox = properties["bbox"]
    region = geo.uncrop_or_pad(volume, tuple(properties["resampled_shape"]), properties["offsets"], fill)
    region = geo.resize(region, tuple(hi - lo for lo, hi in bbox), nearest)
    return from_canonical(geo.paste_in_bbox(region, bbox, canonical_geometry(stored).shape, fill), stored)


# ---- the store -------------------------------------------------------------------------------


def case_paths(store: Path, case_id: str) -> tuple[Path, Path]:
    folder = Path(store) / CASES_FOLDER
    return folder / f"{case_id}{SUFFIX}", folder / f"{case_id}.json"


def source_signature(case: RawCase) -> dict[str, list[int]]:
    files = [*case.channel_files.values(), *([case.label_file] if case.label_file else [])]
    return {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in files}


def is_up_to_date(store: Path, case: RawCase, plans: dict) -> bool:
    arrays, props = case_paths(store, case.case_id)
    if not (arrays.is_file() and props.is_file()):
        return False
    try:
        saved = json.loads(props.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return saved.get("plans_signature") == plans_signature(plans) and saved.get("source") == source_signature(case)


def save_case(store: Path, case: PreprocessedCase, source: dict) -> None:
    """Arrays first, properties last: a case counts only once its properties exist."""
    arrays_path, props_path = case_paths(store, case.case_id)
    arrays = {f"image_{k}": v.astype(np.float32) for k, v in case.images.items()}
    arrays["mask"] = case.mask
    if case.label is not None:
        arrays["label"] = case.label
    with atomic_path(arrays_path, overwrite=True) as tmp:
        write_arrays(tmp, arrays)
    write_json(props_path, {**case.properties, "source": source})


def load_preprocessed(store: Path, case_id: str) -> PreprocessedCase:
    arrays_path, props_path = case_paths(store, case_id)
    properties = read_json(props_path)
    try:
        arrays = read_arrays(arrays_path)
        mask = arrays["mask"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(arrays_path, f"cannot read preprocessed case ({exc}); rerun tsfnet preprocess") from exc
    images = {k.removeprefix("image_"): v for k, v in arrays.items() if k.startswith("image_")}
    return PreprocessedCase(case_id, images, mask, arrays.get("label"), properties)


def list_preprocessed(store: Path) -> list[str]:
    folder = Path(store) / CASES_FOLDER
    if not folder.is_dir():
        raise InputError(store, "no preprocessed cases (run tsfnet plan --preprocess first)")
    ids = sorted(p.stem for p in folder.glob("*.json") if (folder / f"{p.stem}{SUFFIX}").is_file())
    if not ids:
        raise InputError(folder, "no preprocessed cases (run tsfnet preprocess first)")
    return ids


def _preprocess_one(case: RawCase, store: Path, plans: dict, overwrite: bool) -> str:
    if not overwrite and is_up_to_date(store, case, plans):
        return "skipped"
    volumes = load_case(case, with_label=True)
    save_case(store, preprocess_volumes(volumes, plans), source_signature(case))
    return "done"


def preprocess_dataset(
    dataset: RawDataset,
    store: Path,
    plans: dict,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Preprocess every case; up-to-date cases are skipped unless `overwrite`."""
    (Path(store) / CASES_FOLDER).mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(Path(store) / CASES_FOLDER)
    job = partial(_preprocess_one, store=Path(store), plans=plans, overwrite=overwrite)
    outcomes = parallel_map(job, dataset.cases, "preprocessing", workers, progress)
    return {"done": outcomes.count("done"), "skipped": outcomes.count("skipped")}
