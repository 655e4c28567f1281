"""progress.png: training loss and validation metrics per stage."""

from __future__ import annotations

from pathlib import Path

from tsfnet.atomic import atomic_path
from tsfnet.plotting import plt


def plot_progress(history: list[dict], path: Path) -> Path:
    stages = list(dict.fromkeys(e["stage"] for e in history))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for stage in stages:
        losses = [(e["step"], e["loss"]) for e in history if e["stage"] == stage and "loss" in e]
        if losses:
            axes[0].plot(*zip(*losses, strict=True), label=stage)
        for key in ("val_psnr", "val_dice"):
            values = [(e["step"], e[key]) for e in history if e["stage"] == stage and key in e]
            if values:
                axes[1].plot(*zip(*values, strict=True), marker="o", label=f"{stage} {key[4:]}")
    axes[0].set(title="training loss", xlabel="step", yscale="log")
    axes[1].set(title="validation (masked)", xlabel="step")
    for ax in axes:
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    with atomic_path(Path(path), overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(path)
