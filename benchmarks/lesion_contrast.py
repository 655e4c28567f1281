"""Which inputs hold each part of the lesion? A synthesis can only draw what its inputs show.

For phantom cases generated as `tsfnet demo` generates them (1 mm, seeded), each tumour
tissue (oedema, enhancing rim, necrotic core) against the normal brain within 6 mm of the
tumour, in every sequence: Cohen's d, the difference of the means over the normal tissue's
standard deviation (the normal tissue mixes grey and white matter and CSF, so a tissue that
stands out from all three has a large |d|). Then the demo's scenarios (each test case's
target from 1, 2, 3 of the others, `tsfnet.demo.make_nested_scenarios`) with the tissues each
set of inputs shows, so a preview without a lesion reads as "not in the inputs" or as "not learnt". Writes
`results/lesion_contrast_<date>.md`.

    python benchmarks/lesion_contrast.py            # about a minute on 2 CPU cores
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_dilation

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, write_result

from tsfnet.data.phantom import LABELS, SEQUENCES, generate_case
from tsfnet.demo import nested_sources

RESULT = "lesion_contrast"
TISSUES = {"oedema": LABELS["ED"], "enhancing rim": LABELS["ET"], "necrotic core": LABELS["NCR"]}
NEIGHBOURHOOD_MM = 6
# A tissue "shows" in a sequence when |d| reaches this; on the phantom every |d| is under 1.3
# or over 2.2.
SHOWS_D = 2.0


def contrasts(
    images: dict[str, np.ndarray], label: np.ndarray, reach: int = NEIGHBOURHOOD_MM
) -> dict[tuple[str, str], float]:
    """(tissue, sequence) -> Cohen's d against the normal brain within `reach` voxels of the tumour."""
    brain = next(iter(images.values())) > 0
    tumour = label > 0
    normal = binary_dilation(tumour, iterations=reach) & ~tumour & brain
    found = {}
    for sequence, image in images.items():
        centre, spread = image[normal].mean(), image[normal].std()
        for tissue, value in TISSUES.items():
            inside = image[label == value]
            if inside.size:
                found[tissue, sequence] = float((inside.mean() - centre) / spread)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    per_case = []
    for index in range(args.cases):
        case = generate_case(rng)
        per_case.append(contrasts(case.images, case.label))
        print(f"case {index + 1}/{args.cases}", flush=True)
    keys = [(tissue, sequence) for tissue in TISSUES for sequence in SEQUENCES]
    mean = {key: float(np.mean([found[key] for found in per_case if key in found])) for key in keys}
    shows = {key: abs(mean[key]) >= SHOWS_D for key in keys}

    lines = [
        "# Which inputs hold each part of the lesion",
        "",
        f"Command: `python benchmarks/lesion_contrast.py --cases {args.cases} --seed {args.seed}`",
        f"Machine: {machine()}.",
        "",
        f"Phantom cases at 1 mm (`tsfnet.data.phantom.generate_case`, seed {args.seed}, {args.cases} cases). "
        f"Each tumour tissue against the normal brain within {NEIGHBOURHOOD_MM} mm of the tumour: Cohen's d "
        "(mean difference over the normal tissue's standard deviation; that tissue mixes grey and white matter "
        f"and CSF), the mean over the cases. A tissue *shows* in a sequence when |d| >= {SHOWS_D}.",
        "",
        "| tissue | " + " | ".join(SEQUENCES) + " |",
        "|---|" + "---|" * len(SEQUENCES),
    ]
    for tissue in TISSUES:
        cells = [f"{mean[tissue, s]:+.1f}" + (" **shows**" if shows[tissue, s] else "") for s in SEQUENCES]
        lines.append(f"| {tissue} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## The demo's scenarios: what the inputs show of the target's lesion",
        "",
        "Each test case withholds one target and gets 1, 2, then 3 of the others "
        "(`tsfnet.demo.make_nested_scenarios`). A tissue the target shows can come through only if one of "
        "the inputs shows it too, or if the network infers it from tissue that the inputs do show "
        "(in the phantom each tumour tissue has fixed relaxation times, so with enough inputs it is "
        "identifiable from their combination).",
        "",
        "| target | inputs | target shows | inputs show |",
        "|---|---|---|---|",
    ]
    for target, name in enumerate(SEQUENCES):
        wanted = [t for t in TISSUES if shows[t, name]]
        for sources in nested_sources(target):
            inputs = [SEQUENCES[s] for s in sources]
            seen = [t for t in wanted if any(shows[t, s] for s in inputs)]
            lines.append(f"| {name} | {' + '.join(inputs)} | {', '.join(wanted)} | {', '.join(seen) or 'none'} |")
    path = write_result(RESULT, lines)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
