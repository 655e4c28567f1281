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


def write_result(name: str, lines: list[str]) -> Path:
    """results/<name>_<date>.md, replaced whole or not at all (an interrupted run keeps the old file)."""
    text = "\n".join(lines) + "\n"
    return write_atomic(result_path(name), lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=True)
