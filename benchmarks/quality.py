"""The paper's comparison, side by side, on the phantom dataset.

Every fusion is trained on the same cases with the same seed, batch size and total
step budget (two-stage models split it evenly between their stages), then all 28
tasks (the 14 proper input subsets of every test case) are predicted and evaluated
with `tsfnet evaluate`'s protocol. Writes `results/quality_<date>.md` (Table 1 layout,
the TSEM table, timings) and `results/quality_<date>_weights.png` (ω per target, the
paper's Fig. 3).

    python benchmarks/quality.py                         # 60/10/30 cases, 1/4 resolution, 2 CPU cores
    python benchmarks/quality.py --full --device cuda    # full resolution, the planned (paper) network
    python benchmarks/quality.py --train 16 --val 4 --test 4 --downsample 6 --steps 200   # a quick look
    python benchmarks/quality.py --fusions tsf --ensemble-folds 5   # + tsf's 5-fold ensemble against fold 0
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, result_path, write_result

from tsfnet.atomic import write_json
from tsfnet.data.dataset import RawDataset
from tsfnet.data.phantom import write_dataset
from tsfnet.demo import make_test_scenarios
from tsfnet.devices import resolve_device
from tsfnet.evaluation.evaluate import evaluate
from tsfnet.evaluation.tables import mean_sd
from tsfnet.fusion.tsf_ms import scale_task_weights
from tsfnet.inference.ensemble import load_predictor
from tsfnet.inference.explain import explain_weights
from tsfnet.inference.model_folder import load_model_folder
from tsfnet.inference.predictor import predict_folder
from tsfnet.model import build_model
from tsfnet.planning.api import plan
from tsfnet.planning.plans import load_plans, save_plans
from tsfnet.preprocessing.pipeline import list_preprocessed, preprocess_dataset
from tsfnet.training.runner import TrainOptions, train
from tsfnet.training.splits import SPLITS_FILE

FUSIONS = ("tsf", "tsf-ms", "wavg", "mean", "seq2seq-avg", "mmgan", "hinet", "pix2pix")
IMAGE_LEVEL = ("mmgan", "hinet")
# CPU mode: one width scale for every model so the budget buys comparable capacity.
SMALL_NETWORK = {
    "encoder_widths": [16, 32, 64],
    "encoder_kernels": [7, 3, 3],
    "strides": [1, 2, 2],
    "residual_blocks": 2,
    "code_embedding": 32,
    "hyper_basis": 8,
}
SMALL_BASELINES = {
    "mmgan": {"base_channels": 16, "discriminator_channels": 16},
    "hinet": {"base_channels": 16, "discriminator_channels": 16},
    "pix2pix": {"base_channels": 8, "discriminator_channels": 8},
}
METRICS = (("psnr", "PSNR box"), ("ssim", "SSIM box"), ("psnr_brain", "PSNR brain"), ("ssim_brain", "SSIM brain"))


def prepare_data(args: argparse.Namespace, work: Path) -> tuple[Path, Path, Path, Path]:
    raw = write_dataset(
        work / "raw", args.train + args.val, 1 if args.full else args.downsample, args.seed, n_test=args.test,
        progress=True,
    )  # fmt: skip
    store, plans = plan(raw, work / "preprocessed" / raw.name, workers=2)
    plans["configurations"]["2d"]["batch_size"] = args.batch
    plans["training"]["num_workers"] = args.workers
    plans["training"]["task_sampling"] = args.task_sampling
    if not args.full:
        plans["network"] = dict(SMALL_NETWORK)
        plans["fusion"].update(SMALL_BASELINES)
    save_plans(plans, store / "plans.json")
    preprocess_dataset(RawDataset.load(raw), store, plans, workers=2)
    ids = list_preprocessed(store)
    write_json(store / SPLITS_FILE, [rotated_split(ids, args, fold) for fold in range(max(args.ensemble_folds, 1))])
    inputs, reference = work / "test" / "inputs", work / "test" / "reference"
    make_test_scenarios(raw, inputs, reference, args.seed, every_subset=True)
    return raw, store, inputs, reference


def rotated_split(ids: list[str], args: argparse.Namespace, fold: int) -> dict[str, list[str]]:
    """Fold 0 trains on the first `--train` cases; fold k on the same number, the case list
    rotated by k validation blocks, so every fold has the same data and step budget."""
    shifted = ids[fold * args.val :] + ids[: fold * args.val]
    return {"train": sorted(shifted[: args.train]), "val": sorted(shifted[args.train :])}


def train_fold(fusion: str, fold: int, args: argparse.Namespace, store: Path, work: Path) -> tuple[Path, float]:
    """(model folder, seconds): `--steps` in all, split evenly between the stages."""
    stages = len(build_model(load_plans(store / "plans.json"), fusion).stages)
    began = time.perf_counter()
    result = train(
        TrainOptions(
            store=store,
            fusion=fusion,
            fold=fold,
            output=work / "results",
            device=args.device,
            steps=args.steps // stages,
            val_every=args.steps // stages,
            seed=args.seed,
        )
    )
    return result.model_dir, time.perf_counter() - began


def run_fusion(fusion: str, args: argparse.Namespace, store: Path, inputs: Path, reference: Path, work: Path) -> dict:
    model_dir, trained_s = train_fold(fusion, 0, args, store, work)
    model = load_model_folder(model_dir, resolve_device(args.device))
    began = time.perf_counter()
    report = predict_folder(model, inputs, work / "predictions" / fusion)
    predicted_s = time.perf_counter() - began
    rows, _ = evaluate(work / "predictions" / fusion, reference, work / "evaluation" / fusion, args.lpips_weights)
    weights_png = None
    if fusion == "tsf":
        _, weights_png = explain_weights(model, work / "explanations")
    return {
        "rows": rows,
        "train_s": trained_s,
        "predict_s": predicted_s,
        "failed": report.failed,
        "weights_png": weights_png,
        "scale_weights": scale_task_weights(model.model, model.channel_names) if fusion == "tsf-ms" else None,
        "parameters": sum(p.numel() for p in model.model.parameters()),
    }


def run_ensemble(
    args: argparse.Namespace, store: Path, inputs: Path, reference: Path, work: Path, fold_0_s: float
) -> dict:
    """tsf's folds 1..K-1 at fold 0's budget (fold 0 is `run_fusion`'s, trained in `fold_0_s`),
    then `predict` with the ensemble of all K; the train time counts all K folds."""
    extra_s = sum(train_fold("tsf", fold, args, store, work)[1] for fold in range(1, args.ensemble_folds))
    folds = list(range(args.ensemble_folds))
    ensemble = load_predictor(work / "results" / "tsf__plans__2d", resolve_device(args.device), folds=folds)
    predictions = work / "predictions" / "tsf_ensemble"
    began = time.perf_counter()
    report = predict_folder(ensemble, inputs, predictions)
    predicted_s = time.perf_counter() - began
    rows, _ = evaluate(predictions, reference, work / "evaluation" / "tsf_ensemble", args.lpips_weights)
    return {
        "rows": rows,
        "train_s": fold_0_s + extra_s,
        "predict_s": predicted_s,
        "failed": report.failed,
        "weights_png": None,
        "parameters": sum(p.numel() for m in ensemble.members for p in m.model.parameters()),
    }


def ensemble_gain(single: dict, ensemble: dict, folds: int) -> list[str]:
    """What the K-fold ensemble adds over fold 0, and what it costs at prediction time."""
    lines = ["| inputs | PSNR box fold 0 | PSNR box ensemble | gain dB | SSIM box gain |", "|---|---|---|---|---|"]
    for n_inputs in (1, 2, 3):
        psnr_0, psnr_k = mean_of(single, "psnr", n_inputs), mean_of(ensemble, "psnr", n_inputs)
        ssim_gain = mean_of(ensemble, "ssim", n_inputs) - mean_of(single, "ssim", n_inputs)
        lines.append(f"| {n_inputs} | {psnr_0:.2f} | {psnr_k:.2f} | {psnr_k - psnr_0:+.2f} | {ssim_gain:+.4f} |")
    extra = ensemble["predict_s"] - single["predict_s"]
    lines += [
        "",
        f"Prediction of every task: {single['predict_s']:.0f} s with fold 0, {ensemble['predict_s']:.0f} s with "
        f"the {folds}-fold ensemble ({extra:+.0f} s, x{ensemble['predict_s'] / max(single['predict_s'], 1e-9):.1f}).",
    ]
    return lines


def table1(outcomes: dict[str, dict]) -> list[str]:
    has_lpips = any(r["lpips"] == r["lpips"] for o in outcomes.values() for r in o["rows"])
    metrics = METRICS + ((("lpips", "LPIPS"),) if has_lpips else ())
    lines = ["| inputs | method | n | " + " | ".join(m[1] for m in metrics) + " |", "|---" * (3 + len(metrics)) + "|"]
    for n_inputs in (1, 2, 3):
        for fusion, outcome in outcomes.items():
            group = [r for r in outcome["rows"] if r["n_inputs"] == n_inputs]
            cells = [mean_sd([float(r[key]) for r in group]) for key, _ in metrics]
            lines.append(f"| {n_inputs} | {fusion} | {len(group)} | " + " | ".join(cells) + " |")
    return lines


def mean_of(outcome: dict, key: str, n_inputs: int) -> float:
    values = [float(r[key]) for r in outcome["rows"] if r["n_inputs"] == n_inputs]
    return sum(values) / max(len(values), 1)


def verdict(outcomes: dict[str, dict]) -> list[str]:
    """Does TSF beat the image-level baselines with 2 and 3 inputs? Said plainly either way."""
    if "tsf" not in outcomes:
        return []
    lines = []
    for n_inputs in (2, 3):
        tsf = mean_of(outcomes["tsf"], "psnr", n_inputs)
        rivals = {f: mean_of(outcomes[f], "psnr", n_inputs) for f in IMAGE_LEVEL if f in outcomes}
        if not rivals:
            continue
        best = max(rivals, key=rivals.get)
        beaten = tsf > rivals[best]
        lines.append(
            f"- {n_inputs} inputs: TSF {tsf:.2f} dB vs best image-level baseline {best} {rivals[best]:.2f} dB: "
            + ("TSF is ahead." if beaten else "TSF does **not** beat it.")
        )
    return lines


def tsem_table(outcome: dict) -> list[str]:
    lines = ["| inputs | n | PSNR TSEM > P99 | PSNR rest of brain |", "|---|---|---|---|"]
    for n_inputs in (1, 2, 3):
        group = [r for r in outcome["rows"] if r["n_inputs"] == n_inputs and "psnr_tsem_high" in r]
        high = mean_sd([float(r["psnr_tsem_high"]) for r in group])
        low = mean_sd([float(r["psnr_tsem_low"]) for r in group])
        lines.append(f"| {n_inputs} | {len(group)} | {high} | {low} |")
    return lines


def scale_weights_table(rows: list[dict]) -> list[str]:
    """tsf-ms: ω of each source at every scale, for each target from all the other sequences."""
    strides = rows[0]["strides"]
    lines = ["| target | source | " + " | ".join(f"ω at 1/{s}" for s in strides) + " |"]
    lines.append("|---|---|" + "---|" * len(strides))
    widest = max(len(r["sources"]) for r in rows)
    for row in (r for r in rows if len(r["sources"]) == widest):
        for source, weights in row["weights"].items():
            lines.append(f"| {row['target']} | {source} | " + " | ".join(f"{w:.3f}" for w in weights) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=60)
    parser.add_argument("--val", type=int, default=10)
    parser.add_argument("--test", type=int, default=30)
    parser.add_argument("--downsample", type=int, default=4, help="phantom resolution divisor (CPU mode)")
    parser.add_argument("--steps", type=int, default=1200, help="total training steps per method")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=0, help="data-loading processes")
    parser.add_argument(
        "--task-sampling", default="per_batch", choices=["per_batch", "per_sample"], help="tasks per batch or sample"
    )
    parser.add_argument("--fusions", default=",".join(FUSIONS))
    parser.add_argument("--full", action="store_true", help="full resolution and the planned network (GPU)")
    parser.add_argument("--lpips-weights", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None, help="keep the data and models here")
    parser.add_argument(
        "--ensemble-folds",
        type=int,
        default=0,
        help="also train tsf folds 1..K-1 (same budget as fold 0) and predict with the K-fold ensemble",
    )
    args = parser.parse_args()
    if args.ensemble_folds == 1 or args.ensemble_folds < 0:
        parser.error("--ensemble-folds takes 0 (off) or at least 2")
    if args.ensemble_folds and "tsf" not in args.fusions.split(","):
        parser.error("--ensemble-folds compares with tsf's fold 0: keep tsf in --fusions")
    work = args.work or Path(tempfile.mkdtemp(prefix="tsfnet_quality_"))
    began = time.perf_counter()
    _raw, store, inputs, reference = prepare_data(args, work)
    outcomes = {f: run_fusion(f, args, store, inputs, reference, work) for f in args.fusions.split(",")}
    ensemble_name = f"tsf x{args.ensemble_folds} folds"
    if args.ensemble_folds:
        outcomes[ensemble_name] = run_ensemble(args, store, inputs, reference, work, outcomes["tsf"]["train_s"])
    total_min = (time.perf_counter() - began) / 60
    weights_png = next((o["weights_png"] for o in outcomes.values() if o["weights_png"]), None)
    command = " ".join(["python benchmarks/quality.py", *sys.argv[1:]])
    lines = [
        "# quality: the paper's comparison on the phantom dataset",
        "",
        f"Command: `{command}`",
        f"Machine: {machine()}; device {args.device}; {total_min:.0f} min in all.",
        "",
        f"Data: {args.train} train / {args.val} val / {args.test} test phantom cases "
        f"({'full resolution' if args.full else f'1/{args.downsample} resolution'}), seed {args.seed}. "
        f"Every method: {args.steps} steps in total (split evenly between stages), batch {args.batch}, "
        f"tasks drawn {args.task_sampling.replace('_', ' ')}; "
        "all 28 tasks per test case (the 14 proper input subsets). Metrics: `tsfnet evaluate` "
        "('box' = brain bounding box on [-1, 1], data range 2; 'brain' = inside the brain mask).",
        "",
        "## Table 1: by number of inputs (mean ± sd over tasks and cases)",
        "",
        *table1(outcomes),
        "",
    ]
    said = verdict(outcomes)
    if said:  # only when an image-level baseline ran beside tsf
        lines += ["## Does TSF beat the image-level baselines?", "", *said, ""]
    if "tsf" in outcomes:
        lines += ["## Table 2: TSF, PSNR inside / outside the TSEM > 99th percentile region", ""]
        lines += [*tsem_table(outcomes["tsf"]), ""]
    if "tsf-ms" in outcomes:
        lines += ["## tsf-ms: PSNR inside / outside the TSEM > 99th percentile region", ""]
        lines += [*tsem_table(outcomes["tsf-ms"]), ""]
        lines += ["## tsf-ms: ω per scale (the finest first), all other sequences as sources", ""]
        lines += [*scale_weights_table(outcomes["tsf-ms"]["scale_weights"]), ""]
    if args.ensemble_folds:
        lines += [f"## TSF: {args.ensemble_folds}-fold ensemble against fold 0 (same budget per fold)", ""]
        lines += [
            f"Fold k trains on {args.train} cases and validates on {args.val}: the case list rotated by k "
            f"validation blocks (fold 0 is the split every method above used). `tsfnet predict` with the folder "
            "above the folds averages them in normalised space.",
            "",
        ]
        lines += [*ensemble_gain(outcomes["tsf"], outcomes[ensemble_name], args.ensemble_folds), ""]
    lines += ["## Cost", "", "| method | parameters | train min | predict s (all tasks) | failed cases |"]
    lines += ["|---|---|---|---|---|"]
    for fusion, o in outcomes.items():
        lines.append(
            f"| {fusion} | {o['parameters']:,} | {o['train_s'] / 60:.1f} | {o['predict_s']:.0f} | {len(o['failed'])} |"
        )
    if weights_png is not None:
        chart = result_path("quality", "_weights.png")
        shutil.copy(weights_png, chart)
        lines += ["", f"ω per target (TSF, the paper's Fig. 3): `{chart.name}`."]
    print(write_result("quality", lines).read_text())


if __name__ == "__main__":
    main()
