"""The plans file: plain JSON, schema-versioned, validated on load, stable key order.

Every number the runner, predictor or network uses lives here, so changing steps,
learning rate or widths never means editing code. Code reads plans through the typed
view `Plans` (`plans.configuration("2d").patch_size`, `plans.training_for(stage)`,
`plans.fusion_options(name)`); the file itself stays plain JSON.

A store holds several plans side by side: `plans.json` (the planned default, named
`plans`) and `plans_<name>.json` for a preset or a hand-made variant (named
`plans_<name>`); `--plans NAME` picks one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsfnet.atomic import read_json, write_json
from tsfnet.errors import InputError, TsfnetError
from tsfnet.tasks import SAMPLERS, TASK_SAMPLING
from tsfnet.training.losses import PERCEPTUAL_VARIANTS
from tsfnet.training.schedules import SCHEDULES

DEFAULT_PLANS = "plans"

SCHEMA_VERSION = 1
NUMBER = (int, float)
# 2D training draws a slice inside the brain this often, else any slice (plans without
# training.brain_slice_probability); the authors skip slices outside the brain (1.0).
BRAIN_SLICE_PROBABILITY = 0.9
VAL_SLICES = 16  # axial slices scored per validation case (2D)

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
        "augment": (bool, str),
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
        elif isinstance(value, bool) and bool not in (expected if isinstance(expected, tuple) else (expected,)):
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
        if not config["patch_size"] or not all(_positive_int(v) for v in config["patch_size"]):
            raise InputError(path, f"'configurations.{name}.patch_size' must be positive integers")
        if not isinstance(config.get("sliding_window", False), bool):
            raise InputError(path, f"'configurations.{name}.sliding_window' must be true or false")
    per_channel = plans["normalization"].get("channels", {})
    if not isinstance(per_channel, dict) or not all(
        name in plans["channel_names"] and isinstance(params, dict) for name, params in per_channel.items()
    ):
        raise InputError(path, "'normalization.channels' must map channel names to their parameters")
    if not isinstance(plans["network"].get("predict_context", False), bool):
        raise InputError(path, "'network.predict_context' must be true or false")
    gated = plans["network"].get("gated_layers", 0)
    if not isinstance(gated, int) or isinstance(gated, bool) or gated < 0:
        raise InputError(path, f"'network.gated_layers' must be a whole number of at least 0, got {gated!r}")
    if not all(_positive_int(v) for v in plans["network"]["strides"]):
        raise InputError(path, f"'network.strides' must be positive integers, got {plans['network']['strides']}")
    sampling = plans["training"].get("task_sampling", "per_sample")  # plans older than the option: per sample
    if sampling not in TASK_SAMPLING:
        raise InputError(path, f"'training.task_sampling' must be {' or '.join(TASK_SAMPLING)}, got {sampling!r}")
    if isinstance(plans["training"]["augment"], str) and plans["training"]["augment"] != "authors":
        raise InputError(
            path, f"'training.augment' must be true, false or \"authors\", got {plans['training']['augment']!r}"
        )
    if not isinstance(plans["training"]["loss"].get("source_reconstruction", False), bool):
        raise InputError(path, "'training.loss.source_reconstruction' must be true or false")
    cycle = plans["training"]["loss"].get("cycle_weight", 0.0)
    if not isinstance(cycle, NUMBER) or isinstance(cycle, bool) or cycle < 0:
        raise InputError(path, f"'training.loss.cycle_weight' must be a number of at least 0, got {cycle!r}")
    perceptual = plans["training"]["loss"].get("perceptual", "pix2pixhd")
    if perceptual not in PERCEPTUAL_VARIANTS:
        raise InputError(
            path, f"'training.loss.perceptual' must be {' or '.join(PERCEPTUAL_VARIANTS)}, got {perceptual!r}"
        )
    for key in ("lesion_oversampling", "brain_slice_probability"):
        share = plans["training"].get(key, 0.0)
        if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 <= share <= 1:
            raise InputError(path, f"'training.{key}' must be a number from 0 to 1, got {share!r}")
    val_slices = plans["training"].get("val_slices", VAL_SLICES)
    if not isinstance(val_slices, int) or isinstance(val_slices, bool) or val_slices < 1:
        raise InputError(path, f"'training.val_slices' must be a whole number of at least 1, got {val_slices!r}")
    stride = total_stride(plans)
    for name, config in plans["configurations"].items():
        if any(v % stride for v in config["patch_size"]):
            raise InputError(
                path, f"configurations.{name}.patch_size {config['patch_size']} not a multiple of {stride}"
            )
    return plans


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


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


# ---- names ---------------------------------------------------------------------------------


def plans_identifier(name: str | None) -> str:
    """`--plans NAME` -> the plans' identifier (its file stem): None or 'plans' -> 'plans',
    'brats2021_paper' or 'plans_brats2021_paper' -> 'plans_brats2021_paper'."""
    if not name or name == DEFAULT_PLANS:
        return DEFAULT_PLANS
    if "/" in name or "\\" in name or "__" in name or name.startswith("."):
        raise TsfnetError(f"--plans '{name}' is not a plans name (letters, digits, '-' and '_'; no '__')")
    return name if name.startswith(f"{DEFAULT_PLANS}_") else f"{DEFAULT_PLANS}_{name}"


def plans_path(store: Path, name: str | None = None) -> Path:
    """Where the plans named `name` live in a preprocessed store."""
    return Path(store) / f"{plans_identifier(name)}.json"


def read_plans(store: Path, name: str | None = None) -> Plans:
    """The typed view of a store's plans `name` (validated)."""
    path = plans_path(store, name)
    if not path.is_file():
        hint = "run tsfnet plan first" if plans_identifier(name) == DEFAULT_PLANS else "see tsfnet plan --preset"
        raise InputError(path, f"plans not found ({hint})")
    return Plans(load_plans(path), plans_identifier(name), path)


# ---- the typed view ------------------------------------------------------------------------


@dataclass(frozen=True)
class Configuration:
    """One entry of plans["configurations"]: what a 2d or 3d model trains and predicts on."""

    name: str
    patch_size: list[int]
    batch_size: int
    context_slices: int  # adjacent slices seen as channels (2.5D); always 1 in 3D
    sliding_window: bool = False  # 2D: predict each slice in windows of patch_size (3D always does)

    @property
    def dims(self) -> int:
        return 2 if self.name == "2d" else 3

    @property
    def inference_window(self) -> list[int] | None:
        """The window prediction and validation run in; None: whole slices. Windows of the
        training patch (nnU-Net's sliding window) show a patch-trained network's instance norms
        the statistics they learnt; benchmarks/results/inference_window_*.md weighs them."""
        return self.patch_size if self.dims == 3 or self.sliding_window else None


@dataclass(frozen=True)
class StageTraining:
    """A stage's budget and loss, from plans["training"][stage] (or the stage's own defaults)."""

    steps: int
    lr: float
    schedule: str  # tsfnet.training.schedules.SCHEDULES
    batch_size: int | None  # None: the configuration's
    reconstruction: str  # registered loss: training.loss.<stage>_reconstruction, else .reconstruction
    sampler: str | None = None  # a tsfnet.tasks.SAMPLERS name over the stage's own (`Stage.sampling`)
    horizon_steps: int | None = None  # poly: the steps it decays over (default: the stage's)
    min_lr: float = 0.0  # poly: the floor
    weighting_lr: float | None = None  # the task weightings' (ω) rate (stages.rate_groups); None: lr


@dataclass(frozen=True)
class TrainingSettings:
    seed: int
    val_every: int
    num_workers: int
    augment: bool | str  # true, false or "authors" (tsfnet.training.data.transforms)
    task_sampling: str
    lesion_oversampling: float
    brain_slice_probability: float  # of drawing a slice inside the brain (else any slice; 2D)
    val_slices: int  # axial slices validation scores per case, spread over the brain (2D)
    rec_weight: float
    perceptual_weight: float
    perceptual: str  # the VGG19 loss variant (tsfnet.training.losses.PERCEPTUAL_VARIANTS)
    source_reconstruction: bool  # each stage also reconstructs a source (the authors' source terms)
    cycle_weight: float  # stage 1's cycle term G(E(G(E(x_s)|t))|s) vs x_s (the authors': 10; 0 = off)


@dataclass(frozen=True)
class Plans:
    """A read-only view of plans: `raw` is the JSON object (never modified here), `name` its
    identifier (`plans`, `plans_<name>`), `path` the file it came from, if any."""

    raw: dict = field(repr=False)
    name: str = DEFAULT_PLANS
    path: Path | None = None

    @classmethod
    def load(cls, path: Path, name: str | None = None) -> Plans:
        path = Path(path)
        return cls(load_plans(path), name or DEFAULT_PLANS, path)

    @property
    def channel_names(self) -> list[str]:
        return list(self.raw["channel_names"])

    @property
    def n_sequences(self) -> int:
        return len(self.raw["channel_names"])

    @property
    def labels(self) -> dict[str, int]:
        return dict(self.raw.get("labels", {}))

    @property
    def label_classes(self) -> int:
        """Classes = largest label value + 1 (BraTS 2021 labels ET as 4, so it has 5)."""
        values = [int(v) for v in self.labels.values()]
        return max(2, max(values, default=1) + 1)

    @property
    def network(self) -> dict:
        return self.raw["network"]

    @property
    def total_stride(self) -> int:
        return total_stride(self.raw)

    @property
    def target_spacing(self) -> list[float]:
        return list(self.raw["target_spacing"])

    @property
    def crop_size(self) -> list[int]:
        return list(self.raw["crop_size"])

    @property
    def normalization(self) -> dict:
        return self.raw["normalization"]

    @property
    def intensity_reference(self) -> dict[str, list[float]]:
        return self.raw["intensity_reference"]

    @property
    def raw_path(self) -> Path | None:
        """The raw dataset the plans were made from (recorded by tsfnet plan)."""
        return Path(self.raw["raw_path"]) if "raw_path" in self.raw else None

    @property
    def configurations(self) -> list[str]:
        return list(self.raw["configurations"])

    def configuration(self, name: str) -> Configuration:
        if name not in self.raw["configurations"]:
            raise TsfnetError(f"unknown configuration '{name}'; plans have {', '.join(self.raw['configurations'])}")
        config = self.raw["configurations"][name]
        context = int(config.get("context_slices", 1)) if name == "2d" else 1
        window = bool(config.get("sliding_window", False))  # plans from before it: whole slices
        return Configuration(name, list(config["patch_size"]), int(config["batch_size"]), context, window)

    def fusion_options(self, name: str) -> dict:
        """Constructor options of fusion `name` (plans["fusion"][name]), as keyword arguments."""
        return copy.deepcopy(self.raw["fusion"].get(name, {}))

    @property
    def training(self) -> TrainingSettings:
        training, loss = self.raw["training"], self.raw["training"]["loss"]
        return TrainingSettings(
            seed=int(training["seed"]),
            val_every=int(training["val_every"]),
            num_workers=int(training["num_workers"]),
            augment=training["augment"],
            task_sampling=training.get("task_sampling", "per_sample"),  # plans older than the option
            lesion_oversampling=float(training.get("lesion_oversampling", 0.0)),  # likewise
            brain_slice_probability=float(training.get("brain_slice_probability", BRAIN_SLICE_PROBABILITY)),
            val_slices=int(training.get("val_slices", VAL_SLICES)),
            rec_weight=float(loss["rec_weight"]),
            perceptual_weight=float(loss["perceptual_weight"]),
            perceptual=loss.get("perceptual", "pix2pixhd"),
            source_reconstruction=bool(loss.get("source_reconstruction", False)),
            cycle_weight=float(loss.get("cycle_weight", 0.0)),
        )

    def training_for(self, stage: Any) -> StageTraining:
        """The settings of a stage (anything with `name` and `defaults`): plans' own
        training.<name> section, else the defaults the stage declares; never another stage's."""
        training = self.raw["training"]
        section = training.get(stage.name)
        if section is None:
            section = dict(getattr(stage, "defaults", None) or {})
        where = f"{self.path or self.name}: training.{stage.name}"
        if not section:
            raise TsfnetError(f"{where} is missing and stage '{stage.name}' declares no defaults; add it to the plans")
        for key, expected in (("steps", int), ("lr", NUMBER)):
            if not isinstance(section.get(key), expected) or isinstance(section.get(key), bool):
                raise TsfnetError(f"{where}.{key} must be {_type_name(expected)}, got {section.get(key)!r}")
        sampler = section.get("sampler")
        if sampler is not None and sampler not in SAMPLERS:
            raise TsfnetError(f"{where}.sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        schedule = section.get("schedule", "constant")
        if schedule not in SCHEDULES:
            raise TsfnetError(f"{where}.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        horizon = section.get("horizon_steps")
        if horizon is not None and not _positive_int(horizon):
            raise TsfnetError(f"{where}.horizon_steps must be a positive integer, got {horizon!r}")
        min_lr = section.get("min_lr", 0.0)
        if not isinstance(min_lr, NUMBER) or isinstance(min_lr, bool) or min_lr < 0:
            raise TsfnetError(f"{where}.min_lr must be a number of at least 0, got {min_lr!r}")
        weighting_lr = section.get("weighting_lr")
        if weighting_lr is not None and (
            not isinstance(weighting_lr, NUMBER) or isinstance(weighting_lr, bool) or weighting_lr <= 0
        ):
            raise TsfnetError(f"{where}.weighting_lr must be a positive number, got {weighting_lr!r}")
        loss = training["loss"]
        batch = section.get("batch_size")
        return StageTraining(
            steps=int(section["steps"]),
            lr=float(section["lr"]),
            schedule=schedule,
            batch_size=int(batch) if batch is not None else None,
            reconstruction=loss.get(f"{stage.name}_reconstruction", loss["reconstruction"]),
            sampler=sampler,
            horizon_steps=horizon,
            min_lr=float(min_lr),
            weighting_lr=None if weighting_lr is None else float(weighting_lr),
        )


def as_plans(plans: Plans | dict) -> Plans:
    """The typed view of `plans` (a dict is wrapped as it is, unvalidated, as tests and
    benchmarks build partial ones)."""
    return plans if isinstance(plans, Plans) else Plans(plans)
