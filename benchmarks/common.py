"""Helpers shared by the benchmarks: machine description and result files."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import torch

from tsfnet.atomic import write_atomic
from tsfnet.devices import native_bf16

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    bf16 = "native" if native_bf16(torch.device("cpu")) else "emulated"
    return (
        f"{os.cpu_count()} CPU cores ({cpu}, bf16 {bf16}), {gpu}, torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )


def peak_rss_gib() -> float:
    """This process's peak resident memory. VmHWM restarts at exec, unlike ru_maxrss, which
    a spawned child inherits from its parent on Linux."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def result_path(name: str, suffix: str = ".md") -> Path:
    """results/<name>_<date><suffix>: one result per benchmark and day, kept in git."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS / f"{name}_{datetime.date.today().isoformat()}{suffix}"


HAND_WRITTEN = "by hand)"  # "How this run went (written by hand): ...", "## Reading (written after it, by hand)"


def label_of(line: str) -> str:
    """What a result line says before its first colon ("Machine", "Command"): where it is found again."""
    return line.split(":", 1)[0]


def hand_written(old: list[str]) -> list[tuple[str, list[str]]]:
    """The hand-written parts of a result file, each with the label of the line it followed
    ("Machine", "Command"; "" for a section, which goes last). A part is a paragraph whose
    opening words say it was written by hand, up to the next blank line, or a section whose
    heading says so, up to the next heading."""
    kept = []
    for start, line in enumerate(old):
        if line.startswith("#") and HAND_WRITTEN in line:
            end = next((i for i in range(start + 1, len(old)) if old[i].startswith("#")), len(old))
            kept.append(("", old[start:end]))
        elif HAND_WRITTEN in label_of(line).split(".", 1)[0]:
            end = next((i for i in range(start, len(old)) if not old[i].strip()), len(old))
            before = next((old[i] for i in range(start - 1, -1, -1) if old[i].strip()), "")
            kept.append((label_of(before), old[start:end]))
    return kept


def with_hand_written(lines: list[str], old: list[str]) -> list[str]:
    """`lines` with the old file's hand-written parts back where they were: rerunning a
    benchmark on the day of its result must not erase what was written about it."""
    lines = list(lines)
    for label, part in reversed(hand_written(old)):
        if part[0] in lines:
            continue
        at = next((i + 1 for i, line in enumerate(lines) if label and label_of(line) == label), len(lines))
        lines[at:at] = ["", *part]
    return lines


def write_result(name: str, lines: list[str]) -> Path:
    """results/<name>_<date>.md, replaced whole or not at all (an interrupted run keeps the old
    file), keeping the paragraphs written by hand in the file it replaces."""
    path = result_path(name)
    old = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    text = "\n".join(with_hand_written(lines, old)) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=True)
