"""The `tsfnet` command line (see the README's command table).

Errors a user can fix are printed as one line on stderr with exit code 1;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from tsfnet.errors import InputError, TrainingInterrupted, TsfnetError

if TYPE_CHECKING:
    from tsfnet.planning.plans import Plans

app = typer.Typer(
    name="tsfnet",
    help="Synthesise missing MRI sequences from any available subset, with explanations (TSF-Seq2Seq).",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)
convert_app = typer.Typer(help="Convert challenge layouts to the raw dataset format (SRC is never modified).")
app.add_typer(convert_app, name="convert")
console = Console(stderr=True)
STATE = {"debug": False}


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    STATE["debug"] = debug
    logging.basicConfig(  # other libraries' info chatter stays hidden; tsfnet's own is shown
        level=logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_time=False, show_path=False)],
        force=True,
    )
    logging.getLogger("tsfnet").setLevel(logging.WARNING if quiet else logging.INFO)


def info(message: str) -> None:
    logging.getLogger("tsfnet").info(message)


def find_store(explicit: Path | None, plans: str | None = None) -> Path:
    """-p, or the one preprocessed dataset that belongs to the cwd: the store `tsfnet plan`
    wrote for the raw dataset we stand in, else the one store found up to two folders down
    (a folder of datasets, a demo folder). The store must hold the plans named `plans`."""
    from tsfnet.planning.plans import plans_path

    file = plans_path(Path("."), plans).name
    if explicit is not None:
        if not (explicit / file).is_file():
            raise InputError(explicit, f"no {file} (run tsfnet plan first)")
        return explicit
    from tsfnet.planning.api import FINGERPRINT_FILE, default_store

    cwd = Path.cwd()
    if (cwd / "dataset.json").is_file():
        store = default_store(cwd)
        if (store / file).is_file():
            return store
        raise InputError(cwd, f"not planned yet: run tsfnet plan here (it writes {store / file})")
    candidates = sorted(
        {
            p.parent
            for pattern in (file, f"*/{file}", f"*/*/{file}")
            for p in cwd.glob(pattern)
            if (p.parent / FINGERPRINT_FILE).is_file()  # a store, not a model folder's copy of its plans
        }
    )
    if len(candidates) != 1:
        found = ", ".join(str(c) for c in candidates) or "none"
        raise TsfnetError(f"pass -p PREPROCESSED_DIR (preprocessed datasets found here: {found})")
    return candidates[0]


# ---- data ----------------------------------------------------------------------------------


@app.command()
def demo(
    output: Annotated[Path, typer.Option("-o", "--output", help="Where the demo writes everything.")] = Path(
        "tsfnet_demo"
    ),
    generate_only: Annotated[bool, typer.Option("--generate-only", help="Only write the phantom dataset.")] = False,
    cases: Annotated[int, typer.Option("--cases", help="Number of phantom cases (4 of them for testing).")] = 13,
    downsample: Annotated[int, typer.Option("--downsample", help="Integer downsampling of the 1 mm template.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; a seed fixes every case.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cuda, cpu or mps.")] = "auto",
    steps: Annotated[
        int | None, typer.Option("--steps", help="Training steps of each stage (default: 800 + 200).")
    ] = None,
    missing_rate: Annotated[float, typer.Option("--missing-rate", help="Chance a case lacks a sequence.")] = 0.0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier demo's outputs.")] = False,
    fusion: Annotated[str, typer.Option("--fusion", help="Fusion plugin to train (see tsfnet plugins).")] = "tsf",
) -> None:
    """Generate a phantom dataset, then plan -> train -> predict -> evaluate on it."""
    from tsfnet.demo import run_demo

    run_demo(output, generate_only, cases, downsample, seed, device, steps, missing_rate, overwrite, fusion)


@convert_app.command("brats2021")
def convert_brats2021(src: Path, dst: Path) -> None:
    """BraTS 2021 folders (BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz) -> raw dataset."""
    _convert("brats2021", src, dst)


@convert_app.command("brasyn")
def convert_brasyn(src: Path, dst: Path) -> None:
    """BraSyn folders (BraTS-GLI-XXXXX-XXX-{t1n,t1c,t2w,t2f,seg}.nii.gz) -> raw dataset."""
    _convert("brasyn", src, dst)


def _convert(layout: str, src: Path, dst: Path) -> None:
    from tsfnet.data.converters import convert

    report = convert(layout, src, dst)
    info(f"converted {report.converted} cases into {dst}")
    for case_id, missing in sorted(report.incomplete.items()):
        logging.getLogger("tsfnet").warning("%s: kept without %s", case_id, ", ".join(missing))


# ---- planning --------------------------------------------------------------------------------


@app.command()
def plan(
    dataset: Annotated[Path, typer.Option("-d", "--dataset", help="Raw dataset folder (with dataset.json).")] = Path(
        "."
    ),
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Preprocessed folder (default: ../tsfnet_preprocessed/<dataset>)."),
    ] = None,
    preprocess: Annotated[
        bool,
        typer.Option("--preprocess/--no-preprocess", help="Also preprocess every case, ready for tsfnet train."),
    ] = True,
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help="Preset name (e.g. brats2021_paper) or JSON path, applied on top of the derived plans "
            "and written beside them as plans_<preset>.json (train it with --plans <preset>).",
        ),
    ] = None,
    gpu_memory_gb: Annotated[float, typer.Option("--gpu-memory-gb", help="Memory budget for batch/patch size.")] = 8.0,
    budget: Annotated[
        str,
        typer.Option(
            "--budget",
            help="gpu (whole slices, the paper's network), cpu (same voxel size; 2D patches, a narrower network, "
            "fewer steps) or auto (cpu when there is no CUDA GPU).",
        ),
    ] = "auto",
    planner: Annotated[str, typer.Option("--planner", help="Registered planner plugin.")] = "default",
    workers: Annotated[int | None, typer.Option("--workers", help="Processes (default: cores, max 8).")] = None,
) -> None:
    """Fingerprint a raw dataset and write dataset_fingerprint.json and plans.json (and
    plans_<preset>.json with --preset)."""
    from tsfnet.planning.api import plan as run_plan
    from tsfnet.planning.api import plans_name
    from tsfnet.planning.plans import plans_path, read_plans

    store, written = run_plan(dataset, output, preset, gpu_memory_gb, planner, workers, budget=budget)
    plans = read_plans(store, plans_name(written))
    two_d = plans.configuration("2d")
    info(
        f"plans for a {plans.raw.get('budget', 'gpu').upper()} written to {plans_path(store, plans.name)} "
        f"(crop {plans.crop_size}, 2d patch {two_d.patch_size} x {two_d.batch_size})"
    )
    if preprocess:
        _preprocess(dataset, store, plans, False, workers)


@app.command("preprocess")
def preprocess_command(
    dataset: Annotated[Path, typer.Option("-d", "--dataset", help="Raw dataset folder.")] = Path("."),
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Preprocessed folder holding plans.json.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo cases that are up to date.")] = False,
    workers: Annotated[int | None, typer.Option("--workers", help="Processes.")] = None,
    plans_name: Annotated[
        str, typer.Option("--plans", help="Plans to preprocess with: plans (plans.json) or NAME (plans_NAME.json).")
    ] = "plans",
) -> None:
    """Crop, resample and normalise every case with the plans (up-to-date cases are skipped)."""
    from tsfnet.planning.api import default_store
    from tsfnet.planning.plans import plans_path, read_plans

    store = output or default_store(dataset)
    if not plans_path(store, plans_name).is_file():
        raise TsfnetError(f"{plans_path(store, plans_name)}: not found (run tsfnet plan first)")
    _preprocess(dataset, store, read_plans(store, plans_name), overwrite, workers)


def _preprocess(dataset: Path, store: Path, plans: Plans, overwrite: bool, workers: int | None) -> None:
    from tsfnet.data.dataset import RawDataset
    from tsfnet.preprocessing.pipeline import cases_folder, preprocess_dataset

    counts = preprocess_dataset(RawDataset.load(dataset), store, plans, overwrite, workers)
    folder = store / cases_folder(store, plans)
    info(f"preprocessed {counts['done']} cases ({counts['skipped']} up to date) into {folder}")


# ---- training ------------------------------------------------------------------------------


@app.command()
def train(
    preprocessed: Annotated[Path | None, typer.Option("-p", "--preprocessed", help="Preprocessed folder.")] = None,
    fusion: Annotated[str, typer.Option("--fusion", help="Fusion plugin (see tsfnet plugins).")] = "tsf",
    plans_name: Annotated[
        str, typer.Option("--plans", help="plans (plans.json) or NAME (plans_NAME.json, e.g. a preset).")
    ] = "plans",
    head: Annotated[str, typer.Option("--head", help="synthesis or segmentation.")] = "synthesis",
    config: Annotated[str, typer.Option("--config", help="2d (slices) or 3d (patches).")] = "2d",
    fold: Annotated[
        str, typer.Option("--fold", help="0-4, 'all' to train on every case, or 'all5' for folds 0-4 in turn.")
    ] = "0",
    stage: Annotated[
        str,
        typer.Option("--stage", help="all, or one stage: pretrain/finetune (tsf...), segment, or a baseline's own."),
    ] = "all",
    steps: Annotated[int | None, typer.Option("--steps", help="Steps per stage (default: plans).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Default: plans.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (default: plans).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Results folder.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cuda, cpu or mps.")] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue from checkpoint_latest.pt.")] = False,
    perceptual_weights: Annotated[
        Path | None,
        typer.Option("--perceptual-weights", help="Local VGG19 weights (torchvision vgg19-dcbb9e9d.pth)."),
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Data-loading processes (0: in-process).")] = None,
    val_every: Annotated[int | None, typer.Option("--val-every", help="Validate and checkpoint every N steps.")] = None,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the network.")] = False,
    precision: Annotated[
        str,
        typer.Option(
            "--precision", help="auto (bf16 autocast where the GPU/CPU has it natively, else fp32), bf16 or fp32."
        ),
    ] = "auto",
) -> None:
    """Train a fusion model: stage 1 (pretrain E, G) then stage 2 (finetune fusion + G, E frozen);
    baselines (mmgan, hinet, pix2pix, seq2seq-avg, seq2seq-early) train through their own stages."""
    from tsfnet.training.cross_validation import ALL_FOLDS, train_folds
    from tsfnet.training.runner import TrainOptions
    from tsfnet.training.runner import train as run_train

    fold_value: int | str = fold if fold in ("all", ALL_FOLDS) else _int_option("--fold", fold)
    options = TrainOptions(
        store=find_store(preprocessed, plans_name),
        fusion=fusion,
        plans=plans_name,
        head=head,
        config=config,
        fold=fold_value,
        stage=stage,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        output=output,
        device=device,
        resume=resume,
        perceptual_weights=perceptual_weights,
        num_workers=workers,
        val_every=val_every,
        compile=compile_model,
        precision=precision,
    )
    for result in train_folds(options) if fold == ALL_FOLDS else [run_train(options)]:
        info(f"model folder: {result.model_dir}")


def _int_option(flag: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise TsfnetError(f"{flag} must be an integer or 'all', got '{value}'") from None


# ---- inference -----------------------------------------------------------------------------


@app.command()
def predict(
    input_dir: Annotated[
        Path,
        typer.Option("-i", "--input", help="Raw files (CASE_0000.nii.gz ...) or BraTS/BraSyn case folders."),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder.")],
    model: Annotated[
        Path, typer.Option("-m", "--model", help="A fold_K folder, or the folder above: its finished folds ensembled.")
    ],
    targets: Annotated[
        str, typer.Option("--targets", help="'all' (every missing one) or names, e.g. T2,FLAIR.")
    ] = "all",
    device: Annotated[str, typer.Option("--device", help="auto, cuda, cpu or mps.")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    preview: Annotated[bool, typer.Option("--preview", help="Also write a PNG per case and target.")] = False,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Slices per forward pass (default: 2 on the CPU, 16 on a GPU).")
    ] = None,
    precision: Annotated[
        str,
        typer.Option("--precision", help="auto (bf16 where the GPU/CPU has it natively, else fp32), bf16 or fp32."),
    ] = "auto",
    intensity: Annotated[str, typer.Option("--intensity", help="normalized ([-1, 1]) or reference.")] = "normalized",
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="best or latest.")] = "best",
    folds: Annotated[
        str | None, typer.Option("--folds", help="With the folder above the folds: which, e.g. 0,1,2 (default: all).")
    ] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Also predict left-right mirrored inputs and average.")] = False,
) -> None:
    """Synthesise every missing (or requested) sequence; write NIfTI, TSEM and weights."""
    from tsfnet.devices import resolve_device
    from tsfnet.inference.ensemble import load_predictor, parse_folds
    from tsfnet.inference.predictor import predict_folder

    trained = load_predictor(model, resolve_device(device), checkpoint, precision, batch_size, parse_folds(folds), tta)
    info(f"predicting on {trained.device} in {trained.precision}, {trained.batch_size} slices per pass")
    report = predict_folder(trained, input_dir, output, targets, overwrite, preview, intensity)
    info(f"wrote {len(report.written)} syntheses to {output}; {len(report.skipped)} skipped")
    for line in report.skipped:
        info(f"skipped {line}")
    if report.failed:
        raise TsfnetError(f"{len(report.failed)} case(s) failed: " + "; ".join(report.failed.values()))


@app.command()
def evaluate(
    predictions: Annotated[Path, typer.Option("-p", "--predictions", help="Folder written by tsfnet predict.")],
    reference: Annotated[Path, typer.Option("-r", "--reference", help="Folder with the real sequences.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Report folder (default: PRED/evaluation).")
    ] = None,
    lpips_weights: Annotated[
        Path | None,
        typer.Option("--lpips-weights", help="Local AlexNet weights (torchvision alexnet-owt-7be5be79.pth) for LPIPS."),
    ] = None,
    segmentation: Annotated[
        Path | None,
        typer.Option(
            "--segmentation",
            help="Segmentation model folder (trained with --head segmentation): "
            "Dice WT/TC/ET on completed vs real inputs.",
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            help="Folder of label files (CASE.nii.gz) for the lesion-region scores and --segmentation "
            "(default: beside the references, or the dataset's labelsTs/labelsTr).",
        ),
    ] = None,
    previews: Annotated[
        bool,
        typer.Option(
            "--previews",
            help="Also write OUTPUT/previews/CASE_TARGET.png: reference, synthesis and difference on the slice "
            "through the lesion (with labels) or the brain's centre.",
        ),
    ] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cuda, cpu or mps.")] = "auto",
) -> None:
    """PSNR / SSIM / LPIPS per case, target and number of inputs; the paper's tables."""
    from tsfnet.evaluation.evaluate import evaluate as run_evaluate

    seg_model = None
    if segmentation is not None:
        from tsfnet.devices import resolve_device
        from tsfnet.inference.model_folder import load_model_folder

        seg_model = load_model_folder(segmentation, resolve_device(device))
    rows, report_dir = run_evaluate(
        predictions, reference, output, lpips_weights, True, seg_model, labels, previews=previews
    )
    info(f"evaluated {len(rows)} predictions; report in {report_dir / 'summary.md'}")


@app.command()
def explain(
    model: Annotated[Path, typer.Option("-m", "--model", help="A fold_K folder, or the folder above (mean ω).")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Default: MODEL/explanations.")] = None,
    input_dir: Annotated[Path | None, typer.Option("-i", "--input", help="Cases for TSEM montages.")] = None,
    cases: Annotated[str | None, typer.Option("--cases", help="Comma-separated case ids (default: all).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cuda, cpu or mps.")] = "auto",
) -> None:
    """ω for every source/target combination (bar chart + JSON); TSEM montages with -i."""
    from tsfnet.devices import resolve_device
    from tsfnet.inference.ensemble import load_predictor
    from tsfnet.inference.explain import explain_weights, tsem_montages

    trained = load_predictor(model, resolve_device(device))
    output = output or model / "explanations"
    json_path, png_path = explain_weights(trained, output)
    info(f"task weights: {json_path}, {png_path}")
    if input_dir is not None:
        chosen = [c.strip() for c in cases.split(",")] if cases else None
        for path in tsem_montages(trained, input_dir, output, chosen):
            info(f"TSEM montage: {path}")


@app.command()
def plugins() -> None:
    """List every registered plugin with its kind and the package that provides it."""
    from tsfnet.registry import registry

    table = Table("kind", "name", "provided by")
    for plugin in registry.plugins():
        table.add_row(plugin.kind, plugin.name, plugin.provider)
    Console().print(table)


def main(argv: list[str] | None = None) -> None:
    """The console script: every failure ends in at most two lines on stderr, never a traceback
    (unless --debug). Usage mistakes exit 2, errors 1, interrupted training 130 / 143."""
    try:
        app(args=argv, prog_name="tsfnet", standalone_mode=False)
    except TsfnetError as exc:
        if STATE["debug"]:
            raise
        if isinstance(exc, TrainingInterrupted):  # asked for, so no "error:"
            console.print(str(exc), highlight=False, soft_wrap=True, markup=False)
        else:
            _print_error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted", highlight=False)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:
        code = _command_line_exit(exc)
        if code is not None:
            sys.exit(code)
        if STATE["debug"]:
            raise
        _print_error(f"{type(exc).__name__}: {_first_line(exc)} (rerun with --debug for the traceback)")
        sys.exit(1)


def _print_error(message: str) -> None:
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


# typer bundles its own click since 0.23 (typer._click) and older releases use click itself:
# the click exception classes are found through the one typer re-exports in every version.
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _command_line_exit(exc: Exception) -> int | None:
    """The exit code for click's own outcomes (usage errors, --help's exit, abort), after
    printing them in two lines at most; None for anything else."""
    if isinstance(exc, typer.Exit) or type(exc).__name__ == "Exit":
        return int(getattr(exc, "exit_code", 0))
    if isinstance(exc, typer.Abort) or type(exc).__name__ == "Abort":
        console.print("aborted", highlight=False)
        return 1
    if not isinstance(exc, _CLICK_EXCEPTION):
        return None
    message = exc.format_message().strip()
    if isinstance(exc, _USAGE_ERROR):
        context = getattr(exc, "ctx", None)
        path = context.command_path if context is not None else "tsfnet"
        group = getattr(context, "command", None)
        if hasattr(group, "list_commands") and "Did you mean" not in message:  # name the real commands
            message = f"{message.rstrip('.') or 'Missing command'}; commands: {', '.join(group.list_commands(context))}"
        _print_error(message)
        console.print(f"'{path} --help' shows the options", highlight=False, soft_wrap=True)
    else:
        _print_error(message)
    return int(getattr(exc, "exit_code", 2))
