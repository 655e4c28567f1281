"""The report: Table 1 (metrics by number of inputs), per-target table, Table 2 (TSEM)."""

from __future__ import annotations

import math

import numpy as np

PROTOCOL = (
    "Protocol: reference normalised like the input (scheme in the prediction's JSON); metrics on [-1, 1], "
    "data range 2. 'box' = the brain bounding box, background included (close to the paper's fixed crop); "
    "'brain' = inside the brain mask. SSIM: scikit-image default (7-wide uniform window), per axial slice "
    "averaged; 'SSIM 3D' with a 7x7x7 window. LPIPS: AlexNet, per slice, summed over slices (paper Table 1)."
)


def mean_sd(values: list[float]) -> str:
    finite = [v for v in values if v is not None and not math.isnan(v) and not math.isinf(v)]
    if not finite:
        return "n/a"
    return f"{np.mean(finite):.3f} ± {np.std(finite):.3f}"


def grouped(rows: list[dict], key: str) -> dict:
    groups: dict = {}
    for row in rows:
        groups.setdefault(row[key], []).append(row)
    return dict(sorted(groups.items()))


def metric_table(title: str, rows: list[dict], by: tuple[str, str], columns: dict[str, str]) -> list[str]:
    """A markdown section: one line per value of `by` (its key, its header), mean ± sd of
    each column (header -> row key); nothing when no row has the first column."""
    rows = [r for r in rows if next(iter(columns.values())) in r]
    if not rows:
        return []
    key, header = by
    lines = ["", f"## {title}", "", f"| {header} | n | " + " | ".join(columns) + " |"]
    lines.append("|---|---|" + "---|" * len(columns))
    for value, group in grouped(rows, key).items():
        cells = [mean_sd([float(r[k]) for r in group]) for k in columns.values()]
        lines.append(f"| {value} | {len(group)} | " + " | ".join(cells) + " |")
    return lines


def summary_markdown(rows: list[dict], notes: list[str]) -> str:
    fusion = ", ".join(sorted({str(r.get("fusion", "")) for r in rows}))
    inputs = ("n_inputs", "inputs")
    lines = [f"# tsfnet evaluation ({fusion})", "", PROTOCOL]
    table_1 = {"PSNR box": "psnr", "SSIM box": "ssim", "SSIM 3D box": "ssim3d", "PSNR brain": "psnr_brain"}
    table_1 |= {"SSIM brain": "ssim_brain", "LPIPS": "lpips"}
    lines += metric_table("Table 1: by number of inputs", rows, inputs, table_1)
    by_target = {"PSNR box": "psnr", "SSIM box": "ssim", "PSNR brain": "psnr_brain"}
    lines += metric_table("By target", rows, ("target", "target"), by_target)
    block = {"PSNR block": "psnr_block", "SSIM 3D block": "ssim_block"}
    lines += metric_table("The paper's block: 126 x 192 x 192 of a 240 x 240 x 155 volume", rows, inputs, block)
    lesion = {"PSNR lesion": "psnr_lesion", "SSIM lesion": "ssim_lesion"}
    lines += metric_table("Lesion region: inside the tumour labels", rows, inputs, lesion)
    tsem = {"PSNR TSEM high": "psnr_tsem_high", "PSNR rest of brain": "psnr_tsem_low"}
    lines += metric_table("Table 2: PSNR inside / outside the TSEM > 99th percentile region", rows, inputs, tsem)
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
