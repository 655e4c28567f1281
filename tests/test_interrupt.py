"""Ctrl-C (SIGINT to the whole process group, as a terminal sends it) and a scheduler's
SIGTERM during `tsfnet train`: the step finishes, checkpoint_latest.pt is written, the
message says how to resume, the exit code is 128 + the signal, and --resume continues."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from tsfnet.cli import app
from tsfnet.planning.plans import load_plans, save_plans
from tsfnet.training.checkpoint import load_checkpoint
from tsfnet.training.runner import TrainOptions, resume_command

STEPS = 30


def train_command(store: Path, output: Path, *extra: str) -> list[str]:
    args = ["train", "-p", str(store), "--stage", "pretrain", "--steps", str(STEPS), "--device", "cpu"]
    return [str(Path(sys.executable).with_name("tsfnet")), *args, "-o", str(output), *extra]


@pytest.fixture
def default_loader_store(store, tmp_path) -> Path:
    """The tiny store with the planner's default loader: background workers and augmentation."""
    copy = Path(shutil.copytree(store, tmp_path / "store", ignore=shutil.ignore_patterns("unpacked")))
    plans = load_plans(copy / "plans.json")
    plans["training"]["num_workers"], plans["training"]["augment"] = 2, True
    save_plans(plans, copy / "plans.json")
    return copy


@pytest.mark.parametrize(
    ("signum", "whole_group", "code"),
    [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)],
    ids=["ctrl-c", "sigterm"],
)
def test_signal_saves_a_checkpoint_and_resume_continues(default_loader_store, tmp_path, signum, whole_group, code):
    folder = tmp_path / "tsf__plans__2d" / "fold_0"
    command = train_command(default_loader_store, tmp_path)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env={**os.environ, "COLUMNS": "400"})  # fmt: skip
    deadline = time.time() + 300
    while process.poll() is None and not (folder / "training_log.jsonl").is_file() and time.time() < deadline:
        time.sleep(0.05)  # the log's first line is written after 10 steps: training is under way
    assert process.poll() is None, "training ended before it could be interrupted"
    if whole_group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr, stderr
    saved = load_checkpoint(folder / "checkpoint_latest.pt", "tsf")
    assert saved["stage"] == "pretrain" and 10 <= saved["step"] < STEPS and not saved["stage_done"]
    message = " ".join(stderr.split())
    assert f"stopped after pretrain step {saved['step']}/{STEPS}" in message
    resume = message.split("resume with: ", 1)[1].split()
    assert resume[:2] == ["tsfnet", "train"] and resume[-1] == "--resume"
    assert "--stage pretrain" in " ".join(resume) and f"--steps {STEPS}" in " ".join(resume)

    resumed = subprocess.run(train_command(default_loader_store, tmp_path, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    final = load_checkpoint(folder / "checkpoint_latest.pt", "tsf")
    assert final["step"] == STEPS and final["stage_done"]
    logged = [line for line in (folder / "training_log.jsonl").read_text().splitlines() if '"loss"' in line]
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in logged]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS  # continued from the checkpoint, nothing twice


def test_the_resume_command_carries_every_option_the_run_was_given(tmp_path, monkeypatch):
    """Parsed back by the CLI, the printed command gives the interrupted run's options, so a
    resumed run keeps its perceptual weights, device, precision and loader."""
    (tmp_path / "plans_alt.json").write_text("{}")
    given = TrainOptions(
        store=tmp_path, fusion="wavg", plans="alt", head="segmentation", config="3d", fold=2, stage="finetune",
        steps=7, batch_size=3, lr=5e-4, output=tmp_path / "out dir", device="cpu",
        perceptual_weights=tmp_path / "vgg 19.pth", num_workers=0, val_every=5, compile=True, precision="fp32",
    )  # fmt: skip
    parsed = []
    monkeypatch.setattr(
        "tsfnet.training.runner.train", lambda options: parsed.append(options) or SimpleNamespace(model_dir=tmp_path)
    )
    command = shlex.split(resume_command(given))
    assert command[:2] == ["tsfnet", "train"]
    result = CliRunner().invoke(app, command[1:])
    assert result.exit_code == 0, result.output
    assert parsed == [replace(given, resume=True)]
    assert resume_command(TrainOptions(store=tmp_path)) == f"tsfnet train -p {tmp_path} --fusion tsf --resume"
