"""Converters from challenge layouts to the raw dataset format (never modifying SRC).

Files are hard-linked when SRC and DST share a file system, copied otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tsfnet.errors import InputError
from tsfnet.progress import track


@dataclass(frozen=True)
class ChallengeLayout:
    """How one challenge names a case's files: `<case><sep><suffix><ending>`."""

    name: str
    separator: str
    channel_suffixes: tuple[str, ...]
    channel_names: tuple[str, ...]
    label_suffix: str


BRATS2021 = ChallengeLayout("brats2021", "_", ("t1", "t1ce", "t2", "flair"), ("T1", "T1Gd", "T2", "FLAIR"), "seg")
BRASYN = ChallengeLayout("brasyn", "-", ("t1n", "t1c", "t2w", "t2f"), ("T1", "T1Gd", "T2", "FLAIR"), "seg")
LAYOUTS = {layout.name: layout for layout in (BRATS2021, BRASYN)}
ENDINGS = (".nii.gz", ".nii")


@dataclass
class ConversionReport:
    converted: int
    incomplete: dict[str, list[str]]  # case -> missing sequence names


def find_challenge_cases(src: Path, layout: ChallengeLayout) -> dict[str, dict[str, Path]]:
    """Map case id -> {suffix: file} for every file below SRC that follows the layout."""
    wanted = (*layout.channel_suffixes, layout.label_suffix)
    cases: dict[str, dict[str, Path]] = {}
    for path in sorted(src.rglob("*")):
        if not path.is_file():
            continue
        ending = next((e for e in ENDINGS if path.name.endswith(e)), None)
        if ending is None:
            continue
        stem = path.name[: -len(ending)]
        case_id, sep, suffix = stem.rpartition(layout.separator)
        if sep and suffix.lower() in wanted:
            cases.setdefault(case_id, {})[suffix.lower()] = path
    return cases


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def convert(layout_name: str, src: Path, dst: Path, progress: bool = True) -> ConversionReport:
    if layout_name not in LAYOUTS:
        raise InputError(src, f"unknown layout '{layout_name}'; known: {', '.join(LAYOUTS)}")
    layout = LAYOUTS[layout_name]
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise InputError(src, "source folder not found")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise InputError(dst, "destination must lie outside the source folder")
    cases = find_challenge_cases(src, layout)
    if not cases:
        example = f"CASE{layout.separator}{layout.channel_suffixes[0]}.nii.gz"
        raise InputError(src, f"no {layout.name} files found (expected names like {example})")
    incomplete: dict[str, list[str]] = {}
    endings: list[str] = []  # the sources' own, kept: dataset.json declares the most common
    for case_id, files in track(sorted(cases.items()), f"converting {layout.name}", enabled=progress):
        for channel, suffix in enumerate(layout.channel_suffixes):
            if suffix in files:
                ending = next(e for e in ENDINGS if files[suffix].name.endswith(e))
                endings.append(ending)
                _link_or_copy(files[suffix], dst / "imagesTr" / f"{case_id}_{channel:04d}{ending}")
            else:
                incomplete.setdefault(case_id, []).append(layout.channel_names[channel])
        if layout.label_suffix in files:
            label = files[layout.label_suffix]
            ending = next(e for e in ENDINGS if label.name.endswith(e))
            _link_or_copy(label, dst / "labelsTr" / f"{case_id}{ending}")
    meta = {
        "name": dst.name,
        "description": f"converted from {layout.name} ({src})",
        "channel_names": {str(i): n for i, n in enumerate(layout.channel_names)},
        "labels": {"background": 0, "NCR": 1, "ED": 2, "ET": 3 if layout is BRASYN else 4},
        "numTraining": len(cases),
        "file_ending": Counter(endings).most_common(1)[0][0] if endings else ".nii.gz",
        "source_layout": layout.name,
    }
    (dst / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return ConversionReport(len(cases), incomplete)
