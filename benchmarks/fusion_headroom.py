"""How much could any weighting of the sources gain over a plain mean, with a trained model's
own encoder, attention and decoder?

`quality.py` asks whether tsf beats `mean` by 0.3 dB. When it does not, this says whether a
better ω exists at all: every test scenario with 2 or 3 inputs is predicted again with ω held
fixed at each point of a grid over its sources (the corners are one source alone; the uniform
1/k and the model's own ω are added), through the product's `predict` and `evaluate`. The best
grid point of each scenario is an oracle, chosen on the test case itself, so its gain over the
uniform ω bounds from above what a learnt ω could gain with these features. Writes
`results/fusion_headroom_<date>.md`.

    python benchmarks/quality.py --fusions tsf --work W      # a trained tsf and its test scenarios
    python benchmarks/fusion_headroom.py --work W            # about 20 min on 2 CPU cores (step 0.1 / 0.25)
"""

from __future__ import annotations

import argparse
import itertools
import logging
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from fractions import Fraction
from pathlib import Path
from statistics import mean

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, write_result
from quality import FUSION_MARGIN_DB

from tsfnet.devices import resolve_device
from tsfnet.evaluation.evaluate import evaluate
from tsfnet.inference.cases import find_input_cases
from tsfnet.inference.model_folder import TrainedModel, load_model_folder
from tsfnet.inference.predictor import predict_folder

RESULT = "fusion_headroom"
METRICS = ("psnr", "psnr_brain", "psnr_lesion")


class FixedWeighting(nn.Module):
    """Stands in for TSF's task weighting: the given weight per sequence, masked by the
    sources and renormalised, whatever the task."""

    def __init__(self, weights: list[float]) -> None:
        super().__init__()
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))

    def forward(self, code: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        masked = self.weights.to(source_mask.device) * source_mask.float()
        return masked / masked.sum(dim=1, keepdim=True)


@contextmanager
def fixed_weights(trained: TrainedModel, weights: list[float]) -> Iterator[None]:
    """The model predicts with ω fixed at `weights` (one per sequence) inside the block."""
    fusion = getattr(trained.model, "fusion", None)
    if not hasattr(fusion, "weighting"):
        raise SystemExit(f"{trained.folder}: its fusion has no task weighting to fix (tsf or wavg)")
    learnt = fusion.weighting
    fusion.weighting = FixedWeighting(weights)
    try:
        yield
    finally:
        fusion.weighting = learnt


def simplex_grid(k: int, step: Fraction) -> list[tuple[float, ...]]:
    """Every weight vector over k sources in multiples of `step` that sums to 1."""
    parts = int(1 / step)
    return [
        tuple(float(n * step) for n in counts)
        for counts in itertools.product(range(parts + 1), repeat=k)
        if sum(counts) == parts
    ]


def candidate_weights(k: int, step: Fraction) -> list[tuple[float, ...] | None]:
    """None (the model's own ω), the uniform 1/k, then the grid."""
    uniform = (1.0 / k,) * k
    return [None, uniform, *(w for w in simplex_grid(k, step) if w != uniform)]


def scenarios(inputs: Path, n_channels: int, min_inputs: int = 2) -> list[tuple[str, str, dict[int, Path]]]:
    """(target, case id, the case's input files) of every scenario with `min_inputs` or more
    inputs; `inputs/<TARGET>/` folders as quality.py writes them."""
    found = []
    for folder in sorted(p for p in inputs.iterdir() if p.is_dir()):
        for case in find_input_cases(folder, n_channels):
            if len(case.files) >= min_inputs:
                found.append((folder.name, case.case_id, case.files))
    return found


def score(
    trained: TrainedModel,
    files: dict,
    target: str,
    reference: Path,
    work: Path,
    change: AbstractContextManager = nullcontext(),
) -> dict:
    """Predict one scenario (inside `change`: the model altered, or as it is), evaluate it,
    and drop the prediction."""
    shutil.rmtree(work, ignore_errors=True)
    inputs = work / "inputs"
    inputs.mkdir(parents=True)
    for path in files.values():
        (inputs / path.name).symlink_to(path.resolve())
    predictions = work / "predictions"
    with change:
        report = predict_folder(trained, inputs, predictions, targets=target, progress=False)
    if report.failed:
        raise SystemExit("; ".join(report.failed.values()))
    rows, _ = evaluate(predictions, reference, work / "evaluation", progress=False)
    shutil.rmtree(work)
    return rows[0]


def sweep(trained: TrainedModel, inputs: Path, reference: Path, work: Path, steps: dict[int, Fraction]) -> list[dict]:
    """One row per (scenario, candidate ω): the sources' weights and the scores."""
    names = trained.channel_names
    rows = []
    for target, case_id, files in scenarios(inputs, len(names)):
        sources = sorted(files)  # channel indices
        candidates = candidate_weights(len(sources), steps[len(sources)])
        print(f"{case_id} -> {target}: {len(candidates)} weightings of {'+'.join(names[c] for c in sources)}")
        for weights in candidates:
            full = None
            if weights is not None:
                full = [0.0] * len(names)
                for channel, w in zip(sources, weights, strict=True):
                    full[channel] = w
            change = nullcontext() if full is None else fixed_weights(trained, full)
            scored = score(trained, files, target, reference, work / "scratch", change)
            rows.append(
                {
                    "case": case_id,
                    "target": target,
                    "sources": [names[c] for c in sources],
                    "kind": "learnt" if weights is None else ("uniform" if weights == candidates[1] else "grid"),
                    "weights": [scored[f"w_{names[c]}"] for c in sources],  # as the prediction reports them
                    **{m: scored.get(m, float("nan")) for m in METRICS},
                }
            )
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per scenario: the learnt, uniform and best (oracle) ω and their scores, and each
    source alone."""
    summary = []
    for key in dict.fromkeys((r["case"], r["target"]) for r in rows):
        group = [r for r in rows if (r["case"], r["target"]) == key]
        by_kind = {r["kind"]: r for r in group if r["kind"] != "grid"}
        best = max(group, key=lambda r: r["psnr"])
        corners = [r for r in group if r["kind"] == "grid" and max(r["weights"]) > 0.999]
        alone = {r["sources"][r["weights"].index(max(r["weights"]))]: r["psnr"] for r in corners}
        summary.append(
            {
                "case": key[0],
                "target": key[1],
                "sources": group[0]["sources"],
                "learnt": by_kind["learnt"],
                "uniform": by_kind["uniform"],
                "best": best,
                "alone": alone,
            }
        )
    return summary


def weights_text(weights: list[float]) -> str:
    return " / ".join(f"{w:.2f}" for w in weights)


def report(args: argparse.Namespace, trained: TrainedModel, summary: list[dict], minutes: float) -> list[str]:
    lines = [
        "# fusion_headroom: could any weighting of the sources beat a plain mean?",
        "",
        f"Command: `python benchmarks/fusion_headroom.py --work {args.work} --fusion {args.fusion}`",
        f"Machine: {machine()}; device {args.device}; {minutes:.0f} min in all.",
        f"Model: `{trained.folder}`; every scenario with 2 or 3 inputs of the run's test cases, "
        f"ω fixed on a grid of step {args.step2} (2 sources) and {args.step3} (3 sources), the uniform "
        "1/k and the model's own ω added; PSNR in dB on the brain box (quality.py's verdict metric). "
        "'best' is the grid point that scores highest on that very scenario: an oracle.",
        "",
        "| scenario | sources | learnt ω | PSNR learnt | PSNR uniform | best ω | PSNR best | best - uniform |"
        " each source alone |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        alone = ", ".join(f"{name} {value:.2f}" for name, value in s["alone"].items())
        lines.append(
            f"| {s['case']} -> {s['target']} | {'+'.join(s['sources'])} | {weights_text(s['learnt']['weights'])} | "
            f"{s['learnt']['psnr']:.2f} | {s['uniform']['psnr']:.2f} | {weights_text(s['best']['weights'])} | "
            f"{s['best']['psnr']:.2f} | {s['best']['psnr'] - s['uniform']['psnr']:+.2f} | {alone} |"
        )
    lines += ["", "## Mean over the scenarios", ""]
    lines += [
        "| inputs | n | learnt - uniform | best - uniform | best source alone - uniform |",
        "|---|---|---|---|---|",
    ]
    for k in sorted({len(s["sources"]) for s in summary}):
        group = [s for s in summary if len(s["sources"]) == k]
        learnt = mean([s["learnt"]["psnr"] - s["uniform"]["psnr"] for s in group])
        best = mean([s["best"]["psnr"] - s["uniform"]["psnr"] for s in group])
        alone = mean([max(s["alone"].values()) - s["uniform"]["psnr"] for s in group])
        lines.append(f"| {k} | {len(group)} | {learnt:+.2f} | {best:+.2f} | {alone:+.2f} |")
    headroom = mean([s["best"]["psnr"] - s["uniform"]["psnr"] for s in summary])
    verdict = "below" if headroom < FUSION_MARGIN_DB else "at or above"
    lines += [
        "",
        f"Oracle headroom over the uniform ω: {headroom:+.2f} dB on average, {verdict} the {FUSION_MARGIN_DB} dB that "
        "tsf must gain over `mean` (quality.py). Below it, no weighting of these features, learnt or chosen "
        "on the test case itself, earns the target with this encoder and decoder.",
    ]
    return lines


def load_work_model(parser: argparse.ArgumentParser, work: Path, fusion: str, device: str) -> TrainedModel:
    """`fusion`'s model in a quality.py --work folder. Quiets tsfnet's log: evaluate's note that
    LPIPS is unavailable would repeat for every prediction (PSNR only here)."""
    folder = work / "results" / f"{fusion}__plans__2d" / "fold_0"
    if not folder.is_dir():
        parser.error(f"{folder}: no trained model (run quality.py --fusions {fusion} --work {work})")
    logging.getLogger("tsfnet").setLevel(logging.ERROR)
    return load_model_folder(folder, resolve_device(device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="a quality.py --work folder with a trained model")
    parser.add_argument("--fusion", default="tsf", help="tsf or wavg (a fusion with a task weighting)")
    parser.add_argument("--step2", type=Fraction, default=Fraction(1, 10), help="grid step with 2 sources")
    parser.add_argument("--step3", type=Fraction, default=Fraction(1, 4), help="grid step with 3 sources")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    for step in (args.step2, args.step3):
        if not 0 < step <= 1 or (1 / step).denominator != 1:
            parser.error(f"a grid step must divide 1, got {step}")
    began = time.perf_counter()
    trained = load_work_model(parser, args.work, args.fusion, args.device)
    test = args.work / "test"
    rows = sweep(trained, test / "inputs", test / "reference", args.work / "headroom", {2: args.step2, 3: args.step3})
    minutes = (time.perf_counter() - began) / 60
    print(write_result(RESULT, report(args, trained, summarise(rows), minutes)).read_text())


if __name__ == "__main__":
    main()
