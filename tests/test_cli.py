"""The command line: every command present, one-line errors with exit code 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = ("plan", "preprocess", "train", "predict", "evaluate", "explain", "convert", "demo", "plugins")


def tsfnet(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "tsfnet", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def test_help_lists_every_command():
    result = tsfnet("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command):
    result = tsfnet(command, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout


def error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_bad_dataset_is_one_line(tmp_path):
    line = error_line(tsfnet("plan", "-d", str(tmp_path)))
    assert str(tmp_path / "dataset.json") in line and "missing dataset.json" in line


def test_debug_shows_the_traceback(tmp_path):
    result = tsfnet("--debug", "plan", "-d", str(tmp_path))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_unknown_fusion_lists_known(store, tmp_path):
    line = error_line(tsfnet("train", "-p", str(store), "--fusion", "nope", "-o", str(tmp_path), "--device", "cpu"))
    assert "unknown fusion 'nope'" in line and "tsf" in line


def test_demo_with_an_unknown_fusion_fails_in_one_line_before_writing(tmp_path):
    line = error_line(tsfnet("demo", "--fusion", "nope", "-o", str(tmp_path / "demo")))
    assert "unknown fusion 'nope'" in line and "tsf-ms" in line
    assert not (tmp_path / "demo").exists()


def test_plugins_lists_builtins_with_provider():
    result = tsfnet("plugins")
    assert result.returncode == 0
    for name in ("tsf", "wavg", "mean", "max", "synthesis", "segmentation", "percentile", "pretrain"):
        assert name in result.stdout
    assert "tsfnet" in result.stdout


def test_segmentation_evaluation_needs_a_segmentation_model(trained, tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "A_T2_weights.json").write_text(
        '{"case": "A", "target": "T2", "synthesis": "A_T2.nii.gz", "sources": ["T1"], '
        '"channel_names": ["T1", "T1Gd", "T2", "FLAIR"], "normalization": {"scheme": "percentile"}}'
    )
    line = error_line(
        tsfnet(
            "evaluate",
            "-p",
            str(tmp_path / "p"),
            "-r",
            str(tmp_path),
            "--segmentation",
            str(trained.model_dir),
            "--device",
            "cpu",
        )
    )
    assert "not a segmentation model" in line


def test_readme_short_form_inside_the_dataset_and_from_the_demo_folder(tmp_path):
    """generate -> `tsfnet plan` in the dataset -> `tsfnet train --fusion tsf` -> predict,
    with every default (workers, store and results folders) as the README shows them."""
    demo = tmp_path / "demo"
    generated = tsfnet("demo", "--generate-only", "-o", str(demo), "--cases", "3", "--downsample", "6", "--seed", "4")
    assert generated.returncode == 0, generated.stderr
    raw = demo / "Dataset001_Phantom"
    assert len(list((raw / "imagesTr").glob("*_0000.nii.gz"))) == 3 and (demo / "phantom.png").is_file()
    (raw / "imagesTs").mkdir()
    for channel in (0, 1, 3):  # a test case without T2
        os.link(raw / "imagesTr" / f"PH_0000_{channel:04d}.nii.gz", raw / "imagesTs" / f"NEW_{channel:04d}.nii.gz")

    planned = tsfnet("plan", cwd=raw)
    assert planned.returncode == 0, planned.stderr
    store = demo / "tsfnet_preprocessed" / "Dataset001_Phantom"
    assert (store / "plans.json").is_file() and len(list((store / "cases").glob("*.b2zip"))) == 3
    trained = tsfnet("train", "--fusion", "tsf", "--steps", "3", cwd=raw)
    assert trained.returncode == 0, trained.stderr
    model = demo / "tsfnet_results" / "Dataset001_Phantom" / "tsf__plans__2d" / "fold_0"
    assert (model / "checkpoint_best.pt").is_file()
    predicted = tsfnet("predict", "-i", "imagesTs", "-o", "../predictions", "-m", str(model), cwd=raw)
    assert predicted.returncode == 0, predicted.stderr
    assert (demo / "predictions" / "NEW_T2.nii.gz").is_file()

    from_demo = tsfnet("train", "--fusion", "tsf", "--fold", "1", "--steps", "2", cwd=demo)
    assert from_demo.returncode == 0, from_demo.stderr
    assert (model.parent / "fold_1" / "checkpoint_best.pt").is_file()
    again = tsfnet("demo", "--generate-only", "-o", str(demo), "--cases", "3", "--downsample", "6")
    assert "already exists" in error_line(again)


def test_train_inside_an_unplanned_dataset_says_what_to_run(tmp_path):
    generated = tsfnet("demo", "--generate-only", "-o", str(tmp_path), "--cases", "1", "--downsample", "6")
    assert generated.returncode == 0, generated.stderr
    line = error_line(tsfnet("train", "--fusion", "tsf", cwd=tmp_path / "Dataset001_Phantom"))
    assert "not planned yet: run tsfnet plan here" in line


def test_convert_brats2021_via_cli(tmp_path):
    import nibabel as nib
    import numpy as np

    case = tmp_path / "src" / "BraTS2021_00001"
    case.mkdir(parents=True)
    for suffix in ("t1", "t1ce", "t2"):
        nib.save(
            nib.Nifti1Image(np.ones((2, 2, 2), np.float32), np.eye(4)),
            str(case / f"{case.name}_{suffix}.nii.gz"),
        )
    result = tsfnet("convert", "brats2021", str(tmp_path / "src"), str(tmp_path / "dst"))
    assert result.returncode == 0, result.stderr
    assert "kept without FLAIR" in result.stderr
    assert len(list((tmp_path / "dst" / "imagesTr").iterdir())) == 3


# ---- the installed console script, as a new user meets it ----------------------------------

EXPLODING_PLANNER = """
def plan(fingerprint, **options):
    raise RuntimeError("the planner exploded")
"""


@pytest.fixture(scope="module")
def user_site(tmp_path_factory) -> Path:
    """A folder put first on PYTHONPATH: a `click` that cannot be imported (typer bundles its
    own click now, so tsfnet must not need it) and a third-party planner plugin, installed as
    an entry point, that fails with an unexpected exception."""
    site = tmp_path_factory.mktemp("site")
    (site / "click").mkdir()
    (site / "click" / "__init__.py").write_text("raise ImportError('click is not installed')\n")
    (site / "exploding_planner.py").write_text(EXPLODING_PLANNER)
    info = site / "exploding_planner-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: exploding-planner\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[tsfnet.planner]\nexploding = exploding_planner:plan\n")
    return site


def console_script(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("tsfnet")
    assert script.is_file(), "the tsfnet console script is not installed next to this Python"
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": path}
    return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def short_failure(result: subprocess.CompletedProcess, code: int) -> list[str]:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, result.stderr
    assert 1 <= len(lines) <= 2 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines


def test_these_runs_have_no_click_module(user_site):
    env = {**os.environ, "PYTHONPATH": str(user_site)}
    probe = subprocess.run([sys.executable, "-c", "import click"], capture_output=True, text=True, env=env)
    assert probe.returncode != 0 and "click is not installed" in probe.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("train", "--fusoin", "tsf"), "No such option: --fusoin (Possible options: --fusion)"),
        (("predict", "-i", "x"), "Missing option '-o' / '--output'"),
        ((), "Missing command; commands: demo, plan, preprocess, train, predict"),
        (("trian",), "No such command 'trian'"),
    ],
    ids=["unknown-option", "missing-option", "bare", "unknown-command"],
)
def test_command_line_mistakes_are_two_lines(user_site, args, expected):
    first, *rest = short_failure(console_script(user_site, *args), 2)
    assert expected in first
    assert rest and "--help" in rest[0]


def test_unexpected_exception_is_one_line_without_traceback(user_site, raw_dataset, tmp_path):
    result = console_script(user_site, "plan", "-d", str(raw_dataset), "-o", str(tmp_path), "--planner", "exploding")
    (line,) = short_failure(result, 1)
    assert "RuntimeError: the planner exploded (rerun with --debug for the traceback)" in line
    debug = console_script(user_site, "--debug", "plan", "-d", str(raw_dataset), "-o", str(tmp_path / "d"),
                           "--planner", "exploding")  # fmt: skip
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "the planner exploded" in debug.stderr
