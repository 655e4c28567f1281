"""`tsfnet predict`: synthesise every missing (or requested) sequence of every case.

Per case and target it writes the synthesis in the input's geometry, the TSEM,
a weights JSON and optionally a PNG preview. The synthesis is written last, so a
case whose synthesis exists is complete; a killed run leaves no partial file
(atomic writes) and a rerun skips what is done.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsfnet.atomic import remove_stale_temporaries, write_json
from tsfnet.data.dataset import CaseVolumes, RawCase, load_case
from tsfnet.data.volume_io import Geometry, write_volume
from tsfnet.errors import InputError, TsfnetError
from tsfnet.inference.cases import InputCase, find_input_cases
from tsfnet.inference.ensemble import Predictor
from tsfnet.plotting import centre_slice, heat_overlay, hottest_slice, mid_axial, save_montage
from tsfnet.preprocessing.normalization import BACKGROUND, denormalize
from tsfnet.preprocessing.pipeline import PreprocessedCase, preprocess_volumes, restore_geometry
from tsfnet.progress import track

log = logging.getLogger("tsfnet")


@dataclass
class PredictReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


@dataclass
class CaseTargetResult:
    synthesis: np.ndarray  # raw grid
    tsem: np.ndarray | None
    weights: dict[str, float]
    sources: list[str]
    spread: np.ndarray | None = None  # sd over an ensemble's folds


def parse_targets(targets: str, channel_names: list[str]) -> list[int] | None:
    """'all' (None: every missing sequence) or a comma list of sequence names."""
    if targets.strip().lower() in ("all", "missing", ""):
        return None
    lookup = {name.lower(): i for i, name in enumerate(channel_names)}
    chosen = []
    for name in targets.split(","):
        if name.strip().lower() not in lookup:
            raise TsfnetError(f"unknown target '{name.strip()}'; the model knows {', '.join(channel_names)}")
        chosen.append(lookup[name.strip().lower()])
    return chosen


def output_ending(case: InputCase) -> str:
    """The first channel's NIfTI ending (as nnU-Net keeps `file_ending`); other formats get .nii.gz."""
    first = case.files[min(case.files)].name
    return ".nii" if first.endswith(".nii") else ".nii.gz"


def output_names(case: InputCase, target_name: str, target: int) -> dict[str, str]:
    ending = output_ending(case)
    if case.layout is not None:  # the challenge's own name, so results can be submitted as they are
        main = f"{case.case_id}{case.layout.separator}{case.layout.channel_suffixes[target]}{ending}"
        base = f"explanations/{case.case_id}_{target_name}"
    else:
        main = f"{case.case_id}_{target_name}{ending}"
        base = f"{case.case_id}_{target_name}"
    return {
        "synthesis": main,
        "tsem": f"{base}_tsem{ending}",
        "weights": f"{base}_weights.json",
        "preview": f"{base}_preview.png",
        "folds_sd": f"{base}_folds_sd{ending}",
    }


def synthesise(trained: Predictor, pre: PreprocessedCase, targets: list[int]) -> dict[int, CaseTargetResult]:
    """Each target from every other available sequence; targets that share their sources
    (all the missing ones) share one encoding pass."""
    names = trained.channel_names
    available = [names.index(n) for n in pre.properties["available"]]
    groups: dict[tuple[int, ...], list[int]] = {}
    for target in targets:
        sources = tuple(a for a in available if a != target)
        if not sources:
            raise InputError(pre.case_id, f"no available sequence to synthesise {names[target]} from")
        groups.setdefault(sources, []).append(target)
    images = {names.index(n): v for n, v in pre.images.items()}
    props = pre.properties
    brain = restore_geometry(pre.mask.astype(np.uint8), props, 0, nearest=True) > 0
    results = {}
    for sources, group in groups.items():
        for target, prediction in trained.predict(images, sources, group).items():
            synthesis = np.where(brain, restore_geometry(prediction.synthesis, props, BACKGROUND), BACKGROUND)
            tsem = None
            if prediction.tsem is not None:
                tsem = np.where(brain, restore_geometry(prediction.tsem, props, 0.0), 0.0).astype(np.float32)
            weights = {} if prediction.weights is None else {names[s]: float(prediction.weights[s]) for s in sources}
            results[target] = CaseTargetResult(synthesis.astype(np.float32), tsem, weights, [names[s] for s in sources])
            if prediction.spread is not None:
                spread = np.where(brain, restore_geometry(prediction.spread, props, 0.0), 0.0)
                results[target].spread = spread.astype(np.float32)
    return results


@dataclass
class LoadedCase:
    """A case read and preprocessed: the host work done ahead of the network."""

    case: InputCase
    volumes: CaseVolumes
    pre: PreprocessedCase


def load_input(trained: Predictor, case: InputCase) -> LoadedCase:
    volumes = load_case(RawCase(case.case_id, case.files))  # refuses a case without channels
    return LoadedCase(case, volumes, preprocess_volumes(volumes, trained.plans))


@dataclass
class TargetOutput:
    """What `write_target` writes for one synthesised target."""

    files: dict[str, Path]
    image: np.ndarray  # the synthesis, in the intensity asked for
    result: CaseTargetResult
    weights_json: dict


def synthesise_case(
    trained: Predictor,
    loaded: LoadedCase,
    output: Path,
    targets: list[int] | None,
    overwrite: bool,
    preview: bool,
    intensity: str,
    report: PredictReport,
) -> list[TargetOutput]:
    """The network's part of a case (and its previews: matplotlib stays on this thread)."""
    names, case = trained.channel_names, loaded.case
    wanted = targets if targets is not None else [i for i in range(len(names)) if i not in case.files]
    if not wanted:
        report.skipped.append(f"{case.case_id}: all sequences present (use --targets to resynthesise one)")
        return []
    outputs = {t: {k: output / v for k, v in output_names(case, names[t], t).items()} for t in wanted}
    todo = []
    for target in wanted:
        if outputs[target]["synthesis"].exists() and not overwrite:
            report.skipped.append(f"{outputs[target]['synthesis']}: exists (use --overwrite)")
        else:
            todo.append(target)
    written = []
    for target, result in synthesise(trained, loaded.pre, todo).items() if todo else ():
        files = outputs[target]
        image = result.synthesis
        if intensity == "reference":
            lo, hi = trained.plans.intensity_reference[names[target]]
            image = np.where(image > BACKGROUND, denormalize(image, lo, hi), 0.0)
        weights_json = {
            "case": case.case_id,
            "target": names[target],
            "sources": result.weights or result.sources,
            "task_code": [int(names[i] in result.sources) for i in range(len(names))]
            + [int(i == target) for i in range(len(names))],
            "channel_names": names,
            "fusion": trained.settings["fusion"],
            "intensity": intensity,
            "precision": trained.precision,
            "folds": trained.folds,
            "normalization": trained.plans.normalization,
            "synthesis": files["synthesis"].name,
        }
        if preview:
            write_preview(files["preview"], loaded.volumes, names, names[target], result)
        written.append(TargetOutput(files, image, result, weights_json))
    return written


def write_target(target: TargetOutput, geometry: Geometry) -> Path:
    """TSEM, spread and weights first, the synthesis last: a synthesis on disk means a complete target."""
    files, result = target.files, target.result
    if result.tsem is not None:
        write_volume(files["tsem"], result.tsem, geometry, overwrite=True)
    if result.spread is not None:
        write_volume(files["folds_sd"], result.spread, geometry, overwrite=True)
    write_json(files["weights"], target.weights_json)
    return write_volume(files["synthesis"], target.image, geometry, overwrite=True)


def write_preview(path: Path, volumes, names: list[str], target_name: str, result: CaseTargetResult) -> None:
    """Every input, the synthesis and its TSEM on the brain's centre slice, and again on the
    slice the TSEM marks most (where to look first) when that is elsewhere."""
    mask = volumes.brain_mask
    centre = centre_slice(mask)
    hottest = hottest_slice(result.tsem, mask) if result.tsem is not None else None
    slices = [centre] + ([hottest] if hottest is not None and centre is not None and abs(hottest - centre) > 2 else [])
    panels, overlay = [], {}
    first = min(volumes.images)
    for z in slices:
        where = f" (slice {z})" if len(slices) > 1 else ""
        panels += [
            (names[i] + (where if i == first else ""), mid_axial(v, z)) for i, v in sorted(volumes.images.items())
        ]
        panels.append((f"{target_name} (synthesis)", mid_axial(result.synthesis, z)))
        if result.tsem is not None:
            panels.append(("TSEM (brain P90-P99.5)", mid_axial(result.synthesis, z)))
            overlay[len(panels) - 1] = heat_overlay(result.tsem, mask, z, "|G(f+fA) - G(f)|")
    save_montage(path, panels, overlay=overlay or None, columns=len(panels) // len(slices))


def predict_folder(
    trained: Predictor,
    input_dir: Path,
    output: Path,
    targets: str = "all",
    overwrite: bool = False,
    preview: bool = False,
    intensity: str = "normalized",
    progress: bool = True,
) -> PredictReport:
    if intensity not in ("normalized", "reference"):
        raise TsfnetError(f"unknown --intensity '{intensity}'; use normalized or reference")
    chosen = parse_targets(targets, trained.channel_names)
    cases = find_input_cases(input_dir, len(trained.channel_names))
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output)
    report = PredictReport()
    # Three stages overlap: the next case is read and preprocessed, this one goes through the
    # network, the last one is written. The host work (about 1 s a BraTS case) would
    # otherwise add to every case's network time (benchmarks/predict_speed.py).
    with ThreadPoolExecutor(1, "tsfnet-read") as reader, ThreadPoolExecutor(1, "tsfnet-write") as writer:
        loading = reader.submit(load_input, trained, cases[0]) if cases else None
        pending: deque[tuple[str, list[Future]]] = deque()
        for index, case in enumerate(track(cases, "predicting", enabled=progress)):
            current = loading
            loading = reader.submit(load_input, trained, cases[index + 1]) if index + 1 < len(cases) else None
            try:
                loaded = current.result()
                synthesised = synthesise_case(trained, loaded, output, chosen, overwrite, preview, intensity, report)
            except TsfnetError as exc:
                _failed(report, case.case_id, exc)
                continue
            writes = [writer.submit(write_target, target, loaded.volumes.geometry) for target in synthesised]
            pending.append((case.case_id, writes))
            while len(pending) > 1:  # at most one case's outputs wait in memory
                _finish_writes(report, *pending.popleft())
        while pending:
            _finish_writes(report, *pending.popleft())
    return report


def _failed(report: PredictReport, case_id: str, error: TsfnetError) -> None:
    report.failed[case_id] = str(error)
    log.error("%s: skipped: %s", case_id, error)


def _finish_writes(report: PredictReport, case_id: str, writes: list[Future]) -> None:
    for write in writes:
        try:
            report.written.append(write.result())
        except TsfnetError as exc:
            _failed(report, case_id, exc)
