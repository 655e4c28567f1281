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


def test_demo_generate_only_then_plan_from_inside_the_dataset(tmp_path):
    result = tsfnet(
        "demo",
        "--generate-only",
        "-o",
        str(tmp_path / "demo"),
        "--cases",
        "3",
        "--downsample",
        "6",
        "--seed",
        "4",
    )
    assert result.returncode == 0, result.stderr
    raw = tmp_path / "demo" / "raw" / "Dataset001_Phantom"
    assert len(list((raw / "imagesTr").glob("*_0000.nii.gz"))) == 3
    planned = tsfnet("plan", "--preprocess", "--workers", "1", cwd=raw)  # shortest form, inside the dataset
    assert planned.returncode == 0, planned.stderr
    store = tmp_path / "demo" / "raw" / "tsfnet_preprocessed" / "Dataset001_Phantom"
    assert (store / "plans.json").is_file() and len(list((store / "cases").glob("*.b2zip"))) == 3
    again = tsfnet("demo", "--generate-only", "-o", str(tmp_path / "demo"), "--cases", "3", "--downsample", "6")
    assert "already exists" in error_line(again)


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
