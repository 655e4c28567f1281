"""`tsfnet plan`: fingerprint a raw dataset and write plans next to its preprocessed store.

The planned plans are `plans.json`; a preset is applied on top of them and written beside
them as `plans_<preset>.json`, so both can be trained and compared on one dataset.
"""

from __future__ import annotations

from pathlib import Path

from tsfnet.atomic import write_json
from tsfnet.data.dataset import RawDataset
from tsfnet.planning.fingerprint import compute_fingerprint
from tsfnet.planning.plans import DEFAULT_PLANS, apply_preset, plans_identifier, plans_path, save_plans
from tsfnet.registry import registry

FINGERPRINT_FILE = "dataset_fingerprint.json"
PLANS_FILE = f"{DEFAULT_PLANS}.json"


def default_store(raw_dir: Path) -> Path:
    """nnU-Net keeps preprocessed data apart from raw data; we put it beside it."""
    raw_dir = Path(raw_dir).resolve()
    return raw_dir.parent / "tsfnet_preprocessed" / raw_dir.name


def plan(
    raw_dir: Path,
    store: Path | None = None,
    preset: str | None = None,
    gpu_memory_gb: float = 8.0,
    planner: str = "default",
    workers: int | None = None,
    progress: bool = True,
    budget: str = "auto",
) -> tuple[Path, dict]:
    dataset = RawDataset.load(raw_dir)
    store = Path(store) if store is not None else default_store(raw_dir)
    store.mkdir(parents=True, exist_ok=True)
    fingerprint = compute_fingerprint(dataset, workers, progress)
    write_json(store / FINGERPRINT_FILE, fingerprint)
    plans = registry.get("planner", planner)(fingerprint, gpu_memory_gb=gpu_memory_gb, budget=budget)
    plans["raw_path"] = str(Path(raw_dir).resolve())
    save_plans(plans, store / PLANS_FILE)
    if preset:
        plans = apply_preset(plans, preset)
        save_plans(plans, plans_path(store, plans_name(plans)))
    return store, plans


def plans_name(plans: dict) -> str:
    """The name `tsfnet plan` stores plans under: `plans`, or `plans_<preset>` for a preset."""
    return plans_identifier(plans.get("preset"))
