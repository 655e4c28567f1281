"""`tsfnet explain`: ω for every task code (the paper's Fig. 3) and TSEM montages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tsfnet.atomic import atomic_path, write_json
from tsfnet.errors import TsfnetError
from tsfnet.inference.ensemble import Ensemble, Predictor
from tsfnet.inference.model_folder import TrainedModel
from tsfnet.model import FusionModel
from tsfnet.plotting import plt
from tsfnet.tasks import all_tasks, task_code


def task_weights(trained: TrainedModel) -> list[dict]:
    """ω of every (source subset, target) code. For TSF/wavg ω depends on the code alone,
    so placeholder features suffice; other fusions report what they report on them."""
    model, names = trained.model, trained.channel_names
    if not isinstance(model, FusionModel):
        raise TsfnetError(
            f"fusion '{trained.settings['fusion']}' is a whole network without task weights; "
            "ω comes from the feature fusions (tsf, wavg, mean, max, ...)"
        )
    n = len(names)
    channels = model.encoder.out_channels
    size = (4,) * model.dims
    rows = []
    generator = torch.Generator().manual_seed(0)
    for sources, target in all_tasks(list(range(n))):
        mask = torch.zeros(1, n)
        mask[0, list(sources)] = 1
        features = torch.randn(1, n, channels, *size, generator=generator) * mask.view(1, n, 1, *([1] * model.dims))
        with torch.no_grad():
            result = model.fusion(
                features.to(trained.device),
                mask.to(trained.device),
                task_code(mask, torch.tensor([target]), n).to(trained.device),
            )
        if result.weights is None:
            continue
        weights = result.weights[0].cpu().numpy()
        rows.append(
            {
                "target": names[target],
                "sources": [names[s] for s in sources],
                "weights": {names[s]: float(weights[s]) for s in sources},
            }
        )
    return rows


def plot_weights(rows: list[dict], names: list[str], path: Path) -> Path:
    """One panel per target: a stacked bar of ω for each source combination."""
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.8), squeeze=False)
    for ax, target in zip(axes[0], names, strict=True):
        subset = [r for r in rows if r["target"] == target]
        labels = ["+".join(r["sources"]) for r in subset]
        bottom = np.zeros(len(subset))
        for index, source in enumerate(names):
            values = np.array([r["weights"].get(source, 0.0) for r in subset])
            ax.bar(labels, values, bottom=bottom, color=colours(index), label=source)
            bottom += values
        ax.set_title(f"target {target}")
        ax.set_ylim(0, 1)
        ax.tick_params(axis="x", rotation=70, labelsize=7)
    axes[0][0].set_ylabel("ω")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(Path(path), overwrite=True) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)


def ensemble_task_weights(trained: Predictor) -> list[dict]:
    """`task_weights`, averaged over an ensemble's folds (the ω its predictions use)."""
    if not isinstance(trained, Ensemble):
        return task_weights(trained)
    per_fold = [task_weights(member) for member in trained.members]
    return [
        {**rows[0], "weights": {s: float(np.mean([r["weights"][s] for r in rows])) for s in rows[0]["weights"]}}
        for rows in zip(*per_fold, strict=True)
    ]


def explain_weights(trained: Predictor, output: Path) -> tuple[Path, Path]:
    rows = ensemble_task_weights(trained)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    json_path = write_json(output / "task_weights.json", rows)
    return json_path, plot_weights(rows, trained.channel_names, output / "task_weights.png")


def tsem_montages(
    trained: Predictor,
    input_dir: Path,
    output: Path,
    case_ids: list[str] | None = None,
) -> list[Path]:
    """For each chosen case: every present sequence re-synthesised from the others,
    shown as real | synthesis | TSEM, one row per target."""
    from tsfnet.data.dataset import RawCase, load_case
    from tsfnet.errors import InputError
    from tsfnet.inference.cases import find_input_cases
    from tsfnet.inference.predictor import synthesise
    from tsfnet.plotting import mid_axial
    from tsfnet.preprocessing.pipeline import preprocess_volumes

    cases = find_input_cases(input_dir, len(trained.channel_names))
    if case_ids:
        unknown = set(case_ids) - {c.case_id for c in cases}
        if unknown:
            raise InputError(input_dir, f"no case named {', '.join(sorted(unknown))}")
        cases = [c for c in cases if c.case_id in case_ids]
    written = []
    for case in cases:
        volumes = load_case(RawCase(case.case_id, case.files))
        pre = preprocess_volumes(volumes, trained.plans)
        targets = [t for t in sorted(case.files) if len(case.files) > 1]
        if not targets:
            continue
        z = int(np.flatnonzero(volumes.brain_mask.any(axis=(0, 1))).mean())
        fig, axes = plt.subplots(len(targets), 3, figsize=(7.5, 2.6 * len(targets)), squeeze=False)
        for row, target in zip(axes, targets, strict=True):
            result = synthesise(trained, pre, [target])[target]
            name = trained.channel_names[target]
            real = mid_axial(volumes.images[target], z)
            row[0].imshow(real, cmap="gray")
            row[0].set_title(f"{name} (real)", fontsize=9)
            row[1].imshow(mid_axial(result.synthesis, z), cmap="gray", vmin=-1, vmax=1)
            row[1].set_title(f"{name} from {'+'.join(result.sources)}", fontsize=9)
            tsem = result.tsem if result.tsem is not None else np.zeros_like(result.synthesis)
            row[2].imshow(mid_axial(tsem, z), cmap="hot")
            row[2].set_title("TSEM", fontsize=9)
            for ax in row:
                ax.axis("off")
        fig.tight_layout()
        path = Path(output) / f"{case.case_id}_tsem_montage.png"
        with atomic_path(path, overwrite=True) as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
