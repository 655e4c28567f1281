"""Find the cases in a prediction input folder, whatever its layout.

Accepted: a raw-format folder (CASE_0000.nii.gz ...), a raw dataset root (its
imagesTs/ or imagesTr/), or a folder of BraTS 2021 / BraSyn case folders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tsfnet.data.converters import BRASYN, BRATS2021, ChallengeLayout, find_challenge_cases
from tsfnet.data.dataset import CHANNEL_FILE, split_ending
from tsfnet.errors import InputError

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class InputCase:
    case_id: str
    files: dict[int, Path]  # channel index -> file
    layout: ChallengeLayout | None = None  # set for BraTS/BraSyn inputs: outputs follow its naming


def _check_id(case_id: str, where: Path) -> str:
    if not SAFE_ID.match(case_id) or ".." in case_id:
        raise InputError(where, f"case name '{case_id}' is not a safe file name")
    return case_id


def find_input_cases(folder: Path, n_channels: int) -> list[InputCase]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "input folder not found")
    for sub in ("imagesTs", "imagesTr"):
        if (folder / "dataset.json").is_file() and (folder / sub).is_dir():
            return find_input_cases(folder / sub, n_channels)
    raw = _raw_cases(folder, n_channels)
    if raw:
        return raw
    for layout in (BRASYN, BRATS2021):
        found = find_challenge_cases(folder, layout)
        if found:
            return [
                InputCase(
                    _check_id(case_id, folder),
                    {i: files[s] for i, s in enumerate(layout.channel_suffixes) if s in files},
                    layout,
                )
                for case_id, files in sorted(found.items())
            ]
    raise InputError(folder, "no input cases found (expected CASE_XXXX.nii.gz files or BraTS/BraSyn case folders)")


def _raw_cases(folder: Path, n_channels: int) -> list[InputCase]:
    cases: dict[str, dict[int, Path]] = {}
    for path in sorted(folder.iterdir()):
        parts = split_ending(path.name) if path.is_file() and not path.name.startswith(".") else None
        match = CHANNEL_FILE.match(parts[0]) if parts else None
        if match is None:
            continue
        channel = int(match["channel"])
        if channel >= n_channels:
            raise InputError(path, f"unknown channel index {channel} (the model knows {n_channels} channels)")
        cases.setdefault(_check_id(match["case"], path), {})[channel] = path
    return [InputCase(case_id, files) for case_id, files in sorted(cases.items())]
