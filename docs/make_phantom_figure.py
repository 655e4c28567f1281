"""Regenerate docs/phantom.png: one full-resolution phantom case, four sequences and
its labels, on the axial slice through the enhancing tumour.

    python docs/make_phantom_figure.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tsfnet.data.phantom import LABELS, SEQUENCES, generate_case
from tsfnet.plotting import mid_axial, save_montage


def main(seed: int = 3) -> Path:
    case = generate_case(np.random.default_rng(seed), downsample=1)
    z = int(np.argwhere(case.label == LABELS["ET"])[:, 2].mean())
    panels = [(name, mid_axial(case.images[name], z)) for name in SEQUENCES]
    panels.append(("labels (NCR/ED/ET)", mid_axial(case.label.astype(float), z)))
    last = len(panels) - 1
    return save_montage(
        Path(__file__).with_name("phantom.png"), panels, cmap={last: "viridis"}, value_range={last: (0, 3)}
    )


if __name__ == "__main__":
    print(main())
