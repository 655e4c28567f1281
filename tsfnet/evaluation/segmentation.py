"""Downstream check (the BraSyn challenge's metric): segment each case once with its
completed inputs (real sources + syntheses) and once with all real sequences, using a
segmentation model trained with `--head segmentation`, and compare Dice (WT/TC/ET).

Syntheses are in normalised units; the segmentation model's preprocessing normalises
them again (percentile clip), which is close to the identity on [-1, 1] images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tsfnet.data.dataset import CaseVolumes, RawCase, load_case
from tsfnet.data.volume_io import read_volume
from tsfnet.errors import InputError, TsfnetError
from tsfnet.evaluation.metrics import brats_dice
from tsfnet.inference.cases import find_input_cases
from tsfnet.inference.model_folder import TrainedModel
from tsfnet.preprocessing.pipeline import preprocess_volumes, restore_geometry
from tsfnet.progress import track

LABEL_ENDINGS = (".nii.gz", ".nii")


def require_segmentation_model(trained: TrainedModel) -> None:
    if trained.settings["head"] != "segmentation":
        raise InputError(trained.folder, "not a segmentation model (train it with --head segmentation)")


def segment(trained: TrainedModel, volumes: CaseVolumes) -> np.ndarray:
    """Label map on the case's own grid."""
    pre = preprocess_volumes(volumes, trained.plans)
    names = trained.channel_names
    images = {names.index(n): v for n, v in pre.images.items()}
    sources = tuple(sorted(images))
    logits = trained.predict(images, sources, [sources[0]])[sources[0]].output
    labels = restore_geometry(logits.argmax(0).astype(np.uint8), pre.properties, 0, nearest=True)
    return np.where(volumes.brain_mask, labels, 0)


def find_label(case_id: str, reference_dir: Path, labels_dir: Path | None) -> Path:
    folders = [labels_dir] if labels_dir else []
    folders += [reference_dir, reference_dir.parent / "labelsTs", reference_dir.parent / "labelsTr"]
    for folder in folders:
        for ending in LABEL_ENDINGS:
            for name in (f"{case_id}{ending}", f"{case_id}-seg{ending}", f"{case_id}_seg{ending}"):
                if (folder / name).is_file():
                    return folder / name
    raise InputError(reference_dir, f"no label file for case '{case_id}' (pass --labels DIR)")


def evaluate_segmentation(
    predictions: list[tuple[Path, dict]],
    pred_dir: Path,
    reference_dir: Path,
    trained: TrainedModel,
    labels_dir: Path | None = None,
    progress: bool = True,
) -> list[dict]:
    names = trained.channel_names
    by_case: dict[str, dict] = {}
    for _, meta in predictions:
        entry = by_case.setdefault(meta["case"], {"sources": meta["sources"], "synthesised": {}})
        entry["synthesised"][names.index(meta["target"])] = pred_dir / meta["synthesis"]
    references = {c.case_id: c for c in find_input_cases(reference_dir, len(names))}
    label_values = trained.plans.labels
    rows = []
    for case_id, entry in track(sorted(by_case.items()), "segmenting", enabled=progress):
        if case_id not in references:
            raise InputError(reference_dir, f"no reference case '{case_id}'")
        real = load_case(RawCase(case_id, references[case_id].files))
        label, _ = read_volume(find_label(case_id, Path(reference_dir), labels_dir))
        sources = [names.index(n) for n in entry["sources"]]
        completed = {i: real.images[i] for i in sources}
        for channel, path in entry["synthesised"].items():
            completed[channel], _ = read_volume(path)
        if set(completed) != set(real.images):
            raise TsfnetError(f"{case_id}: completed inputs {sorted(completed)} differ from the real ones")
        reference = np.rint(label).astype(np.uint8)
        for setting, images in (("completed", completed), ("real", real.images)):
            predicted = segment(trained, CaseVolumes(case_id, images, real.geometry))
            dice = brats_dice(predicted, reference, label_values)
            rows.append(
                {
                    "case": case_id,
                    "inputs": setting,
                    "n_inputs": len(sources),
                    **{f"dice_{k}": v for k, v in dice.items()},
                }
            )
    return rows


def segmentation_markdown(rows: list[dict]) -> str:
    from tsfnet.evaluation.tables import mean_sd

    lines = [
        "",
        "## Segmentation (Dice, BraSyn protocol)",
        "",
        "| inputs | n | WT | TC | ET |",
        "|---|---|---|---|---|",
    ]
    for setting in ("completed", "real"):
        group = [r for r in rows if r["inputs"] == setting]
        cells = [mean_sd([r[f"dice_{k}"] for r in group]) for k in ("WT", "TC", "ET")]
        lines.append(f"| {setting} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
