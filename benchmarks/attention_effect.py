"""What does the attention branch f_A add to a trained model's synthesis?

`quality.py` compares `tsf` with `wavg` (ω without the attention branch), but the two train
their decoders apart, so their difference mixes what f_A adds with where each training went.
This takes one trained model with an attention branch (`tsf`, `tsf-ms`) and predicts every
test scenario twice through the product's `predict` and `evaluate`: as trained, G(f̂ + f_A)
(the synthesis tsfnet writes), and with f_A held at zero, G(f̂) (the paper's X'), with the
same encoder, ω and decoder. Writes `results/attention_effect_<fusion>_<date>.md`.

    python benchmarks/quality.py --fusions tsf-ms --work W     # a trained model and its test scenarios
    python benchmarks/attention_effect.py --work W --fusion tsf-ms   # about 8 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import mean

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, write_result
from fusion_headroom import load_work_model, scenarios, score

from tsfnet.inference.model_folder import TrainedModel
from tsfnet.nets.attention import TaskAttention

METRICS = {"psnr": "box", "psnr_brain": "brain", "psnr_lesion": "lesion"}


class NoAttention(nn.Module):
    """f_A = 0: G decodes the fused features as they are."""

    def forward(self, stacked: torch.Tensor, code: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(fused)


@contextmanager
def attention_off(trained: TrainedModel) -> Iterator[None]:
    """Inside the block every attention branch of the model gives f_A = 0."""
    found = [
        (parent, name, child)
        for parent in trained.model.modules()
        for name, child in parent.named_children()
        if isinstance(child, TaskAttention)
    ]
    if not found:
        raise SystemExit(f"{trained.folder}: its fusion has no attention branch (tsf or tsf-ms)")
    for parent, name, _child in found:
        setattr(parent, name, NoAttention())
    try:
        yield
    finally:
        for parent, name, child in found:
            setattr(parent, name, child)


def compare(trained: TrainedModel, inputs: Path, reference: Path, work: Path) -> list[dict]:
    """One row per scenario: each metric with f_A (`<metric>`) and without (`<metric>_off`)."""
    rows = []
    for target, case_id, files in scenarios(inputs, len(trained.channel_names), min_inputs=1):
        print(f"{case_id} -> {target} from {len(files)} input(s)")
        with_attention = score(trained, files, target, reference, work)
        without = score(trained, files, target, reference, work, attention_off(trained))
        row = {"case": case_id, "target": target, "n_inputs": len(files)}
        for metric in METRICS:
            row[metric] = with_attention.get(metric, float("nan"))
            row[f"{metric}_off"] = without.get(metric, float("nan"))
        rows.append(row)
    return rows


def report(args: argparse.Namespace, trained: TrainedModel, rows: list[dict], minutes: float) -> list[str]:
    header = " | ".join(f"{region} with f_A | {region} f_A = 0 | difference" for region in METRICS.values())
    lines = [
        f"# attention_effect: what the attention branch adds to `{args.fusion}`",
        "",
        f"Command: `python benchmarks/attention_effect.py --work {args.work} --fusion {args.fusion}`",
        f"Machine: {machine()}; device {args.device}; {minutes:.0f} min in all.",
        f"Model: `{trained.folder}`. Every test scenario predicted as trained, G(f̂ + f_A), and with "
        "f_A = 0, G(f̂), through `predict` and `evaluate`: PSNR in dB on the brain box, inside the brain "
        "and inside the tumour labels; difference = with f_A − without.",
        "",
        "## Mean by number of inputs",
        "",
        f"| inputs | n | {header} |",
        "|---|---|" + "---|---|---|" * len(METRICS),
    ]
    for n_inputs in sorted({r["n_inputs"] for r in rows}):
        group = [r for r in rows if r["n_inputs"] == n_inputs]
        cells = []
        for metric in METRICS:
            on, off = mean(r[metric] for r in group), mean(r[f"{metric}_off"] for r in group)
            cells.append(f"{on:.2f} | {off:.2f} | {on - off:+.2f}")
        lines.append(f"| {n_inputs} | {len(group)} | {' | '.join(cells)} |")
    lines += ["", "## Each scenario", "", "| scenario | inputs | " + header + " |"]
    lines.append("|---|---|" + "---|---|---|" * len(METRICS))
    for r in rows:
        cells = [f"{r[m]:.2f} | {r[f'{m}_off']:.2f} | {r[m] - r[f'{m}_off']:+.2f}" for m in METRICS]
        lines.append(f"| {r['case']} -> {r['target']} | {r['n_inputs']} | {' | '.join(cells)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="a quality.py --work folder with a trained model")
    parser.add_argument("--fusion", default="tsf", help="tsf or tsf-ms (a fusion with an attention branch)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    began = time.perf_counter()
    trained = load_work_model(parser, args.work, args.fusion, args.device)
    test = args.work / "test"
    rows = compare(trained, test / "inputs", test / "reference", args.work / "attention_effect")
    minutes = (time.perf_counter() - began) / 60
    lines = report(args, trained, rows, minutes)
    print(write_result(f"attention_effect_{args.fusion}", lines).read_text())


if __name__ == "__main__":
    main()
