"""`tsfnet plan`: fingerprint a raw dataset and write plans next to its preprocessed store."""

from __future__ import annotations

from pathlib import Path

from tsfnet.atomic import write_json
from tsfnet.data.dataset import RawDataset
from tsfnet.planning.fingerprint import compute_fingerprint
from tsfnet.planning.plans import apply_preset, save_plans
from tsfnet.registry import registry

FINGERPRINT_FILE = "dataset_fingerprint.json"
PLANS_FILE = "plans.json"


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
    if preset:
        plans = apply_preset(plans, preset)
    plans["raw_path"] = str(Path(raw_dir).resolve())
    save_plans(plans, store / PLANS_FILE)
    return store, plans
