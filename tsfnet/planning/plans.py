"""The plans file: plain JSON, schema-versioned, validated on load, stable key order.

Every number the trainer, predictor or network uses lives here, so changing steps,
learning rate or widths never means editing code.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tsfnet.atomic import read_json, write_json
from tsfnet.errors import InputError
from tsfnet.tasks import TASK_SAMPLING

SCHEMA_VERSION = 1
NUMBER = (int, float)

# Expected type of every required key; nested dicts are validated recursively.
SCHEMA: dict[str, Any] = {
    "schema_version": int,
    "dataset": str,
    "channel_names": list,
    "labels": dict,
    "target_spacing": list,
    "crop_size": list,
    "normalization": {"scheme": str},
    "intensity_reference": dict,
    "network": {
        "encoder_widths": list,
        "encoder_kernels": list,
        "strides": list,
        "residual_blocks": int,
        "code_embedding": int,
        "hyper_basis": int,
    },
    "fusion": {"default": str},
    "configurations": dict,
    "training": {
        "seed": int,
        "val_every": int,
        "num_workers": int,
        "augment": bool,
        "loss": {"reconstruction": str, "rec_weight": NUMBER, "perceptual_weight": NUMBER},
        "pretrain": {"steps": int, "lr": NUMBER, "schedule": str},
        "finetune": {"steps": int, "lr": NUMBER, "schedule": str},
    },
}
CONFIGURATION_SCHEMA: dict[str, Any] = {"patch_size": list, "batch_size": int}


def _type_name(expected: Any) -> str:
    if isinstance(expected, tuple):
        return " or ".join(t.__name__ for t in expected)
    return "object" if isinstance(expected, dict) else expected.__name__


def _check(data: Any, schema: dict[str, Any], where: str, path: Path) -> None:
    if not isinstance(data, dict):
        raise InputError(path, f"'{where or 'plans'}' must be an object")
    for key, expected in schema.items():
        dotted = f"{where}.{key}" if where else key
        if key not in data:
            raise InputError(path, f"missing key '{dotted}'")
        value = data[key]
        if isinstance(expected, dict):
            _check(value, expected, dotted, path)
        elif isinstance(value, bool) and expected is not bool:
            raise InputError(path, f"'{dotted}' must be {_type_name(expected)}, got bool")
        elif not isinstance(value, expected):
            raise InputError(path, f"'{dotted}' must be {_type_name(expected)}, got {type(value).__name__}")


def validate_plans(plans: Any, path: Path = Path("plans.json")) -> dict:
    if not isinstance(plans, dict):
        raise InputError(path, "plans must be a JSON object")
    version = plans.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InputError(
            path,
            f"plans schema version {version!r} is not supported (this tsfnet reads version {SCHEMA_VERSION})",
        )
    _check(plans, SCHEMA, "", path)
    if len(plans["crop_size"]) != 3 or not all(isinstance(v, int) and v > 0 for v in plans["crop_size"]):
        raise InputError(path, f"'crop_size' must be 3 positive integers, got {plans['crop_size']}")
    if not plans["configurations"]:
        raise InputError(path, "'configurations' is empty")
    for name, config in plans["configurations"].items():
        _check(config, CONFIGURATION_SCHEMA, f"configurations.{name}", path)
    sampling = plans["training"].get("task_sampling", "per_sample")  # plans older than the option: per sample
    if sampling not in TASK_SAMPLING:
        raise InputError(path, f"'training.task_sampling' must be {' or '.join(TASK_SAMPLING)}, got {sampling!r}")
    stride = total_stride(plans)
    for name, config in plans["configurations"].items():
        if any(v % stride for v in config["patch_size"]):
            raise InputError(
                path, f"configurations.{name}.patch_size {config['patch_size']} not a multiple of {stride}"
            )
    return plans


def total_stride(plans: dict) -> int:
    stride = 1
    for s in plans["network"]["strides"]:
        stride *= int(s)
    return stride


def load_plans(path: Path) -> dict:
    path = Path(path)
    return validate_plans(read_json(path), path)


def save_plans(plans: dict, path: Path) -> Path:
    validate_plans(plans, Path(path))
    return write_json(Path(path), plans)


def deep_merge(base: dict, override: dict) -> dict:
    """A copy of `base` with `override` applied key by key (nested objects merged)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def preset_dirs() -> list[Path]:
    """Shipped presets: inside the wheel (tsfnet/presets) or the repository's plans/."""
    package = Path(__file__).resolve().parents[1]
    return [package / "presets", package.parent / "plans"]


def resolve_preset(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".json" and candidate.is_file():
        return candidate
    for folder in preset_dirs():
        for path in (folder / name_or_path, folder / f"{name_or_path}.json"):
            if path.is_file():
                return path
    known = sorted({p.stem for folder in preset_dirs() if folder.is_dir() for p in folder.glob("*.json")})
    raise InputError(candidate, f"preset not found; shipped presets: {', '.join(known) or 'none'}")


def apply_preset(plans: dict, name_or_path: str) -> dict:
    path = resolve_preset(name_or_path)
    preset = read_json(path)
    if not isinstance(preset, dict):
        raise InputError(path, "a preset must be a JSON object")
    overrides = {k: v for k, v in preset.items() if k not in ("description", "schema_version")}
    merged = deep_merge(plans, overrides)
    if "normalization" in overrides:  # a scheme's parameters are its own: keep none of the planned scheme's
        merged["normalization"] = copy.deepcopy(overrides["normalization"])
    merged["preset"] = path.stem
    return validate_plans(merged, path)
