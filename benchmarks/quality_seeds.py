"""Methods across seeds: the Table 1 of several `quality.py` result files, pooled by seed.

One `quality.py` run is one seed, and a margin of a few tenths of a dB can be that seed's
luck. This reads result files of the same options (other seeds, or other methods at a seed)
and writes `results/quality_seeds_<date>.md`: PSNR per method and number of inputs as the
mean over the seeds with its range, in the box and inside the lesion; the order of the
methods at each seed; and the paired differences the comparison is for, seed by seed and on
average: tsf - mean (target +0.3 dB), tsf-ms - tsf, and each of them against the best
baseline of the same seed. Files of other options (cases, steps, patches, sampling) or of
another training precision (bf16 or fp32) are refused: their numbers do not pool.

    python benchmarks/quality_seeds.py benchmarks/results/quality_1mm_per_sample_{,[!x]*}2026-11-27.md

(`{,[!x]*}`: the seed-0 file and the others of that day, not the longer-budget `_x2` runs.)
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_result
from quality import FUSION_MARGIN_DB, TABLE1_HEADING, TSF_FAMILY

DATA_LINE = re.compile(r"^Data: (?P<before>.*), seed (?P<seed>\d+)\. (?P<after>.*)$")
NAMED_PRECISION = re.compile(r"; precision (\w+);")
COLUMNS = {"box": "PSNR box", "lesion": "PSNR lesion"}
OVER_SEEDS = "the mean over the seeds (in brackets: the lowest and the highest seed)"

Scores = dict[str, dict[int, dict[str, float]]]  # method -> inputs -> column -> mean over the test cases


@dataclass
class Run:
    path: Path
    seed: int
    protocol: str  # the Data line without its seed: what must match for two files to pool
    precision: str | None  # what it trained in; None where its Machine line does not tell
    scores: Scores


@dataclass
class Pooled:
    protocol: str
    precision: str | None
    by_seed: dict[int, Scores] = field(default_factory=dict)
    sources: dict[tuple[int, str], Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def read_run(path: Path) -> Run:
    """A quality.py result file's seed, protocol and Table 1 (each cell's mean, its ± sd dropped)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    data = next((DATA_LINE.match(line) for line in lines if line.startswith("Data: ")), None)
    if data is None:
        raise SystemExit(f"error: {path}: no 'Data: ..., seed K. ...' line; is it a quality.py result file?")
    try:
        start = lines.index(TABLE1_HEADING)
        at = next(i for i in range(start, len(lines)) if lines[i].startswith("| inputs |"))
    except (ValueError, StopIteration):
        raise SystemExit(f"error: {path}: no Table 1 (by number of inputs)") from None
    names = [cell.strip() for cell in lines[at].strip("|").split("|")]
    if not set(COLUMNS.values()) <= set(names):
        raise SystemExit(f"error: {path}: Table 1 lacks {' or '.join(COLUMNS.values())}")
    scores: Scores = {}
    for line in lines[at + 2 :]:  # after the header and its |---| row
        if not line.startswith("|"):
            break
        cells = dict(zip(names, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
        if " " in cells["method"]:  # an ensemble ("tsf x5 folds") is no contender
            continue
        values = {key: float(cells[name].split("±")[0]) for key, name in COLUMNS.items()}
        scores.setdefault(cells["method"], {})[int(cells["inputs"])] = values
    protocol = data["before"] + ", seed K. " + data["after"]
    return Run(path, int(data["seed"]), protocol, training_precision(lines), scores)


def training_precision(lines: list[str]) -> str | None:
    """bf16 or fp32, from the Machine line: named there since quality.py has --precision; before,
    a CPU run's `auto` was bf16 where the CPU has it natively and fp32 where it is emulated."""
    machine = next((line for line in lines if line.startswith("Machine: ")), "")
    if named := NAMED_PRECISION.search(machine):
        return named[1]
    if "no GPU" in machine and "device auto" in machine:
        return "bf16" if "bf16 native" in machine else "fp32" if "bf16 emulated" in machine else None
    return None


def precision_said(precision: str | None) -> str:
    return precision or "an unknown precision"


def pool(runs: list[Run]) -> Pooled:
    """Every (seed, method) once: a method trained at one seed in two files keeps the first,
    and a note says so where the two disagree (training is deterministic on the CPU)."""
    pooled = Pooled(runs[0].protocol, runs[0].precision)
    for run in runs:
        if run.protocol != pooled.protocol:
            raise SystemExit(
                f"error: {run.path}: other options than {runs[0].path.name} (its 'Data:' line differs "
                "beyond the seed); only runs of the same options pool"
            )
        if run.precision != pooled.precision:
            raise SystemExit(
                f"error: {run.path}: trained in {precision_said(run.precision)}, "
                f"{runs[0].path.name} in {precision_said(pooled.precision)}; "
                "only runs of one precision pool (quality.py --precision)"
            )
        seed_scores = pooled.by_seed.setdefault(run.seed, {})
        for method, by_inputs in run.scores.items():
            first = pooled.sources.setdefault((run.seed, method), run.path)
            if first != run.path:
                gap = max(abs(by_inputs[n]["box"] - seed_scores[method][n]["box"]) for n in by_inputs)
                if gap > 0.005:
                    pooled.notes.append(
                        f"{method} at seed {run.seed} trained in two runs, up to {gap:.2f} dB apart in the box: "
                        f"{first.name} kept, {run.path.name} not"
                    )
                continue
            seed_scores[method] = by_inputs
    return pooled


def mean_and_range(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ({min(values):.2f} to {max(values):.2f})"


def method_table(pooled: Pooled, column: str) -> list[str]:
    methods = list(dict.fromkeys(m for scores in pooled.by_seed.values() for m in scores))
    lines = ["| method | seeds | 1 input | 2 inputs | 3 inputs |", "|---|---|---|---|---|"]
    for method in methods:
        seeds = [seed for seed, scores in sorted(pooled.by_seed.items()) if method in scores]
        cells = [mean_and_range([pooled.by_seed[seed][method][n][column] for seed in seeds]) for n in (1, 2, 3)]
        lines.append(f"| {method} | {', '.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    return lines


def order_lines(pooled: Pooled) -> list[str]:
    lines = []
    for seed, scores in sorted(pooled.by_seed.items()):
        for n in (2, 3):
            ranked = sorted(scores, key=lambda m: -scores[m][n]["box"])
            said = " > ".join(f"{m} {scores[m][n]['box']:.2f}" for m in ranked)
            lines.append(f"- seed {seed}, {n} inputs: {said}")
    return lines


def best_baseline(scores: dict, n: int) -> str | None:
    rivals = [m for m in scores if m not in TSF_FAMILY]
    return max(rivals, key=lambda m: scores[m][n]["box"]) if rivals else None


def differences(pooled: Pooled) -> list[str]:
    """Paired, seed by seed (2 / 3 inputs), then their mean over the seeds that have both sides.
    Against the best baseline the mean takes only the seeds that hold every baseline of the file:
    a seed without Hi-Net would otherwise average a margin over the mean into one over Hi-Net."""
    comparisons = [
        ("tsf - mean", "tsf", "mean"),
        ("tsf-ms - tsf", "tsf-ms", "tsf"),
        ("tsf - best baseline", "tsf", None),
        ("tsf-ms - best baseline", "tsf-ms", None),
    ]
    seeds = sorted(pooled.by_seed)
    baselines = {m for scores in pooled.by_seed.values() for m in scores if m not in TSF_FAMILY}
    lines = [
        "| difference (box, dB) | " + " | ".join(f"seed {s}: 2 / 3 inputs" for s in seeds) + " | mean: 2 / 3 inputs |",
        "|---" * (len(seeds) + 2) + "|",
    ]
    for label, ours, theirs in comparisons:
        cells, pairs, left_out = [], [], False
        for seed in seeds:
            scores = pooled.by_seed[seed]
            other = {n: theirs or best_baseline(scores, n) for n in (2, 3)}
            if ours not in scores or any(o not in scores for o in other.values()):
                cells.append("-")
                continue
            gaps = [scores[ours][n]["box"] - scores[other[n]][n]["box"] for n in (2, 3)]
            if theirs or baselines <= scores.keys():
                pairs.append((seed, gaps))
            else:
                left_out = True
            named = "" if theirs else f" ({' / '.join(dict.fromkeys(other.values()))})"
            cells.append(f"{gaps[0]:+.2f} / {gaps[1]:+.2f}{named}")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {mean_of(pairs, left_out)} |")
    return lines


def mean_of(pairs: list[tuple[int, list[float]]], left_out: bool) -> str:
    """The 2 / 3-input mean of the seeds' gaps, naming the seeds it holds when some were left out."""
    if not pairs:
        return "-"
    mean = " / ".join(f"{statistics.fmean(g):+.2f}" for g in zip(*(gaps for _, gaps in pairs), strict=True))
    if not left_out:
        return mean
    return f"{mean} (seeds with every baseline: {', '.join(str(seed) for seed, _ in pairs)})"


def report(pooled: Pooled, paths: list[Path]) -> list[str]:
    coverage = [f"- seed {seed}: {', '.join(scores)}" for seed, scores in sorted(pooled.by_seed.items())]
    return [
        "# quality across seeds: Table 1 of several quality.py runs, pooled",
        "",
        "Command: `python benchmarks/quality_seeds.py " + " ".join(str(p) for p in paths) + "`",
        "",
        f"Protocol (every file's): {pooled.protocol} Trained in {precision_said(pooled.precision)}.",
        "",
        "Methods per seed (a baseline missing at a seed is missing from that seed's 'best baseline'):",
        *coverage,
        *(["", "Notes:", *[f"- {note}" for note in pooled.notes]] if pooled.notes else []),
        "",
        f"## PSNR box (dB): {OVER_SEEDS}",
        "",
        *method_table(pooled, "box"),
        "",
        f"## PSNR lesion (dB), inside the tumour labels: {OVER_SEEDS}",
        "",
        *method_table(pooled, "lesion"),
        "",
        "## Order at each seed (PSNR box, dB)",
        "",
        *order_lines(pooled),
        "",
        f"## Paired differences (tsf must gain {FUSION_MARGIN_DB} dB over mean)",
        "",
        *differences(pooled),
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="quality.py result files (.md)")
    parser.add_argument("--name", default="quality_seeds", help="results/<name>_<date>.md")
    args = parser.parse_args()
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        raise SystemExit(f"error: no such result file: {', '.join(missing)}")
    pooled = pool([read_run(path) for path in args.files])
    print(write_result(args.name, report(pooled, args.files)))


if __name__ == "__main__":
    main()
