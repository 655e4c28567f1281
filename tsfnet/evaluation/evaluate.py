"""`tsfnet evaluate`: compare predictions with references, per case, target and number
of inputs, and write the paper's tables.

Protocol (stated in the report): reference normalised with the scheme recorded in
each prediction's weights JSON; metrics on [-1, 1] with data range 2, over the
reference's brain bounding box ("box", close to the paper's fixed crop) and inside
the brain mask ("brain"); SSIM as scikit-image's default 7-wide uniform window,
2D per axial slice averaged; LPIPS per slice summed (the paper's Table 1).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from tsfnet.atomic import read_json, write_atomic
from tsfnet.data.dataset import RawCase, load_case
from tsfnet.data.volume_io import read_volume
from tsfnet.errors import InputError, TsfnetError
from tsfnet.evaluation.lpips_metric import UNAVAILABLE, build_lpips
from tsfnet.evaluation.metrics import psnr_of_error, slice_ssim, squared_error, ssim
from tsfnet.evaluation.tables import summary_markdown
from tsfnet.inference.cases import find_input_cases
from tsfnet.inference.model_folder import TrainedModel
from tsfnet.planning.fingerprint import brain_bbox
from tsfnet.preprocessing.normalization import normalize
from tsfnet.progress import track

TSEM_PERCENTILE = 99.0
# The authors' evaluation block (docs/fidelity.md, Evaluation): on a BraTS 240 x 240 x 155
# volume, the centred 192 x 192 window of the 128 central slices, whose 126 full 2.5D
# triplets give the centre slices 1..126 of that block.
BRATS_SHAPE = (240, 240, 155)
BLOCK_WINDOW, BLOCK_SLICES = 192, 128


def paper_block(shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    """The authors' 126 x 192 x 192 metric block of a BraTS-shaped volume, else None."""
    if tuple(shape) != BRATS_SHAPE:
        return None
    x0, z0 = (shape[0] - BLOCK_WINDOW) // 2, (shape[2] - BLOCK_SLICES) // 2
    y0 = (shape[1] - BLOCK_WINDOW) // 2
    return (slice(x0, x0 + BLOCK_WINDOW), slice(y0, y0 + BLOCK_WINDOW), slice(z0 + 1, z0 + BLOCK_SLICES - 1))


def find_predictions(pred_dir: Path) -> list[tuple[Path, dict]]:
    found = []
    for path in sorted(Path(pred_dir).rglob("*_weights.json")):
        data = read_json(path)
        if isinstance(data, dict) and {"case", "target", "synthesis"} <= set(data):
            found.append((path, data))
    if not found:
        raise InputError(pred_dir, "no predictions found (expected *_weights.json from tsfnet predict)")
    return found


def evaluate_one(
    meta_path: Path,
    meta: dict,
    pred_dir: Path,
    reference,
    channel_names,
    lpips,
    label_path: Path | None = None,
    preview_dir: Path | None = None,
) -> dict:
    ref, brain = normalised_reference(meta_path, meta, reference, channel_names)
    pred, geometry = read_volume(pred_dir / meta["synthesis"])
    if geometry.shape != ref.shape:
        raise InputError(pred_dir / meta["synthesis"], f"shape {geometry.shape} differs from reference")
    box = tuple(slice(lo, hi) for lo, hi in brain_bbox(brain))
    sources = meta["sources"]
    tumour = read_tumour(label_path, ref.shape) if label_path is not None else None
    error = squared_error(pred, ref)  # every PSNR below reads it
    row = {
        "case": meta["case"],
        "target": meta["target"],
        "n_inputs": len(sources),
        "sources": "+".join(sources),
        "fusion": meta.get("fusion", ""),
        "psnr": psnr_of_error(error[box]),
        "ssim": ssim(pred[box], ref[box]),
        "ssim3d": ssim(pred[box], ref[box], per_slice=False),
        **region_scores(pred, ref, {"brain": brain, "lesion": tumour}, error),
        "lpips": lpips(pred[box], ref[box]) if lpips is not None else float("nan"),
    }
    block = paper_block(pred.shape)
    if block is not None:  # numbers comparable with the paper's Table 1 (3D SSIM, as theirs)
        row.update(
            {"psnr_block": psnr_of_error(error[block]), "ssim_block": ssim(pred[block], ref[block], per_slice=False)}
        )
    if isinstance(sources, dict):
        row.update({f"w_{k}": v for k, v in sources.items()})
    if preview_dir is not None:
        write_comparison(preview_dir / f"{meta['case']}_{meta['target']}.png", meta["target"], ref, pred, brain, tumour)
    ending = ".nii" if meta["synthesis"].endswith(".nii") else ".nii.gz"  # predict writes both alike
    tsem_path = meta_path.with_name(meta_path.name.replace("_weights.json", f"_tsem{ending}"))
    if tsem_path.is_file():
        tsem, _ = read_volume(tsem_path)
        threshold = np.percentile(tsem[brain], TSEM_PERCENTILE)
        high = brain & (tsem > threshold)
        row["psnr_tsem_high"] = psnr_of_error(error, high) if high.any() else float("nan")
        row["psnr_tsem_low"] = psnr_of_error(error, brain & ~high)
    return row


def normalised_reference(
    meta_path: Path, meta: dict, reference: RawCase, channel_names: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(reference target, brain mask): the target normalised as the prediction's inputs were
    (the scheme in its JSON), so that both are in the units the model synthesises."""
    if meta.get("intensity", "normalized") != "normalized":
        raise InputError(meta_path, "evaluate needs predictions in normalised units (predict without --intensity)")
    target = channel_names.index(meta["target"])
    if target not in reference.files:
        raise InputError(meta_path, f"reference case has no {meta['target']} to compare with")
    volumes = load_case(RawCase(reference.case_id, reference.files))
    ref, _ = normalize(volumes.images[target], volumes.brain_mask, meta["normalization"], channel=meta["target"])
    return ref, volumes.brain_mask


def read_tumour(label_path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The tumour: every non-zero label."""
    label, geometry = read_volume(label_path)
    if geometry.shape != shape:
        raise InputError(label_path, f"label shape {geometry.shape} differs from the reference {shape}")
    return label > 0.5


def region_scores(
    pred: np.ndarray, ref: np.ndarray, regions: dict[str, np.ndarray | None], error: np.ndarray | None = None
) -> dict:
    """`psnr_NAME` and `ssim_NAME` inside each region that has voxels (the brain; the lesion,
    whose scores show whether a synthesis has the part a radiologist looks at first, which
    whole-brain scores hide), from one squared error (`error`, if the caller has it) and one
    SSIM map per slice."""
    present = {name: region for name, region in regions.items() if region is not None and region.any()}
    if not present:
        return {}
    error = squared_error(pred, ref) if error is None else error
    ssims = slice_ssim(pred, ref, list(present.values()))
    scores = {}
    for (name, region), value in zip(present.items(), ssims, strict=True):
        scores |= {f"psnr_{name}": psnr_of_error(error, region), f"ssim_{name}": value}
    return scores


def reference_grey(ref: np.ndarray, brain: np.ndarray) -> tuple[float, float]:
    """The grey scale previews share: the reference's 0.5th to 99.5th percentile in the brain,
    so a synthesis that misses a bright lesion looks darker than the reference, not rescaled."""
    return tuple(float(v) for v in np.percentile(ref[brain], [0.5, 99.5])) if brain.any() else (-1.0, 1.0)


def write_comparison(
    path: Path, target: str, ref: np.ndarray, pred: np.ndarray, brain: np.ndarray, tumour: np.ndarray | None
) -> None:
    """Reference, synthesis and their difference on the axial slice through the tumour's centre
    (the brain's without labels), both images on the reference's grey scale: what a reader
    checks first is whether the lesion and the anatomy came through."""
    from tsfnet.plotting import centre_slice, mid_axial, save_montage

    z = centre_slice(tumour) if tumour is not None and tumour.any() else centre_slice(brain)
    grey = reference_grey(ref, brain)
    panels = [
        (f"{target} (reference)", mid_axial(ref, z)),
        (f"{target} (synthesis)", mid_axial(pred, z)),
        ("|synthesis - reference|", mid_axial(np.abs(pred - ref) * brain, z)),
    ]
    save_montage(path, panels, cmap={2: "magma"}, value_range={0: grey, 1: grey, 2: (0.0, 1.0)})


def reference_label(case_id: str, reference_dir: Path, labels_dir: Path | None) -> Path | None:
    """The case's label file if there is one (in --labels, beside the references, or in the
    dataset's labelsTs/labelsTr); lesion scores are simply left out without it."""
    from tsfnet.evaluation.segmentation import find_label

    try:
        return find_label(case_id, Path(reference_dir), labels_dir)
    except InputError:
        return None


def evaluate(
    pred_dir: Path,
    reference_dir: Path,
    report_dir: Path | None = None,
    lpips_weights: Path | None = None,
    progress: bool = True,
    segmentation_model: TrainedModel | None = None,
    labels_dir: Path | None = None,
    previews: bool = False,
) -> tuple[list[dict], Path]:
    """Scores every prediction in `pred_dir` against `reference_dir`; with `previews`, also
    writes `report_dir/previews/CASE_TARGET.png` (`write_comparison`)."""
    pred_dir = Path(pred_dir)
    report_dir = Path(report_dir) if report_dir else pred_dir / "evaluation"
    if segmentation_model is not None:
        from tsfnet.evaluation.segmentation import require_segmentation_model

        require_segmentation_model(segmentation_model)
    predictions = find_predictions(pred_dir)
    channel_names = predictions[0][1].get("channel_names")
    if not isinstance(channel_names, list):
        raise InputError(predictions[0][0], "missing 'channel_names' (written by tsfnet predict)")
    references = {c.case_id: c for c in find_input_cases(reference_dir, len(channel_names))}
    lpips = build_lpips(lpips_weights)
    rows, failures = [], []
    preview_dir = report_dir / "previews" if previews else None
    for meta_path, meta in track(predictions, "evaluating", enabled=progress):
        reference = references.get(meta["case"])
        if reference is None:
            failures.append(f"{meta_path}: no reference case '{meta['case']}' in {reference_dir}")
            continue
        try:
            label = reference_label(meta["case"], reference_dir, labels_dir)
            rows.append(evaluate_one(meta_path, meta, pred_dir, reference, channel_names, lpips, label, preview_dir))
        except TsfnetError as exc:
            failures.append(str(exc))
    if not rows:
        raise TsfnetError("nothing could be evaluated: " + "; ".join(failures[:3]))
    report_dir.mkdir(parents=True, exist_ok=True)
    write_csv(report_dir / "metrics.csv", rows)
    notes = [] if lpips is not None else [UNAVAILABLE]
    notes += [f"failed: {f}" for f in failures]
    text = summary_markdown(rows, notes)
    if segmentation_model is not None:
        from tsfnet.evaluation.segmentation import evaluate_segmentation, segmentation_markdown

        seg_rows = evaluate_segmentation(predictions, pred_dir, reference_dir, segmentation_model, labels_dir, progress)
        write_csv(report_dir / "segmentation.csv", seg_rows)
        text += segmentation_markdown(seg_rows)
    write_atomic(report_dir / "summary.md", lambda tmp: tmp.write_text(text), overwrite=True)
    return rows, report_dir


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    write_atomic(path, write, overwrite=True)
