"""Bad inputs fail clearly and interrupted work loses nothing (issue: reliability).

The bad-input corpus is generated here: each entry damages one copy of a small valid
raw dataset, and every command that reads it must answer with exit code 1 and one
line on stderr naming the file and the problem.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsfnet.cli import main
from tsfnet.data.dataset import RawDataset
from tsfnet.errors import InputError
from tsfnet.planning.plans import load_plans

SHAPE = (12, 12, 12)


def volume(seed: int = 0, shape=SHAPE) -> np.ndarray:
    data = np.zeros(shape, np.float32)
    data[2:-2, 2:-2, 2:-2] = np.random.default_rng(seed).uniform(10, 100, [s - 4 for s in shape])
    return data


def save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def make_raw(root: Path) -> Path:
    """Two complete 4-channel cases, A and B."""
    (root / "imagesTr").mkdir(parents=True)
    meta = {"channel_names": {"0": "T1", "1": "T1Gd", "2": "T2", "3": "FLAIR"}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    for c, case in enumerate("AB"):
        for channel in range(4):
            save(root / "imagesTr" / f"{case}_{channel:04d}.nii.gz", volume(10 * c + channel))
    return root


def cli(capsys, *argv: str) -> tuple[int, str]:
    """Run the CLI in-process; (exit code, stderr)."""
    capsys.readouterr()
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def one_error_line(code: int, err: str) -> str:
    """Exit code 1 and one `error:` line, the last thing printed (warnings may precede it)."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 1, err
    assert errors == lines[-1:] and "Traceback" not in err, err
    return errors[0]


B1 = "imagesTr/B_0001.nii.gz"
CORPUS = [
    ("truncated", B1, lambda p: p.write_bytes(gzip.compress(b"\x5c\x01" * 400)[:60]), "cannot read"),
    ("zero-byte", B1, lambda p: p.write_bytes(b""), "empty"),
    ("4d", B1, lambda p: save(p, np.ones((*SHAPE, 2), np.float32)), "expected a 3D volume"),
    ("nan", B1, lambda p: save(p, np.where(volume() > 50, np.nan, volume())), "NaN/inf"),
    ("inf", B1, lambda p: save(p, np.where(volume() > 50, np.inf, volume())), "NaN/inf"),
    ("all-zero", B1, lambda p: save(p, np.zeros(SHAPE, np.float32)), "all zeros"),
    ("shape", B1, lambda p: save(p, volume(shape=(12, 12, 10))), "shape"),
    ("affine", B1, lambda p: save(p, volume(), np.diag([2.0, 1, 1, 1])), "affine"),
    ("unknown-channel", "imagesTr/B_0007.nii.gz", lambda p: save(p, volume()), "channel"),
    ("no-channel-suffix", "imagesTr/B.nii.gz", lambda p: save(p, volume()), "CASE_XXXX"),
    ("json-missing-key", "dataset.json", lambda p: p.write_text('{"file_ending": ".nii.gz"}'), "channel_names"),
    (
        "json-wrong-type",
        "dataset.json",
        lambda p: p.write_text('{"channel_names": {"0": "T1"}, "file_ending": 3}'),
        "'file_ending' must be a string",
    ),
]


# The default worker count (a process pool) is what users run; one worker runs in-process.
WORKERS = {"default-workers": (), "one-worker": ("--workers", "1")}


def assert_names_the_file(line: str, raw: Path, file: str, problem: str) -> None:
    assert problem in line
    assert str(raw / file) in line or (file.startswith("imagesTr/B") and "B_000" in line), line


@pytest.mark.parametrize("workers", WORKERS.values(), ids=WORKERS.keys())
@pytest.mark.parametrize(("file", "change", "problem"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_plan_names_the_bad_file_in_one_line(tmp_path, capsys, file, change, problem, workers):
    raw = make_raw(tmp_path / "Dataset001_Bad")
    change(raw / file)
    line = one_error_line(*cli(capsys, "plan", "-d", str(raw), "-o", str(tmp_path / "pre"), *workers))
    assert_names_the_file(line, raw, file, problem)


@pytest.mark.parametrize("workers", WORKERS.values(), ids=WORKERS.keys())
@pytest.mark.parametrize(("file", "change", "problem"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_preprocess_names_the_bad_file_in_one_line(tmp_path, capsys, file, change, problem, workers):
    """Planned on good data, then a file goes bad before preprocessing."""
    raw = make_raw(tmp_path / "Dataset001_Bad")
    store = tmp_path / "pre"
    assert cli(capsys, "plan", "-d", str(raw), "-o", str(store), "--no-preprocess", "--workers", "1")[0] == 0
    change(raw / file)
    line = one_error_line(*cli(capsys, "preprocess", "-d", str(raw), "-o", str(store), *workers))
    assert_names_the_file(line, raw, file, problem)
    assert not list((store / "cases").glob("B.*")), "no preprocessed file for the bad case"


def test_case_with_no_image_channels_is_named(tmp_path, capsys):
    raw = make_raw(tmp_path / "Dataset001_Bad")
    (raw / "labelsTr").mkdir()
    save(raw / "labelsTr" / "C.nii.gz", np.zeros(SHAPE, np.uint8))
    line = one_error_line(*cli(capsys, "plan", "-d", str(raw), "-o", str(tmp_path / "pre"), "--workers", "1"))
    assert "C.nii.gz" in line and "no image channels" in line


@pytest.fixture
def predict_inputs(trained, tmp_path) -> Path:
    """A prediction folder with one good case and one of each kind of bad case."""
    raw = Path(load_plans(trained.model_dir / "plans.json")["raw_path"]) / "imagesTs"
    folder = tmp_path / "in"
    folder.mkdir()
    for case in ("GOOD", "NAN", "SHAPE", "TRUNC"):
        for channel in (0, 1, 3):
            os.link(raw / f"PH_0006_{channel:04d}.nii.gz", folder / f"{case}_{channel:04d}.nii.gz")
    good = nib.load(str(folder / "GOOD_0000.nii.gz"))
    data = np.asarray(good.dataobj, np.float32)
    (folder / "NAN_0001.nii.gz").unlink()
    save(folder / "NAN_0001.nii.gz", np.where(data > 0, np.nan, data), good.affine)
    (folder / "SHAPE_0003.nii.gz").unlink()
    save(folder / "SHAPE_0003.nii.gz", data[:-2], good.affine)
    (folder / "TRUNC_0000.nii.gz").unlink()
    (folder / "TRUNC_0000.nii.gz").write_bytes(gzip.compress(b"\x5c\x01" * 400)[:60])
    return folder


def test_predict_writes_good_cases_and_lists_bad_ones(trained, predict_inputs, tmp_path, capsys):
    inputs_before = digest(predict_inputs)
    code, err = cli(capsys, "predict", "-i", str(predict_inputs), "-o", str(tmp_path / "out"), "-m",
                    str(trained.model_dir), "--device", "cpu")  # fmt: skip
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").glob("*_T2.nii.gz")) == ["GOOD_T2.nii.gz"]
    for case, problem in (("NAN", "NaN/inf"), ("SHAPE", "shape"), ("TRUNC", "cannot read")):
        assert any(case in line and problem in line for line in err.splitlines()), err
    assert digest(predict_inputs) == inputs_before  # inputs are never modified


def test_other_fusion_checkpoint_is_one_line(trained, tmp_path, capsys):
    model = Path(shutil.copytree(trained.model_dir, tmp_path / "model"))
    settings = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps({**settings, "fusion": "mmgan"}))
    line = one_error_line(*cli(capsys, "predict", "-i", str(tmp_path), "-o", str(tmp_path / "o"), "-m", str(model)))
    assert "checkpoint_best.pt" in line and "fusion 'tsf', not 'mmgan'" in line


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("--fusion", "nope"), "unknown fusion 'nope'; known: hinet, max, mean, mmgan"),
        (("--head", "nope"), "unknown head 'nope'; known: segmentation, synthesis"),
    ],
    ids=["fusion", "head"],
)
def test_train_unknown_plugin_is_one_line(store, tmp_path, capsys, args, problem):
    line = one_error_line(*cli(capsys, "train", "-p", str(store), "-o", str(tmp_path), "--device", "cpu", *args))
    assert problem in line


def test_train_unknown_precision_is_one_line(store, tmp_path, capsys):
    line = one_error_line(*cli(capsys, "train", "-p", str(store), "-o", str(tmp_path), "--precision", "fp16"))
    assert "unknown --precision 'fp16'; use auto, bf16 or fp32" in line


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("--precision", "fp16", "unknown --precision 'fp16'; use auto, bf16 or fp32"),
        ("--batch-size", "0", "--batch-size must be at least 1, got 0"),
    ],
)
def test_predict_bad_inference_setting_is_one_line(trained, tmp_path, capsys, option, value, problem):
    args = ("predict", "-i", str(tmp_path), "-o", str(tmp_path / "out"), "-m", str(trained.model_dir), option, value)
    assert problem in one_error_line(*cli(capsys, *args))


def test_train_with_plans_of_another_schema_is_one_line(store, tmp_path, capsys):
    copy = Path(shutil.copytree(store, tmp_path / "store"))
    plans = json.loads((copy / "plans.json").read_text())
    (copy / "plans.json").write_text(json.dumps({**plans, "schema_version": 99}))
    line = one_error_line(*cli(capsys, "train", "-p", str(copy), "-o", str(tmp_path), "--device", "cpu"))
    assert str(copy / "plans.json") in line and "schema version 99" in line


def test_evaluate_with_corrupt_reference_is_one_line(trained, predict_inputs, tmp_path, capsys):
    out = tmp_path / "out"
    cli(capsys, "predict", "-i", str(predict_inputs), "-o", str(out), "-m", str(trained.model_dir), "--device", "cpu")
    reference = tmp_path / "ref"
    reference.mkdir()
    os.link(predict_inputs / "GOOD_0000.nii.gz", reference / "GOOD_0000.nii.gz")
    (reference / "GOOD_0002.nii.gz").write_bytes(b"")
    line = one_error_line(*cli(capsys, "evaluate", "-p", str(out), "-r", str(reference)))
    assert "nothing could be evaluated" in line and "GOOD_0002.nii.gz: file is empty" in line


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


KILL_ON_NTH_CALL = """
import importlib, os, signal, sys
from tsfnet.cli import main
module_name, function_name, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
module = importlib.import_module(module_name)
real = getattr(module, function_name)
calls = 0
def write_half_then_die(*args, **kwargs):
    global calls
    calls += 1
    if calls == nth:
        path = next(a for a in args if isinstance(a, (str, os.PathLike)))
        open(path, "wb").write(b"half a file")  # killed in the middle of a write
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
setattr(module, function_name, write_half_then_die)
main(sys.argv[4:])
"""


def run_killed(writer: str, nth: int, *argv: str) -> subprocess.CompletedProcess:
    """Run the CLI; on the nth call of `writer` ("module.function") write half a file and SIGKILL."""
    module, function = writer.rsplit(".", 1)
    command = [sys.executable, "-c", KILL_ON_NTH_CALL, module, function, str(nth), *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_predict_killed_mid_write_leaves_no_partial_output_and_rerun_completes(trained, tmp_path):
    raw = Path(load_plans(trained.model_dir / "plans.json")["raw_path"]) / "imagesTs"
    inputs = tmp_path / "in"
    inputs.mkdir()
    for case in ("P", "Q", "R"):
        for channel in (0, 1, 3):
            os.link(raw / f"PH_0006_{channel:04d}.nii.gz", inputs / f"{case}_{channel:04d}.nii.gz")
    out = tmp_path / "out"
    args = ("predict", "-i", str(inputs), "-o", str(out), "-m", str(trained.model_dir), "--device", "cpu")
    killed = run_killed("nibabel.save", 4, *args)  # writes per target: TSEM, synthesis; the 4th is Q's synthesis
    assert killed.returncode == -signal.SIGKILL
    visible = sorted(p.name for p in out.glob("*.nii.gz") if not p.name.startswith("."))
    assert visible == ["P_T2.nii.gz", "P_T2_tsem.nii.gz", "Q_T2_tsem.nii.gz"]  # Q's synthesis never appeared
    assert [p.name.split(".tmp")[0] for p in out.glob(".*")] == [".Q_T2"]  # the half-written file is hidden
    for name in visible:
        nib.load(str(out / name)).get_fdata()  # every visible file is complete
    rerun = subprocess.run([sys.executable, "-m", "tsfnet", *args], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.name for p in out.glob("*_T2.nii.gz")) == ["P_T2.nii.gz", "Q_T2.nii.gz", "R_T2.nii.gz"]
    assert not list(out.glob(".*")), "the killed run's temporary file is cleaned up"


def test_preprocess_killed_mid_write_then_rerun_completes(tmp_path):
    raw = make_raw(tmp_path / "Dataset001_Ok")
    store = tmp_path / "pre"
    planned = subprocess.run(
        [sys.executable, "-m", "tsfnet", "plan", "-d", str(raw), "-o", str(store), "--no-preprocess", "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert planned.returncode == 0, planned.stderr
    cases = store / "cases"
    argv = ("preprocess", "-d", str(raw), "-o", str(store), "--workers", "1")
    killed = run_killed("zipfile.ZipFile", 1, *argv)  # the first case's arrays file
    assert killed.returncode == -signal.SIGKILL
    assert not [p for p in cases.glob("*.b2zip") if not p.name.startswith(".")]  # nothing half-written is visible
    rerun = subprocess.run([sys.executable, "-m", "tsfnet", *argv], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.name for p in cases.glob("*.b2zip")) == ["A.b2zip", "B.b2zip"]
    assert not list(cases.glob(".*"))
    assert digest(raw / "imagesTr") == digest(make_raw(tmp_path / "again") / "imagesTr")  # inputs untouched


# ---- properties --------------------------------------------------------------------------------

masks = st.lists(st.booleans(), min_size=4, max_size=4).filter(any)


@settings(max_examples=60, deadline=None)
@given(masks, st.integers(0, 3), st.integers(0, 2**31 - 1))
def test_fusion_weights_for_any_availability(mask, target, seed):
    import torch

    from tsfnet.fusion.tsf import TaskWeighting
    from tsfnet.tasks import task_code

    torch.manual_seed(seed)
    weighting = TaskWeighting(4)
    torch.nn.init.normal_(weighting.fc.weight, std=5.0)
    source_mask = torch.tensor([mask], dtype=torch.float32)
    omega = weighting(task_code(source_mask, torch.tensor([target]), 4), source_mask)[0]
    assert torch.isclose(omega.sum(), torch.tensor(1.0), atol=1e-6)
    assert (omega[source_mask[0] == 0] == 0).all() and (omega[source_mask[0] == 1] > 0).all()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_plans_validation_never_crashes(store, tmp_path, data):
    """Any plans.json edit either loads or is refused with an InputError naming the file."""
    plans = json.loads((store / "plans.json").read_text())
    node = plans
    while True:
        key = data.draw(st.sampled_from(sorted(node)))
        if isinstance(node[key], dict) and node[key] and data.draw(st.booleans()):
            node = node[key]
            continue
        if data.draw(st.booleans()):
            del node[key]
        else:
            node[key] = data.draw(json_values)
        break
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(plans))
    try:
        load_plans(path)
    except InputError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(channel_names=json_values, file_ending=json_values)
def test_dataset_json_validation_never_crashes(tmp_path, channel_names, file_ending):
    root = tmp_path / "D"
    if not root.exists():
        make_raw(root)
    (root / "dataset.json").write_text(json.dumps({"channel_names": channel_names, "file_ending": file_ending}))
    try:
        RawDataset.load(root)
    except InputError as exc:
        assert str(exc).startswith(str(root)) and "\n" not in str(exc)


def test_train_killed_while_saving_a_checkpoint_resumes(store, tmp_path):
    argv = ["train", "-p", str(store), "--stage", "pretrain", "--steps", "8", "--val-every", "2", "--workers", "0"]
    argv += ["--device", "cpu", "-o", str(tmp_path)]
    # pretrain saves only checkpoint_latest.pt (at steps 2, 4, 6, 8): the 3rd save is step 6.
    killed = run_killed("torch.save", 3, *argv)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    folder = tmp_path / "tsf__plans__2d" / "fold_0"
    from tsfnet.training.checkpoint import load_checkpoint

    assert load_checkpoint(folder / "checkpoint_latest.pt")["step"] == 4  # the previous checkpoint, whole
    resumed = subprocess.run([sys.executable, "-m", "tsfnet", *argv, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(folder / "checkpoint_latest.pt")["step"] == 8
    assert not list(folder.glob(".*")), "the half-written temporary is swept on resume"


def test_train_killed_between_the_final_checkpoints_still_finishes_on_resume(store, tmp_path):
    """checkpoint_latest.pt is written last: a run killed while writing the last stage's own
    checkpoint resumes that stage instead of taking it for done (and never counting as finished)."""
    from tsfnet.training.folds import is_finished

    argv = ["train", "-p", str(store), "--steps", "2", "--val-every", "2", "--workers", "0", "--device", "cpu"]
    argv += ["-o", str(tmp_path)]
    # saves: pretrain step 2: its own, best, latest; finetune step 2: best, its own (the 5th), latest.
    killed = run_killed("torch.save", 5, *argv)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    folder = tmp_path / "tsf__plans__2d" / "fold_0"
    assert not is_finished(folder)
    resumed = subprocess.run([sys.executable, "-m", "tsfnet", *argv, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert is_finished(folder) and (folder / "checkpoint_finetune.pt").is_file()
