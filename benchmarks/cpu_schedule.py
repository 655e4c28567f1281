"""Stage 1 of tsf on a CPU-planned store under several learning rates, schedules and lesion
oversampling: the validation PSNR each reaches in the same number of steps. The CPU
budget's choices (poly everywhere, `training.lesion_oversampling`) and the demo's stage-1
rate come from this. Writes `results/cpu_schedule_<date>.md`.

    tsfnet demo -o tsfnet_demo --steps 600          # any CPU-planned store will do
    python benchmarks/cpu_schedule.py --store tsfnet_demo/tsfnet_preprocessed/Dataset001_Phantom

Each variant is a plans variant (`plans_schedule_K.json`) of the store, sharing its cases;
its models go to a temporary folder. About 3 min per variant at 800 steps on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, write_result

from tsfnet.planning.plans import load_plans, save_plans
from tsfnet.training.runner import TrainOptions, train

# (label, stage-1 learning rate, schedule, lesion oversampling)
VARIANTS = (
    ("2e-4 constant (the paper's)", 2e-4, "constant", 0.0),
    ("5e-4 constant", 5e-4, "constant", 0.0),
    ("2e-4 poly", 2e-4, "poly", 0.0),
    ("5e-4 poly", 5e-4, "poly", 0.0),
    ("1e-3 poly", 1e-3, "poly", 0.0),
    ("5e-4 poly, lesion oversampling 0.33", 5e-4, "poly", 0.33),
)


def run_variant(store: Path, index: int, variant: tuple, steps: int, output: Path) -> list[dict]:
    """The validation events of stage 1 trained under `variant`."""
    _label, lr, schedule, oversampling = variant
    plans = load_plans(store / "plans.json")
    plans["training"]["pretrain"].update(lr=lr, schedule=schedule)
    plans["training"]["lesion_oversampling"] = oversampling
    name = f"schedule_{index}"
    save_plans(plans, store / f"plans_{name}.json")
    result = train(
        TrainOptions(
            store=store,
            plans=name,
            fusion="tsf",
            stage="pretrain",
            steps=steps,
            val_every=steps // 2,
            num_workers=0,
            output=output,
            progress=False,
        )
    )
    return [e for e in result.history if "val_psnr" in e]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True, help="a preprocessed store planned with --budget cpu")
    parser.add_argument("--steps", type=int, default=800)
    args = parser.parse_args()
    lines = [
        "# cpu_schedule: stage 1 of tsf under learning rates, schedules and lesion oversampling",
        "",
        f"Command: `python benchmarks/cpu_schedule.py {' '.join(sys.argv[1:])}`",
        f"Machine: {machine()}.",
        "",
        f"Validation PSNR (inside the brain, every one-to-one task of the store's validation cases) after "
        f"{args.steps // 2} and {args.steps} steps of stage 1; train seconds exclude validation.",
        "",
        f"| variant | PSNR at {args.steps // 2} | PSNR at {args.steps} | train s |",
        "|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="tsfnet_schedule_") as output:
        for index, variant in enumerate(VARIANTS):
            half, end = run_variant(args.store, index, variant, args.steps, Path(output))[-2:]
            lines.append(f"| {variant[0]} | {half['val_psnr']:.2f} | {end['val_psnr']:.2f} | {end['train_s']:.0f} |")
            print(lines[-1], flush=True)
    print(write_result("cpu_schedule", lines).read_text())


if __name__ == "__main__":
    main()
