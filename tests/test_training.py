"""The runner: both stages on the CPU, learning, resume after SIGKILL, DDP, checkpoints."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tsfnet.errors import InputError, TsfnetError
from tsfnet.training.checkpoint import load_checkpoint, save_checkpoint
from tsfnet.training.runner import TrainOptions, train
from tsfnet.training.splits import fold_cases, make_splits


def read_log(model_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (model_dir / "training_log.jsonl").read_text().splitlines()]


def test_model_folder_after_both_stages(trained):
    folder = trained.model_dir
    assert folder.parts[-2:] == ("tsf__plans__2d", "fold_0")
    for name in (
        "checkpoint_latest.pt",
        "checkpoint_best.pt",
        "checkpoint_pretrain.pt",
        "checkpoint_finetune.pt",
        "plans.json",
        "model.json",
        "progress.png",
        "training_log.jsonl",
    ):
        assert (folder / name).is_file(), name
    log = read_log(folder)
    assert {e["stage"] for e in log} == {"pretrain", "finetune"}
    assert any("val_psnr" in e and np.isfinite(e["val_psnr"]) for e in log if e["stage"] == "finetune")
    for stage in ("pretrain", "finetune"):  # training seconds without validation: learning curves against time
        clock = [e["train_s"] for e in log if e["stage"] == stage and "val_psnr" in e]
        assert clock and all(t > 0 for t in clock) and clock == sorted(clock)
    latest = load_checkpoint(folder / "checkpoint_latest.pt", "tsf")
    assert latest["stage"] == "finetune" and latest["step"] == 6 and latest["stage_done"]


def test_finetune_freezes_the_encoder(trained):
    pretrain = load_checkpoint(trained.model_dir / "checkpoint_pretrain.pt")["model"]
    finetune = load_checkpoint(trained.model_dir / "checkpoint_finetune.pt")["model"]
    encoder_keys = [k for k in pretrain if k.startswith("encoder.")]
    assert encoder_keys and all(torch.equal(pretrain[k], finetune[k]) for k in encoder_keys)
    head_keys = [k for k in pretrain if k.startswith("head.") and pretrain[k].is_floating_point()]
    assert any(not torch.equal(pretrain[k], finetune[k]) for k in head_keys)  # G keeps training


def one_case_store(store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / store.name
    (copy / "cases").mkdir(parents=True)
    shutil.copy(store / "plans.json", copy / "plans.json")
    for suffix in (".b2zip", ".json"):
        shutil.copy(store / "cases" / f"PH_0000{suffix}", copy / "cases" / f"PH_0000{suffix}")
    return copy


def test_loss_decreases_when_overfitting_one_case(store, tmp_path):
    single = one_case_store(store, tmp_path)
    result = train(
        TrainOptions(
            store=single,
            fold="all",
            stage="pretrain",
            steps=50,
            lr=2e-3,
            output=tmp_path,
            device="cpu",
            val_every=50,
            num_workers=0,
            progress=False,
        )
    )
    losses = [e["loss"] for e in result.history if "loss" in e]
    assert len(losses) == 5
    assert losses[-1] < 0.6 * losses[0]


def test_finetune_needs_stage_one(store, tmp_path):
    with pytest.raises(TsfnetError, match="stage 1 result missing"):
        train(
            TrainOptions(
                store=store,
                stage="finetune",
                steps=1,
                output=tmp_path,
                device="cpu",
                num_workers=0,
                progress=False,
            )
        )


def test_resume_without_checkpoint_is_a_clear_error(store, tmp_path):
    with pytest.raises(TsfnetError, match="nothing to resume"):
        train(TrainOptions(store=store, resume=True, steps=1, output=tmp_path, device="cpu", progress=False))


def test_sigkill_then_resume_continues_the_run(store, tmp_path):
    command = [
        sys.executable,
        "-m",
        "tsfnet",
        "train",
        "-p",
        str(store),
        "--stage",
        "pretrain",
        "--steps",
        "150",
        "--val-every",
        "10",
        "--workers",
        "0",
        "--device",
        "cpu",
        "-o",
        str(tmp_path),
    ]
    folder = tmp_path / "tsf__plans__2d" / "fold_0"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    killed_after = None
    while time.time() < deadline and process.poll() is None:
        if (folder / "checkpoint_latest.pt").is_file():  # renamed into place whole: safe to read
            step = load_checkpoint(folder / "checkpoint_latest.pt")["step"]
            if step >= 20:
                process.send_signal(signal.SIGKILL)
                killed_after = step
                break
        time.sleep(0.05)
    process.wait()
    assert killed_after is not None, "training finished or never checkpointed before it could be killed"
    checkpoint = load_checkpoint(folder / "checkpoint_latest.pt", "tsf")
    resumed_from = checkpoint["step"]
    assert 20 <= resumed_from < 150
    before = [e for e in read_log(folder) if "loss" in e]
    result = train(
        TrainOptions(
            store=store,
            stage="pretrain",
            steps=150,
            val_every=10,
            num_workers=0,
            device="cpu",
            output=tmp_path,
            resume=True,
            progress=False,
        )
    )
    log = [e for e in result.history if "loss" in e]
    steps = [e["step"] for e in log]
    assert steps == sorted(set(steps)) and steps[-1] == 150  # no step logged twice, run completed
    assert load_checkpoint(folder / "checkpoint_latest.pt")["step"] == 150
    first_new = next(e for e in log if e["step"] > resumed_from)
    initial = before[0]["loss"]
    assert first_new["loss"] < initial  # continues from the trained weights, not from scratch


def test_resume_after_the_weighting_rate_changed_is_a_clear_error(store, tmp_path):
    """A weighting_lr added or removed mid-stage changes the optimizer's groups: said, not a traceback."""
    from tsfnet.planning.plans import load_plans, save_plans

    copy = one_case_store(store, tmp_path)
    plans = load_plans(copy / "plans.json")
    plans["training"]["finetune"]["weighting_lr"] = 0.05
    save_plans(plans, copy / "plans.json")
    options = TrainOptions(store=copy, output=tmp_path / "out", device="cpu", steps=2, num_workers=0, progress=False)
    result = train(options)
    latest = result.model_dir / "checkpoint_latest.pt"
    state = load_checkpoint(latest)
    assert state["stage"] == "finetune" and len(state["optimizers"]["model"]["param_groups"]) == 2
    save_checkpoint(latest, {**state, "step": 1, "stage_done": False})  # as if stopped after step 1
    del plans["training"]["finetune"]["weighting_lr"]
    save_plans(plans, copy / "plans.json")
    with pytest.raises(TsfnetError, match=r"2 rate group.*now give 1: training\.finetune\.weighting_lr changed"):
        train(TrainOptions(**{**options.__dict__, "resume": True}))


def test_checkpoint_from_another_fusion_is_refused(trained, tmp_path):
    with pytest.raises(InputError, match="trained with fusion 'tsf', not 'mean'"):
        load_checkpoint(trained.model_dir / "checkpoint_latest.pt", fusion="mean")


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {Path(os.environ['EXPLOIT_MARKER'])}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_checkpoint_is_refused_without_running_code(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EXPLOIT_MARKER", str(marker))
    path = tmp_path / "checkpoint_latest.pt"
    path.write_bytes(pickle.dumps({"format": 1, "model": Exploit()}))
    with pytest.raises(InputError, match="not a loadable tsfnet checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_latest.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "step": 1})

    def broken_save(obj, target):
        Path(target).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"model": {"w": torch.zeros(2)}, "step": 2})
    assert load_checkpoint(path)["step"] == 1  # the old checkpoint survives whole
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_latest.pt"]  # no temp file left


def test_splits_are_seeded_five_folds(tmp_path):
    ids = [f"C{i:02d}" for i in range(12)]
    splits = make_splits(ids)
    assert len(splits) == 5 and splits == make_splits(ids)
    assert sorted(c for s in splits for c in s["val"]) == ids
    train_ids, val_ids = fold_cases(tmp_path, ids, 2)
    assert not set(train_ids) & set(val_ids)
    assert json.loads((tmp_path / "splits.json").read_text()) == splits
    assert fold_cases(tmp_path, ids, "all") == (ids, ids)
    with pytest.raises(TsfnetError, match="fold 7 does not exist"):
        fold_cases(tmp_path, ids, 7)


def _ddp_worker(rank: int, port: int, store: str, output: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank))
    torch.set_num_threads(1)
    result = train(
        TrainOptions(
            store=Path(store),
            stage="pretrain",
            steps=3,
            val_every=3,
            num_workers=0,
            device="cpu",
            output=Path(output),
            progress=False,
        )
    )
    torch.save(result.model.state_dict(), Path(output) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_ddp_two_cpu_processes_hold_identical_weights(store, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(port, str(store), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    initial = torch.load(tmp_path / "tsf__plans__2d" / "fold_0" / "checkpoint_latest.pt", weights_only=True)
    assert initial["step"] == 3
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    encoder = [k for k in rank0 if k.startswith("encoder.") and k.endswith("weight")]
    assert encoder
