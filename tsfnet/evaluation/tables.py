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


def summary_markdown(rows: list[dict], notes: list[str]) -> str:
    fusion = ", ".join(sorted({str(r.get("fusion", "")) for r in rows}))
    lines = [f"# tsfnet evaluation ({fusion})", "", PROTOCOL, ""]
    lines += [
        "## Table 1: by number of inputs",
        "",
        "| inputs | n | PSNR box | SSIM box | SSIM 3D box | PSNR brain | SSIM brain | LPIPS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n_inputs, group in grouped(rows, "n_inputs").items():
        cells = [
            mean_sd([float(r[k]) for r in group])
            for k in ("psnr", "ssim", "ssim3d", "psnr_brain", "ssim_brain", "lpips")
        ]
        lines.append(f"| {n_inputs} | {len(group)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## By target",
        "",
        "| target | n | PSNR box | SSIM box | PSNR brain |",
        "|---|---|---|---|---|",
    ]
    for target, group in grouped(rows, "target").items():
        cells = [mean_sd([float(r[k]) for r in group]) for k in ("psnr", "ssim", "psnr_brain")]
        lines.append(f"| {target} | {len(group)} | " + " | ".join(cells) + " |")
    lesion_rows = [r for r in rows if "psnr_lesion" in r]
    if lesion_rows:
        lines += [
            "",
            "## Lesion region: inside the tumour labels",
            "",
            "| inputs | n | PSNR lesion | SSIM lesion |",
            "|---|---|---|---|",
        ]
        for n_inputs, group in grouped(lesion_rows, "n_inputs").items():
            cells = [mean_sd([float(r[k]) for r in group]) for k in ("psnr_lesion", "ssim_lesion")]
            lines.append(f"| {n_inputs} | {len(group)} | " + " | ".join(cells) + " |")
    tsem_rows = [r for r in rows if "psnr_tsem_high" in r]
    if tsem_rows:
        lines += [
            "",
            "## Table 2: PSNR inside / outside the TSEM > 99th percentile region",
            "",
            "| inputs | n | PSNR TSEM high | PSNR rest of brain |",
            "|---|---|---|---|",
        ]
        for n_inputs, group in grouped(tsem_rows, "n_inputs").items():
            high = mean_sd([float(r["psnr_tsem_high"]) for r in group])
            low = mean_sd([float(r["psnr_tsem_low"]) for r in group])
            lines.append(f"| {n_inputs} | {len(group)} | {high} | {low} |")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
