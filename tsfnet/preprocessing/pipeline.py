"""Raw case -> preprocessed arrays + properties, and predictions back to raw geometry.

Steps: reorder the voxels to RAS (so the storage orientation does not matter), crop to
the brain box, resample to the target spacing, normalise each channel inside the brain,
then centre-crop/pad to the plans' crop size. The properties keep everything needed to
invert the steps exactly.

A store keeps the cases of its default plans in `cases/`; a plans variant
(`plans_<name>.json`) shares them when it preprocesses alike (same `plans_signature` as
`plans.json`), else gets its own `cases_<name>/` (see `cases_folder`).
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
from tsfnet.planning.plans import DEFAULT_PLANS, Plans, as_plans, load_plans, plans_path
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


def plans_signature(plans: Plans | dict) -> str:
    """Hash of the plans fields that change preprocessed data, and of the voxel order (cases
    preprocessed before they were reoriented to RAS are stale)."""
    plans = as_plans(plans)
    relevant = {
        "channel_names": plans.channel_names,
        "target_spacing": plans.target_spacing,
        "crop_size": plans.crop_size,
        "normalization": plans.normalization,
        "voxel_order": "RAS",
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def preprocess_volumes(volumes: CaseVolumes, plans: Plans | dict) -> PreprocessedCase:
    """The network's view of a case: RAS voxel order, then crop, resample, normalise."""
    plans = as_plans(plans)
    names = plans.channel_names
    stored = volumes.geometry
    volumes = volumes.canonical()
    geometry = volumes.geometry
    full_mask = volumes.brain_mask
    if not full_mask.any():
        raise InputError(volumes.case_id, "all channels are zero: no brain voxels")
    bbox = brain_bbox(full_mask)
    bbox_shape = tuple(hi - lo for lo, hi in bbox)
    target_shape = geo.resampled_shape(bbox_shape, geometry.spacing, plans.target_spacing)
    crop = plans.crop_size
    offsets = geo.centre_offsets(target_shape, crop)

    region_mask = geo.resize(geo.crop_to_bbox(full_mask.view(np.uint8), bbox), target_shape, True) > 0
    mask = geo.crop_or_pad(region_mask, crop, offsets, False)
    images, used = {}, {}
    for index, image in volumes.images.items():
        region = geo.resize(geo.crop_to_bbox(image, bbox), target_shape)
        normalised, used[names[index]] = normalize(region, region_mask, plans.normalization, image, names[index])
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


def cases_folder(store: Path, plans: Plans) -> str:
    """The store's folder for the cases of `plans`: `cases` for the default plans and for a
    variant that preprocesses as `plans.json` does, else `cases_<name>` (`plans_<name>.json`)."""
    if plans.name != DEFAULT_PLANS:
        default = plans_path(store)
        if not default.is_file() or plans_signature(load_plans(default)) != plans_signature(plans):
            return f"{CASES_FOLDER}_{plans.name.removeprefix(DEFAULT_PLANS + '_')}"
    return CASES_FOLDER


def case_paths(store: Path, case_id: str, folder: str = CASES_FOLDER) -> tuple[Path, Path]:
    cases = Path(store) / folder
    return cases / f"{case_id}{SUFFIX}", cases / f"{case_id}.json"


def source_signature(case: RawCase) -> dict[str, list[int]]:
    files = [*case.channel_files.values(), *([case.label_file] if case.label_file else [])]
    return {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in files}


def is_up_to_date(store: Path, case: RawCase, plans: Plans | dict, folder: str = CASES_FOLDER) -> bool:
    arrays, props = case_paths(store, case.case_id, folder)
    if not (arrays.is_file() and props.is_file()):
        return False
    try:
        saved = json.loads(props.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return saved.get("plans_signature") == plans_signature(plans) and saved.get("source") == source_signature(case)


def save_case(store: Path, case: PreprocessedCase, source: dict, folder: str = CASES_FOLDER) -> None:
    """Arrays first, properties last: a case counts only once its properties exist."""
    arrays_path, props_path = case_paths(store, case.case_id, folder)
    arrays = {f"image_{k}": v.astype(np.float32) for k, v in case.images.items()}
    arrays["mask"] = case.mask
    if case.label is not None:
        arrays["label"] = case.label
    with atomic_path(arrays_path, overwrite=True) as tmp:
        write_arrays(tmp, arrays)
    write_json(props_path, {**case.properties, "source": source})


def load_preprocessed(store: Path, case_id: str, folder: str = CASES_FOLDER) -> PreprocessedCase:
    arrays_path, props_path = case_paths(store, case_id, folder)
    properties = read_json(props_path)
    try:
        arrays = read_arrays(arrays_path)
        mask = arrays["mask"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(arrays_path, f"cannot read preprocessed case ({exc}); rerun tsfnet preprocess") from exc
    images = {k.removeprefix("image_"): v for k, v in arrays.items() if k.startswith("image_")}
    return PreprocessedCase(case_id, images, mask, arrays.get("label"), properties)


def list_preprocessed(store: Path, folder: str = CASES_FOLDER) -> list[str]:
    cases = Path(store) / folder
    hint = "" if folder == CASES_FOLDER else " for these plans (tsfnet preprocess --plans NAME)"
    if not cases.is_dir():
        raise InputError(store, f"no preprocessed cases{hint} (run tsfnet plan --preprocess first)")
    ids = sorted(p.stem for p in cases.glob("*.json") if (cases / f"{p.stem}{SUFFIX}").is_file())
    if not ids:
        raise InputError(cases, f"no preprocessed cases{hint} (run tsfnet preprocess first)")
    return ids


def _preprocess_one(case: RawCase, store: Path, plans: Plans, overwrite: bool, folder: str) -> str:
    if not overwrite and is_up_to_date(store, case, plans, folder):
        return "skipped"
    volumes = load_case(case, with_label=True)
    save_case(store, preprocess_volumes(volumes, plans), source_signature(case), folder)
    return "done"


def preprocess_dataset(
    dataset: RawDataset,
    store: Path,
    plans: Plans | dict,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Preprocess every case into the plans' cases folder (`cases_folder`); up-to-date cases
    are skipped unless `overwrite`."""
    plans = as_plans(plans)
    folder = cases_folder(store, plans)
    (Path(store) / folder).mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(Path(store) / folder)
    job = partial(_preprocess_one, store=Path(store), plans=plans, overwrite=overwrite, folder=folder)
    outcomes = parallel_map(job, dataset.cases, "preprocessing", workers, progress)
    return {"done": outcomes.count("done"), "skipped": outcomes.count("skipped")}
