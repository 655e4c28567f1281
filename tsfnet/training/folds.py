"""When a fold is finished: the rule `--fold all5 --resume` skips by and prediction
ensembles by (only finished folds go into an ensemble)."""

from __future__ import annotations

from pathlib import Path

from tsfnet.atomic import read_json
from tsfnet.model import build_model
from tsfnet.planning.plans import load_plans


def final_checkpoint(model_dir: Path) -> Path:
    """`checkpoint_<last stage>.pt`: the runner writes it when the model's last stage ends."""
    model_dir = Path(model_dir)
    settings = read_json(model_dir / "model.json")
    plans = load_plans(model_dir / "plans.json")
    stages = build_model(plans, settings["fusion"], settings["head"], settings["config"]).stages
    return model_dir / f"checkpoint_{stages[-1]}.pt"


def is_finished(model_dir: Path) -> bool:
    """A fold is finished when its last stage has run to its final step."""
    model_dir = Path(model_dir)
    if not ((model_dir / "model.json").is_file() and (model_dir / "plans.json").is_file()):
        return False
    return final_checkpoint(model_dir).is_file()
