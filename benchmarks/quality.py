"""The paper's comparison, side by side, on the phantom dataset at its native 1 mm.

Every fusion is trained on the same cases with the same seed, batch size, 96 x 96 patches
(the planner's CPU budget: `tsfnet plan --budget cpu`) and total step budget (two-stage
models split it evenly between their stages), validated along the way (validation PSNR
against step and against training time: the learning curves), then every test scenario is
predicted as the plans say (whole slices unless `sliding_window`) and evaluated with
`tsfnet evaluate`'s protocol, lesion-region scores included. Writes
`results/quality_<voxel>mm_<task sampling>[_x<budget>][_seed<k>][_<fusions, when not all>]_<date>.md`
(Table 1, the verdicts, Table 2, the cost), `..._curves.png` (all methods' learning
curves), `..._lesion_<target>.png` (every method's synthesis through the tumour, from 1, 2
and 3 inputs) and `..._weights.png` (ω per target, the paper's Fig. 3).

    python benchmarks/quality.py                     # about 1.5 h on 2 CPU cores with native bf16 (96 min at 74d555e)
    python benchmarks/quality.py --budget 4          # 4x the steps per method: about 8 h
    python benchmarks/quality.py --work W --resume   # go on after a stop: finished methods are kept
    python benchmarks/quality.py --train 6 --val 1 --test 1 --steps 200 --fusions tsf,mean   # a quick look
    python benchmarks/quality.py --full --device cuda   # the planned (paper) network on whole slices
    python benchmarks/quality.py --fusions tsf --ensemble-folds 5   # + tsf's 5-fold ensemble against fold 0
    python benchmarks/quality.py --fusions mean,seq2seq-early   # the early-fusion ablation (a file of its own)
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, result_path, write_result

from tsfnet.atomic import read_json, write_json
from tsfnet.data.dataset import RawDataset
from tsfnet.data.phantom import SEQUENCES, write_dataset
from tsfnet.data.volume_io import read_volume
from tsfnet.demo import compact_plans, make_all_subset_scenarios, make_nested_scenarios
from tsfnet.devices import PRECISIONS, resolve_device, resolve_precision
from tsfnet.evaluation.evaluate import evaluate, normalised_reference, reference_grey
from tsfnet.evaluation.tables import mean_sd
from tsfnet.fusion.tsf_ms import scale_task_weights
from tsfnet.inference.cases import find_input_cases
from tsfnet.inference.ensemble import load_predictor
from tsfnet.inference.explain import explain_weights
from tsfnet.inference.model_folder import load_model_folder
from tsfnet.inference.predictor import predict_folder
from tsfnet.model import build_model
from tsfnet.planning.api import plan
from tsfnet.planning.plans import Plans, load_plans, save_plans
from tsfnet.plotting import centre_slice, mid_axial, save_montage
from tsfnet.preprocessing.pipeline import list_preprocessed, preprocess_dataset
from tsfnet.training.runner import TrainOptions, train
from tsfnet.training.splits import SPLITS_FILE

FUSIONS = ("tsf", "tsf-ms", "wavg", "mean", "seq2seq-avg", "mmgan", "hinet", "pix2pix")
METRICS = (
    ("psnr", "PSNR box"),
    ("ssim", "SSIM box"),
    ("psnr_brain", "PSNR brain"),
    ("ssim_brain", "SSIM brain"),
    ("psnr_lesion", "PSNR lesion"),
    ("ssim_lesion", "SSIM lesion"),
)
TRAIN_CASES, STEPS = 12, 2000  # the default run: 96 min on 2 CPU cores with native bf16 (118 at first)
CURVE_POINTS = 5  # validations per stage: the learning curves
# Slices scored per validation case (plans' training.val_slices; new plans: 16). Half the
# planner's: validation scores every task the stage trains, and at 16 it took a fifth of the run.
VAL_SLICES = 8
PLATEAU_DB = 0.1  # a last stage gaining less than this over its last validation interval has levelled off
FUSION_MARGIN_DB = 0.3  # what the task-specific fusion must gain over a plain mean to earn its place
TABLE1_HEADING = "## Table 1: by number of inputs (mean ± sd over tasks and cases)"


def voxel_mm(args: argparse.Namespace) -> int:
    """The phantom's voxel size: `--full` always generates it at its native 1 mm."""
    return 1 if args.full else args.downsample


def prepare_data(args: argparse.Namespace, work: Path) -> tuple[Path, Path, Path, Path]:
    raw = write_dataset(
        work / "raw", args.train + args.val, voxel_mm(args), args.seed, n_test=args.test,
        progress=True,
    )  # fmt: skip
    budget = "gpu" if args.full else "cpu"  # cpu: 96 x 96 patches of the slices, whole slices in inference
    store, plans = plan(raw, work / "preprocessed" / raw.name, workers=2, budget=budget)
    plans["configurations"]["2d"]["batch_size"] = args.batch
    plans["training"]["num_workers"] = args.workers
    plans["training"]["val_slices"] = VAL_SLICES
    if args.task_sampling:
        plans["training"]["task_sampling"] = args.task_sampling
    args.task_sampling = plans["training"]["task_sampling"]
    if not args.full:
        compact_plans(plans)  # the demo's network: one width scale for every model
    save_plans(plans, store / "plans.json")
    args.patch, args.window = report_configuration(plans)
    preprocess_dataset(RawDataset.load(raw), store, plans, workers=2)
    ids = list_preprocessed(store)
    write_json(store / SPLITS_FILE, [rotated_split(ids, args, fold) for fold in range(max(args.ensemble_folds, 1))])
    inputs, reference = work / "test" / "inputs", work / "test" / "reference"
    if args.all_subsets:
        make_all_subset_scenarios(raw, inputs, reference)
    else:
        make_nested_scenarios(raw, inputs, reference)
    return raw, store, inputs, reference


def report_configuration(plans: dict) -> tuple[list[int], list[int] | None]:
    """The 2D patch the methods train on and the window they predict in (None: whole slices)."""
    two_d = Plans(plans).configuration("2d")
    return two_d.patch_size, two_d.inference_window


def existing_data(args: argparse.Namespace, work: Path) -> tuple[Path, Path, Path]:
    """`--report-only` / `--resume`: the store and test scenarios an earlier run prepared."""
    planned = next((work / "preprocessed").glob("*/plans.json"), None)
    if planned is None:
        raise SystemExit(f"{work}: no preprocessed data of an earlier run (preprocessed/*/plans.json)")
    plans = load_plans(planned)
    args.patch, args.window = report_configuration(plans)
    args.task_sampling = Plans(plans).training.task_sampling  # as that run trained
    return planned.parent, work / "test" / "inputs", work / "test" / "reference"


def result_name(args: argparse.Namespace) -> str:
    """quality_<voxel>mm_<task sampling>[_x<budget>][_seed<k>][_<fusions>]: runs that differ in
    these keep their own files; a run of some methods (`--fusions`) never overwrites the full
    comparison."""
    name = f"quality_{voxel_mm(args)}mm_{args.task_sampling}" + (f"_x{args.budget:g}" if args.budget != 1 else "")
    name += f"_seed{args.seed}" if args.seed else ""
    fusions = args.fusions.split(",")
    return name if sorted(fusions) == sorted(FUSIONS) else f"{name}_{'+'.join(fusions)}"


def rotated_split(ids: list[str], args: argparse.Namespace, fold: int) -> dict[str, list[str]]:
    """Fold 0 trains on the first `--train` cases; fold k on the same number, the case list
    rotated by k validation blocks, so every fold has the same data and step budget."""
    shifted = ids[fold * args.val :] + ids[: fold * args.val]
    return {"train": sorted(shifted[: args.train]), "val": sorted(shifted[args.train :])}


def total_steps(args: argparse.Namespace) -> int:
    return max(2, round(args.steps * args.budget))


def train_fold(fusion: str, fold: int, args: argparse.Namespace, store: Path, work: Path) -> tuple[Path, float, list]:
    """(model folder, training seconds without validation, training log): the step budget
    split evenly between the stages, validated CURVE_POINTS times in each."""
    stages = len(build_model(load_plans(store / "plans.json"), fusion).stages)
    steps = total_steps(args) // stages
    result = train(
        TrainOptions(
            store=store,
            fusion=fusion,
            fold=fold,
            output=work / "results",
            device=args.device,
            precision=args.precision,
            steps=steps,
            val_every=max(1, steps // CURVE_POINTS),
            seed=args.seed,
        )
    )
    return result.model_dir, training_seconds(result.history), result.history


def training_seconds(history: list[dict]) -> float:
    """Seconds spent training, validation excluded, over all stages (the curves' last minute):
    the same measure whether the run is fresh or rebuilt from its log."""
    curves = stage_curves(history)
    return curves[-1][1][-1][1] * 60 if curves else 0.0


def run_fusion(fusion: str, args: argparse.Namespace, store: Path, inputs: Path, reference: Path, work: Path) -> dict:
    model_dir, trained_s, history = train_fold(fusion, 0, args, store, work)
    model = load_model_folder(model_dir, resolve_device(args.device), precision=args.precision)
    shutil.rmtree(work / "predictions" / fusion, ignore_errors=True)  # a stopped run's, from another model
    began = time.perf_counter()
    failed = predict_scenarios(model, inputs, work / "predictions" / fusion)
    predicted_s = time.perf_counter() - began
    rows, _ = evaluate(work / "predictions" / fusion, reference, work / "evaluation" / fusion, args.lpips_weights)
    return outcome(fusion, model, rows, history, trained_s, predicted_s, failed, work)


def predict_scenarios(model, inputs: Path, output: Path) -> dict[str, str]:
    """Predict every scenario; the failures. `inputs/<TARGET>/` folders (the nested design) are
    predicted for that target only; `--all-subsets` puts every scenario in `inputs/` itself."""
    folders = {p.name: p for p in sorted(inputs.iterdir()) if p.is_dir()} or {"all": inputs}
    failed: dict[str, str] = {}
    for target, folder in folders.items():
        failed.update(predict_folder(model, folder, output, targets=target).failed)
    return failed


def outcome(
    fusion: str, model, rows, history, train_s: float, predict_s: float | None, failed: dict, work: Path
) -> dict:
    weights = explain_weights(model, work / "explanations") if fusion == "tsf" else None
    return {
        "rows": rows,
        "train_s": train_s,
        "history": history,
        "predict_s": predict_s,
        "failed": failed,
        "weights_png": weights[1] if weights else None,
        "omega_spread": omega_spread(json.loads(weights[0].read_text())) if weights else None,
        "scale_weights": scale_task_weights(model.model, model.channel_names) if fusion == "tsf-ms" else None,
        "parameters": sum(p.numel() for p in model.model.parameters()),
    }


def omega_spread(task_weights: list[dict]) -> tuple[float, float]:
    """How far ω lies from a plain mean's 1/k over the tasks with several sources: (mean, max)
    of max_i |ω_i - 1/k| per task. Near 0, the fusion is a mean whatever it learnt elsewhere."""
    gaps = [
        max(abs(w - 1 / len(row["weights"])) for w in row["weights"].values())
        for row in task_weights
        if len(row["weights"]) > 1
    ]
    return (sum(gaps) / len(gaps), max(gaps)) if gaps else (0.0, 0.0)


def finished_outcome(fusion: str, args: argparse.Namespace, work: Path) -> dict | None:
    """`--report-only` / `--resume`: a method that a stopped run trained, predicted and evaluated, rebuilt
    from its work folder (train time without validation, from the training log; no predict time)."""
    metrics = work / "evaluation" / fusion / "metrics.csv"
    if not metrics.is_file():
        return None
    model_dir = work / "results" / f"{fusion}__plans__2d" / "fold_0"
    history = [json.loads(line) for line in (model_dir / "training_log.jsonl").read_text().splitlines()]
    train_s = training_seconds(history)
    model = load_model_folder(model_dir, resolve_device(args.device), precision=args.precision)
    with metrics.open() as handle:
        rows = [{key: number(value) for key, value in row.items()} for row in csv.DictReader(handle)]
    return outcome(fusion, model, rows, history, train_s, None, {}, work)


def number(text: str) -> float | int | str:
    """A metrics.csv cell as evaluate returned it: ints, floats (nan included) or text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def run_ensemble(
    args: argparse.Namespace, store: Path, inputs: Path, reference: Path, work: Path, fold_0_s: float
) -> dict:
    """tsf's folds 1..K-1 at fold 0's budget (fold 0 is `run_fusion`'s, trained in `fold_0_s`),
    then `predict` with the ensemble of all K; the train time counts all K folds."""
    extra_s = sum(train_fold("tsf", fold, args, store, work)[1] for fold in range(1, args.ensemble_folds))
    folds = list(range(args.ensemble_folds))
    device = resolve_device(args.device)
    ensemble = load_predictor(work / "results" / "tsf__plans__2d", device, precision=args.precision, folds=folds)
    predictions = work / "predictions" / "tsf_ensemble"
    began = time.perf_counter()
    failed = predict_scenarios(ensemble, inputs, predictions)
    predicted_s = time.perf_counter() - began
    rows, _ = evaluate(predictions, reference, work / "evaluation" / "tsf_ensemble", args.lpips_weights)
    return {
        "rows": rows,
        "train_s": fold_0_s + extra_s,
        "history": [],
        "predict_s": predicted_s,
        "failed": failed,
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


TSF_FAMILY = ("tsf", "tsf-ms")


def mean_2_3(outcome: dict) -> float:
    return (mean_of(outcome, "psnr", 2) + mean_of(outcome, "psnr", 3)) / 2


def matched_psnr(outcome: dict) -> tuple[list[float], int]:
    """Mean PSNR (box) for 1, 2 and 3 inputs over the (case, target) pairs synthesised with each
    of the three: the same targets in every column, so a hard target (T1Gd) missing only from
    one scenario does not decide whether more inputs help."""
    by_pair: dict[tuple[str, str], dict[int, float]] = {}
    for row in (r for r in outcome["rows"] if "case" in r):
        case = str(row["case"]).rsplit("_in", 1)[0]
        by_pair.setdefault((case, row["target"]), {})[int(row["n_inputs"])] = float(row["psnr"])
    complete = [v for v in by_pair.values() if {1, 2, 3} <= set(v)]
    means = [sum(v[n] for v in complete) / max(len(complete), 1) for n in (1, 2, 3)]
    return means, len(complete)


def rises_with_inputs(name: str, outcome: dict) -> str:
    psnrs = [mean_of(outcome, "psnr", n) for n in (1, 2, 3)]
    matched, pairs = matched_psnr(outcome)
    said = f"- {name}: {' -> '.join(f'{v:.2f}' for v in psnrs)} dB for 1 -> 2 -> 3 inputs (Table 1)"
    if not pairs:
        return said + ": " + ("rises." if psnrs[0] < psnrs[1] < psnrs[2] else "does **not** rise.")
    rising = matched[0] < matched[1] < matched[2]
    return (
        f"{said}; on the {pairs} (case, target) pairs synthesised with 1, 2 and 3 inputs "
        f"{' -> '.join(f'{v:.2f}' for v in matched)} dB: " + ("rises." if rising else "does **not** rise.")
    )


def verdicts(outcomes: dict[str, dict]) -> list[str]:
    """The questions the comparison is for, answered from Table 1's PSNR (box) either way."""
    singles = {k: v for k, v in outcomes.items() if v["history"]}  # not the ensemble
    winner = max(singles, key=lambda k: mean_2_3(singles[k]))
    lines = [f"Winner (mean PSNR over 2 and 3 inputs): **{winner}**.", "", "PSNR by number of inputs:"]
    lines += [
        rises_with_inputs(name, singles[name]) for name in dict.fromkeys([winner, *TSF_FAMILY]) if name in singles
    ]
    for ours in (f for f in TSF_FAMILY if f in singles):
        rivals = [f for f in singles if f not in TSF_FAMILY]
        if not rivals:
            continue
        lines += ["", f"{ours} against every baseline ({', '.join(rivals)}):"]
        for n_inputs in (2, 3):
            mine = mean_of(singles[ours], "psnr", n_inputs)
            best = max(rivals, key=lambda f: mean_of(singles[f], "psnr", n_inputs))
            margin = mine - mean_of(singles[best], "psnr", n_inputs)
            ahead = "ahead of every baseline" if margin > 0 else "**not** ahead of every baseline"
            lines.append(f"- {n_inputs} inputs: {mine:.2f} dB, {margin:+.2f} dB against the best, {best}: {ahead}.")
    if "tsf" in singles and "mean" in singles:
        lines += ["", f"Does the task-specific fusion earn its place (tsf - mean >= {FUSION_MARGIN_DB} dB)?"]
        for n_inputs in (2, 3):
            gain = mean_of(singles["tsf"], "psnr", n_inputs) - mean_of(singles["mean"], "psnr", n_inputs)
            lines.append(f"- {n_inputs} inputs: {gain:+.2f} dB: " + ("yes." if gain >= FUSION_MARGIN_DB else "**no**."))
        spread = singles["tsf"].get("omega_spread")
        if spread is not None:
            lines.append(
                f"- tsf's ω lies {spread[0]:.3f} on average (at most {spread[1]:.3f}) from a plain mean's 1/k over the "
                "tasks with 2 or 3 sources (max over the sources of |ω - 1/k|): the further from 0, the more the "
                "learnt weighting can differ from `mean`."
            )
    return lines


def stage_curves(history: list[dict]) -> list[tuple[str, list[tuple[int, float, float]]]]:
    """Per stage, in order: (stage, [(step over all stages, training minutes over all stages, val PSNR)])."""
    curves, step_offset, minute_offset = [], 0, 0.0
    for stage in dict.fromkeys(e["stage"] for e in history):
        points = [
            (step_offset + e["step"], minute_offset + e["train_s"] / 60, e["val_psnr"])
            for e in history
            if e["stage"] == stage and "val_psnr" in e and "train_s" in e
        ]
        if points:
            curves.append((stage, points))
            step_offset, minute_offset = points[-1][0], points[-1][1]
    return curves


def plateau(outcome: dict) -> str:
    """Whether the last stage's validation PSNR levelled off over its last interval."""
    curves = stage_curves(outcome["history"])
    if not curves or len(curves[-1][1]) < 2:
        return "too few validations to tell"
    stage, points = curves[-1]
    gain = points[-1][2] - points[-2][2]
    state = "levelled off" if gain < PLATEAU_DB else "**still rising**"
    return f"{stage}: {gain:+.2f} dB over its last {points[-1][0] - points[-2][0]} steps: {state}"


def plot_learning_curves(outcomes: dict[str, dict], path: Path) -> Path:
    """Validation PSNR of every method against steps and against training minutes (one colour
    per method; a two-stage method's first stage dashed: it validates one-to-one tasks)."""
    from tsfnet.plotting import plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, (name, outcome) in enumerate(o for o in outcomes.items() if o[1]["history"]):
        colour = plt.get_cmap("tab10")(index % 10)
        curves = stage_curves(outcome["history"])
        for position, (_stage, points) in enumerate(curves):
            steps, minutes, psnrs = zip(*points, strict=True)
            style = "--" if position < len(curves) - 1 else "-"
            label = name if position == len(curves) - 1 else None
            axes[0].plot(steps, psnrs, style, marker="o", markersize=3, color=colour, label=label)
            axes[1].plot(minutes, psnrs, style, marker="o", markersize=3, color=colour, label=label)
    axes[0].set(title="validation PSNR (brain) against steps", xlabel="training step (all stages)", ylabel="dB")
    axes[1].set(title="... against training time", xlabel="training minutes (validation excluded)", ylabel="dB")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_lesion_previews(fusions: list[str], work: Path, stem: Path) -> list[Path]:
    """Per test case (one withheld target each): the reference and each method's synthesis
    from 1, 2 and 3 inputs on the axial slice through the tumour's centre, a row per method,
    all on the reference's grey scale (as `tsfnet evaluate`'s previews): Table 1's lesion
    columns, to be looked at. Writes `<stem>_lesion_<target>.png`."""
    references = {case.case_id: case for case in find_input_cases(work / "test" / "reference", len(SEQUENCES))}
    written = []
    for labels in sorted((work / "test" / "labelsTs").glob("*_in3.nii.gz")):
        case = labels.name.removesuffix(".nii.gz")
        z = centre_slice(read_volume(labels)[0] > 0)
        found = [
            (target, work / "predictions" / fusion)
            for target in SEQUENCES
            for fusion in fusions
            if (work / "predictions" / fusion / f"{case}_{target}.nii.gz").is_file()
        ]
        if z is None or not found:
            continue
        target, first = found[0]
        meta_path = first / f"{case}_{target}_weights.json"
        ref, brain = normalised_reference(meta_path, read_json(meta_path), references[case], list(SEQUENCES))
        grey = reference_grey(ref, brain)
        panels = []
        for folder in (f for t, f in found if t == target):
            panels.append((f"{target} reference", mid_axial(ref, z)))
            for n_inputs in (1, 2, 3):
                synthesis = read_volume(folder / f"{case.removesuffix('_in3')}_in{n_inputs}_{target}.nii.gz")[0]
                panels.append((f"{folder.name}, {n_inputs} input{'s' * (n_inputs > 1)}", mid_axial(synthesis, z)))
        scale = dict.fromkeys(range(len(panels)), grey)
        path = stem.with_name(f"{stem.name}_lesion_{target}.png")
        written.append(save_montage(path, panels, value_range=scale, columns=4))
    return written


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
    parser.add_argument("--train", type=int, default=TRAIN_CASES)
    parser.add_argument("--val", type=int, default=2)
    parser.add_argument("--test", type=int, default=4)
    parser.add_argument("--downsample", type=int, default=1, help="phantom resolution divisor (1: its native 1 mm)")
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps per method, all stages together")
    parser.add_argument("--budget", type=float, default=1.0, help="multiplies --steps: 4 runs four times longer")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", *PRECISIONS],
        help="training and prediction (auto: bf16 where the device has it natively); runs pool only within one",
    )
    parser.add_argument("--workers", type=int, default=0, help="data-loading processes")
    parser.add_argument(
        "--task-sampling",
        default=None,
        choices=["per_batch", "per_sample"],
        help="tasks per batch or sample (default: the planner's)",
    )
    parser.add_argument("--fusions", default=",".join(FUSIONS))
    parser.add_argument("--full", action="store_true", help="whole slices and the planned network (GPU)")
    parser.add_argument(
        "--all-subsets",
        action="store_true",
        help="all 14 input subsets per test case (default: one withheld target per case, from 1, 2 and 3 inputs)",
    )
    parser.add_argument("--lpips-weights", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None, help="keep the data and models here")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the report from a stopped run's --work folder: the methods it finished (same other options)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="go on with a stopped run's --work folder: its data and finished methods are kept, the rest trained",
    )
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
    if (args.report_only or args.resume) and args.work is None:
        parser.error("--report-only and --resume read a stopped run's --work folder")
    work = args.work or Path(tempfile.mkdtemp(prefix="tsfnet_quality_"))
    began = time.perf_counter()
    reuse = args.report_only or args.resume
    store, inputs, reference = existing_data(args, work) if reuse else prepare_data(args, work)[1:]
    outcomes, missing = {}, []
    for fusion in args.fusions.split(","):
        done = finished_outcome(fusion, args, work) if reuse else None
        if done is None and not args.report_only:
            done = run_fusion(fusion, args, store, inputs, reference, work)
        if done is None:
            missing.append(fusion)
        else:
            outcomes[fusion] = done
    ensemble_name = f"tsf x{args.ensemble_folds} folds"
    if args.ensemble_folds and not args.report_only:
        outcomes[ensemble_name] = run_ensemble(args, store, inputs, reference, work, outcomes["tsf"]["train_s"])
    total_min = None if reuse else (time.perf_counter() - began) / 60
    print(write_result(result_name(args), report(args, outcomes, work, total_min, missing)).read_text())


def data_line(args: argparse.Namespace) -> str:
    """The run's protocol in one line: every option the numbers depend on, the seed included
    (quality_seeds.py pools files whose lines differ only in the seed)."""
    scenarios = (
        "all 14 input subsets per test case, every missing sequence synthesised"
        if args.all_subsets
        else "test case i withholds sequence i mod 4 and synthesises it from 1, 2, then 3 of the others, each "
        "scenario adding one (every row of Table 1 holds the same targets)"
    )
    return (
        f"Data: {args.train} train / {args.val} val / {args.test} test phantom cases at {voxel_mm(args)} mm, seed "
        f"{args.seed}. Every method: {total_steps(args)} steps in total (split evenly between stages), batch "
        f"{args.batch} of {' x '.join(map(str, args.patch))} {'slices' if args.full else 'patches'}, tasks drawn "
        f"{args.task_sampling.replace('_', ' ')}, validated {CURVE_POINTS} times per stage "
        f"on {VAL_SLICES} slices of each validation case; "
        f"{'whole slices' if args.window is None else 'Gaussian-blended windows of the patch'} in inference. "
        f"Test scenarios: {scenarios}. Metrics: "
        "`tsfnet evaluate` ('box' = brain bounding box on [-1, 1], data range 2; 'brain' = inside the brain "
        "mask; 'lesion' = inside the tumour labels)."
    )


def report(
    args: argparse.Namespace, outcomes: dict[str, dict], work: Path, total_min: float | None, missing: list[str] = ()
) -> list[str]:
    command = " ".join(["python benchmarks/quality.py", *sys.argv[1:]])
    result = result_name(args)
    lines = [
        "# quality: the paper's comparison on the phantom dataset",
        "",
        f"Command: `{command}`",
        f"Machine: {machine()}; device {args.device}; "
        f"precision {resolve_precision(resolve_device(args.device), args.precision)}; "
        + (
            f"{total_min:.0f} min in all."
            if total_min is not None
            else "a stopped run's work folder, its finished methods kept (train minutes and curves from their logs)."
        ),
        "",
        *(
            [f"**Not finished when the run was stopped, so not compared: {', '.join(missing)}.**", ""]
            if missing
            else []
        ),
        data_line(args),
        "",
        TABLE1_HEADING,
        "",
        *table1(outcomes),
        "",
        "## Verdicts",
        "",
        *verdicts(outcomes),
        "",
        "## Learning curves",
        "",
        f"`{plot_learning_curves(outcomes, result_path(result, '_curves.png')).name}`: validation PSNR (inside "
        "the brain, the validation cases) against steps and against training minutes. Did the budget reach a "
        f"plateau (the last stage gaining under {PLATEAU_DB} dB over its last validation interval)?",
        "",
        *[f"- {name}: {plateau(o)}." for name, o in outcomes.items() if o["history"]],
        "",
    ]
    previews = [] if args.all_subsets else plot_lesion_previews(list(outcomes), work, result_path(result, ""))
    if previews:
        lines += ["## Lesion previews", ""]
        lines += [
            "Each test case's withheld target on the slice through the tumour's centre: the reference, then every "
            "method from 1, 2 and 3 inputs (a row each; all on the reference's grey scale): "
            + ", ".join(f"`{p.name}`" for p in previews)
            + ".",
            "",
        ]
    if "tsf" in outcomes:
        lines += ["## Table 2: TSF, PSNR inside / outside the TSEM > 99th percentile region", ""]
        lines += [*tsem_table(outcomes["tsf"]), ""]
    if "tsf-ms" in outcomes:
        lines += ["## tsf-ms: PSNR inside / outside the TSEM > 99th percentile region", ""]
        lines += [*tsem_table(outcomes["tsf-ms"]), ""]
        lines += ["## tsf-ms: ω per scale (the finest first), all other sequences as sources", ""]
        lines += [*scale_weights_table(outcomes["tsf-ms"]["scale_weights"]), ""]
    if args.ensemble_folds:
        name = f"tsf x{args.ensemble_folds} folds"
        lines += [f"## TSF: {args.ensemble_folds}-fold ensemble against fold 0 (same budget per fold)", ""]
        lines += [
            f"Fold k trains on {args.train} cases and validates on {args.val}: the case list rotated by k "
            f"validation blocks (fold 0 is the split every method above used). `tsfnet predict` with the folder "
            "above the folds averages them in normalised space.",
            "",
        ]
        lines += [*ensemble_gain(outcomes["tsf"], outcomes[name], args.ensemble_folds), ""]
    lines += ["## Cost", "", "Train minutes exclude validation, as the curves' do.", ""]
    lines += ["| method | parameters | train min | predict s (all scenarios) | failed cases |"]
    lines += ["|---|---|---|---|---|"]
    for fusion, o in outcomes.items():
        lines.append(
            f"| {fusion} | {o['parameters']:,} | {o['train_s'] / 60:.1f} | "
            + (f"{o['predict_s']:.0f}" if o["predict_s"] is not None else "n/a")
            + f" | {len(o['failed'])} |"
        )
    weights_png = next((o["weights_png"] for o in outcomes.values() if o["weights_png"]), None)
    if weights_png is not None:
        chart = result_path(result, "_weights.png")
        shutil.copy(weights_png, chart)
        lines += ["", f"ω per target (TSF, the paper's Fig. 3): `{chart.name}`."]
    return lines


if __name__ == "__main__":
    main()
