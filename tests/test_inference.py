"""predict, evaluate and explain on the tiny trained model."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tsfnet.devices import resolve_device
from tsfnet.errors import InputError, TsfnetError
from tsfnet.evaluation.evaluate import evaluate
from tsfnet.evaluation.metrics import brats_dice, psnr, ssim
from tsfnet.inference.explain import explain_weights, tsem_montages
from tsfnet.inference.model_folder import load_model_folder
from tsfnet.inference.predictor import predict_folder

NAMES = ["T1", "T1Gd", "T2", "FLAIR"]
SUFFIXES = ["t1n", "t1c", "t2w", "t2f"]


@pytest.fixture(scope="module")
def model(trained):
    return load_model_folder(trained.model_dir, resolve_device("cpu"))


def source_folder(model) -> Path:
    return Path(model.plans.raw["raw_path"]) / "imagesTs"


def link_case(model, folder: Path, case: str, channels, name=None, source_case="PH_0006") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for channel in channels:
        target = name(channel) if name else f"{case}_{channel:04d}.nii.gz"
        os.link(source_folder(model) / f"{source_case}_{channel:04d}.nii.gz", folder / target)


def test_predict_one_missing_sequence_round_trip(model, tmp_path):
    link_case(model, tmp_path / "in", "A", [0, 1, 3])
    report = predict_folder(model, tmp_path / "in", tmp_path / "out", preview=True, progress=False)
    assert [p.name for p in report.written] == ["A_T2.nii.gz"] and not report.failed
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "A_T2.nii.gz",
        "A_T2_preview.png",
        "A_T2_tsem.nii.gz",
        "A_T2_weights.json",
    ]
    reference = nib.load(str(source_folder(model) / "PH_0006_0000.nii.gz"))
    synthesis = nib.load(str(out / "A_T2.nii.gz"))
    assert synthesis.shape == reference.shape
    assert np.allclose(synthesis.affine, reference.affine, atol=1e-5)
    data = synthesis.get_fdata()
    assert data.min() >= -1 - 1e-6 and data.max() <= 1 + 1e-6
    assert (data[np.asarray(reference.dataobj) == 0] == -1).all()  # background stays background
    weights = json.loads((out / "A_T2_weights.json").read_text())
    assert set(weights["sources"]) == {"T1", "T1Gd", "FLAIR"}
    assert sum(weights["sources"].values()) == pytest.approx(1.0, abs=1e-5)
    assert weights["task_code"] == [1, 1, 0, 1, 0, 0, 1, 0]
    assert weights["precision"] == model.precision  # how the synthesis was computed is on record
    tsem = nib.load(str(out / "A_T2_tsem.nii.gz")).get_fdata()
    assert tsem.min() >= 0 and tsem.shape == reference.shape


def test_precision_and_batch_size_change_little_and_weights_not_at_all(trained, tmp_path):
    def predict(precision, batch_size):
        chosen = load_model_folder(trained.model_dir, resolve_device("cpu"), precision=precision, batch_size=batch_size)
        assert (chosen.precision, chosen.batch_size) == (precision, batch_size)
        out = tmp_path / f"out_{precision}_{batch_size}"
        (written,) = predict_folder(chosen, tmp_path / "in", out, progress=False).written
        return nib.load(str(written)).get_fdata(), json.loads((out / "A_T2_weights.json").read_text())["sources"]

    default = load_model_folder(trained.model_dir, resolve_device("cpu"))
    assert default.batch_size == 2  # the CPU default
    link_case(default, tmp_path / "in", "A", [0, 1, 3])
    fp32, weights = predict("fp32", 1)
    fp32_batched, weights_batched = predict("fp32", 5)
    bf16, weights_bf16 = predict("bf16", 5)
    assert np.allclose(fp32, fp32_batched, atol=1e-5)  # a batch shares one kernel per layer: same result
    assert 0 < np.abs(fp32 - bf16).mean() < 0.02 and np.abs(fp32 - bf16).max() < 0.2
    assert weights_batched == pytest.approx(weights, abs=1e-6)
    assert weights_bf16 == pytest.approx(weights, abs=1e-6)  # ω is computed in fp32 under bf16 too


def test_predict_skips_existing_outputs_and_overwrites_on_request(model, tmp_path):
    link_case(model, tmp_path / "in", "A", [0, 2])
    first = predict_folder(model, tmp_path / "in", tmp_path / "out", progress=False)
    assert len(first.written) == 2
    again = predict_folder(model, tmp_path / "in", tmp_path / "out", progress=False)
    assert not again.written and len(again.skipped) == 2
    forced = predict_folder(model, tmp_path / "in", tmp_path / "out", overwrite=True, progress=False)
    assert len(forced.written) == 2


def test_requested_targets_and_reference_intensity(model, tmp_path):
    link_case(model, tmp_path / "in", "A", [0, 1, 2, 3])
    report = predict_folder(
        model, tmp_path / "in", tmp_path / "out", targets="t2", intensity="reference", progress=False
    )
    assert [p.name for p in report.written] == ["A_T2.nii.gz"]
    data = nib.load(str(report.written[0])).get_fdata()
    lo, hi = model.plans.intensity_reference["T2"]
    assert data.min() >= 0 and data.max() <= hi + 1e-3 and data.max() > lo
    with pytest.raises(TsfnetError, match="unknown target 'PD'"):
        predict_folder(model, tmp_path / "in", tmp_path / "out2", targets="PD", progress=False)


def test_brasyn_input_gets_challenge_names(model, tmp_path):
    case = "BraTS-GLI-00001-000"
    link_case(model, tmp_path / "in" / case, case, [0, 1, 3], name=lambda c: f"{case}-{SUFFIXES[c]}.nii.gz")
    report = predict_folder(model, tmp_path / "in", tmp_path / "out", progress=False)
    assert [p.name for p in report.written] == [f"{case}-t2w.nii.gz"]
    top = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert top == [f"{case}-t2w.nii.gz", "explanations"]  # submittable as it is


def test_bad_case_fails_alone(model, tmp_path):
    link_case(model, tmp_path / "in", "GOOD", [0, 1])
    link_case(model, tmp_path / "in", "BAD", [0])
    (tmp_path / "in" / "BAD_0002.nii.gz").write_bytes(b"\x1f\x8b truncated")
    report = predict_folder(model, tmp_path / "in", tmp_path / "out", progress=False)
    assert {p.name for p in report.written} == {"GOOD_T2.nii.gz", "GOOD_FLAIR.nii.gz"}
    assert list(report.failed) == ["BAD"] and "BAD_0002.nii.gz" in report.failed["BAD"]
    assert not any(p.name.startswith("BAD") for p in (tmp_path / "out").iterdir())


def test_unsafe_case_names_are_refused(model, tmp_path):
    (tmp_path / "in").mkdir()
    os.link(source_folder(model) / "PH_0006_0000.nii.gz", tmp_path / "in" / "my case;rm_0000.nii.gz")
    with pytest.raises(InputError, match="not a safe file name"):
        predict_folder(model, tmp_path / "in", tmp_path / "out", progress=False)


def test_metrics_against_hand_computed_values():
    rng = np.random.default_rng(0)
    reference = rng.uniform(-1, 1, size=(24, 24, 4))
    noise = rng.normal(0, 0.1, size=reference.shape)
    expected = 10 * np.log10(4 / np.mean(noise**2))
    assert psnr(reference + noise, reference) == pytest.approx(expected)
    assert ssim(reference, reference) == pytest.approx(1.0)
    assert ssim(reference + noise, reference) < 0.99
    mask = np.zeros(reference.shape, bool)
    mask[:12] = True
    assert psnr(reference + noise, reference, mask) == pytest.approx(10 * np.log10(4 / np.mean(noise[mask] ** 2)))
    label = np.zeros((4, 4, 4), int)
    label[0, 0, 0], label[1, 1, 1] = 3, 2
    assert brats_dice(label, label) == {"WT": 1.0, "TC": 1.0, "ET": 1.0}
    assert brats_dice(np.where(label == 3, 0, label), label)["ET"] == 0.0


@pytest.fixture(scope="module")
def evaluated(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    for case, keep in (("A1", [2]), ("A2", [0, 3]), ("A3", [0, 1, 3])):
        link_case(model, root / "in", case, keep)
        link_case(model, root / "reference", case, range(4))
    predict_folder(model, root / "in", root / "out", progress=False)
    rows, report_dir = evaluate(root / "out", root / "reference", root / "report", progress=False)
    return rows, report_dir


def test_evaluate_writes_rows_and_tables(evaluated):
    rows, report_dir = evaluated
    assert sorted((r["case"], r["target"]) for r in rows) == [
        ("A1", "FLAIR"),
        ("A1", "T1"),
        ("A1", "T1Gd"),
        ("A2", "T1Gd"),
        ("A2", "T2"),
        ("A3", "T2"),
    ]
    assert {r["n_inputs"] for r in rows} == {1, 2, 3}
    assert all(np.isfinite(r["psnr"]) and -1 <= r["ssim"] <= 1 for r in rows)
    assert all("psnr_tsem_high" in r for r in rows)
    with (report_dir / "metrics.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 6
    summary = (report_dir / "summary.md").read_text()
    assert "Table 1" in summary and "Table 2" in summary and "| 3 | 1 |" in summary
    assert "LPIPS unavailable" in summary


def test_evaluate_lpips_from_local_weights(model, evaluated, tmp_path):
    from torchvision.models import alexnet

    torch.manual_seed(0)
    weights = tmp_path / "alexnet-random.pth"
    torch.save(alexnet(weights=None).state_dict(), weights)
    out = evaluated[1].parent / "out"
    rows, report_dir = evaluate(out, evaluated[1].parent / "reference", tmp_path / "report", weights, progress=False)
    assert all(np.isfinite(r["lpips"]) and r["lpips"] >= 0 for r in rows)
    assert "LPIPS unavailable" not in (report_dir / "summary.md").read_text()


def test_evaluate_without_predictions(tmp_path):
    (tmp_path / "p").mkdir()
    with pytest.raises(InputError, match="no predictions found"):
        evaluate(tmp_path / "p", tmp_path, progress=False)


def test_explain_weights_for_every_task(model, tmp_path):
    json_path, png_path = explain_weights(model, tmp_path)
    rows = json.loads(json_path.read_text())
    assert len(rows) == 28
    for row in rows:
        assert set(row["weights"]) == set(row["sources"])
        assert sum(row["weights"].values()) == pytest.approx(1.0, abs=1e-5)
    assert png_path.stat().st_size > 10_000


def test_tsem_montage(model, tmp_path):
    link_case(model, tmp_path / "in", "M", [0, 1, 2])
    paths = tsem_montages(model, tmp_path / "in", tmp_path / "out", ["M"])
    assert [p.name for p in paths] == ["M_tsem_montage.png"]
    with pytest.raises(InputError, match="no case named Z"):
        tsem_montages(model, tmp_path / "in", tmp_path / "out", ["Z"])


def test_segmentation_dice_on_completed_versus_real_inputs(model, store, tmp_path):
    from tsfnet.training.runner import TrainOptions, train

    seg = train(
        TrainOptions(
            store=store,
            head="segmentation",
            steps=4,
            val_every=2,
            output=tmp_path,
            device="cpu",
            num_workers=0,
            progress=False,
        )
    )
    assert seg.model_dir.parts[-2] == "tsf__plans__2d__segmentation"
    assert any("val_dice" in e for e in seg.history)
    seg_model = load_model_folder(seg.model_dir, resolve_device("cpu"))
    link_case(model, tmp_path / "in", "S", [0, 2])
    link_case(model, tmp_path / "reference", "S", range(4))
    labels = tmp_path / "labels"
    labels.mkdir()
    os.link(source_folder(model).parent / "labelsTs" / "PH_0006.nii.gz", labels / "S.nii.gz")
    predict_folder(model, tmp_path / "in", tmp_path / "out", progress=False)
    _rows, report_dir = evaluate(
        tmp_path / "out",
        tmp_path / "reference",
        tmp_path / "report",
        progress=False,
        segmentation_model=seg_model,
        labels_dir=labels,
    )
    seg_rows = list(csv.DictReader((report_dir / "segmentation.csv").open()))
    assert [r["inputs"] for r in seg_rows] == ["completed", "real"]
    assert all(0 <= float(r[f"dice_{k}"]) <= 1 for r in seg_rows for k in ("WT", "TC", "ET"))
    assert "Segmentation (Dice" in (report_dir / "summary.md").read_text()


def test_region_scores_are_computed_inside_each_region_only(tmp_path):
    from tsfnet.evaluation.evaluate import read_tumour, region_scores

    rng = np.random.default_rng(1)
    reference = rng.uniform(-1, 1, size=(20, 20, 6))
    label = np.zeros(reference.shape, np.uint8)
    label[5:12, 6:14, 2:5] = 2
    label[7:10, 8:11, 3] = 3
    noise = np.where(label > 0, rng.normal(0, 0.2, reference.shape), 0.0)
    path = tmp_path / "CASE.nii.gz"
    nib.save(nib.Nifti1Image(label, np.eye(4)), str(path))
    tumour = read_tumour(path, reference.shape)
    assert (tumour == (label > 0)).all()
    outside = ~tumour
    scores = region_scores(reference + noise, reference, {"lesion": tumour, "rest": outside, "none": None})
    assert scores["psnr_lesion"] == pytest.approx(10 * np.log10(4 / np.mean(noise[label > 0] ** 2)), rel=1e-5)
    assert scores["ssim_lesion"] == pytest.approx(ssim(reference + noise, reference, tumour))
    assert scores["ssim_lesion"] < 0.95
    assert scores["psnr_rest"] == float("inf")  # no noise outside the tumour
    assert set(scores) == {"psnr_lesion", "ssim_lesion", "psnr_rest", "ssim_rest"}
    assert region_scores(reference, reference + noise * 0, {"lesion": tumour})["ssim_lesion"] == pytest.approx(1)
    assert region_scores(reference + noise, reference, {"lesion": np.zeros_like(tumour)}) == {}
    with pytest.raises(InputError, match=r"CASE\.nii\.gz: label shape"):
        read_tumour(path, (20, 20, 5))


def test_ssim_equals_scikit_image_slice_by_slice_inside_regions_and_in_3d():
    """The SSIM maps are computed here, once per slice for every region and only around the
    regions: the numbers must stay scikit-image's (the paper's and the protocol's SSIM)."""
    from skimage.metrics import structural_similarity

    from tsfnet.evaluation.metrics import slice_ssim

    rng = np.random.default_rng(3)
    reference = np.clip(rng.normal(0, 0.4, size=(40, 36, 9)).cumsum(0) / 4, -1, 1)
    prediction = reference + rng.normal(0, 0.1, size=reference.shape)
    edge = np.zeros(reference.shape, bool)  # touches the image border: reflected there
    edge[:6, 30:, 2:4] = True
    inner = np.zeros(reference.shape, bool)  # far from it: filtered on a crop
    inner[15:22, 12:19, 5] = True

    def by_hand(region):
        values = []
        for z in range(reference.shape[2]):
            if region is None or region[:, :, z].any():
                _, smap = structural_similarity(prediction[..., z], reference[..., z], data_range=2, full=True)
                values.append(smap.mean() if region is None else smap[region[..., z]].mean())
        return np.mean(values)

    for regions in ([None], [edge], [inner], [edge, inner], [inner, None]):
        expected = [by_hand(region) for region in regions]
        assert slice_ssim(prediction, reference, regions) == pytest.approx(expected, abs=1e-12)
    assert slice_ssim(prediction, reference, [np.zeros_like(edge)]) == [pytest.approx(float("nan"), nan_ok=True)]
    _, volume_map = structural_similarity(prediction, reference, data_range=2, full=True)
    assert ssim(prediction, reference, per_slice=False) == pytest.approx(volume_map.mean(), abs=1e-12)
    assert ssim(prediction, reference, inner, per_slice=False) == pytest.approx(volume_map[inner].mean(), abs=1e-12)


def test_evaluate_reports_the_lesion_region_where_labels_exist(model, evaluated, tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    for case in ("A1", "A2"):  # A3 has no label: its rows simply have no lesion scores
        os.link(source_folder(model).parent / "labelsTs" / "PH_0006.nii.gz", labels / f"{case}.nii.gz")
    out, reference = evaluated[1].parent / "out", evaluated[1].parent / "reference"
    rows, report_dir = evaluate(out, reference, tmp_path / "report", progress=False, labels_dir=labels, previews=True)
    with_lesion = {r["case"] for r in rows if "psnr_lesion" in r}
    assert with_lesion == {"A1", "A2"}
    previews = sorted(p.name for p in (report_dir / "previews").glob("*.png"))
    assert previews == sorted(f"{r['case']}_{r['target']}.png" for r in rows)
    assert all(
        np.isfinite(r["psnr_lesion"]) and r["psnr_lesion"] != r["psnr_brain"] for r in rows if "psnr_lesion" in r
    )
    summary = (report_dir / "summary.md").read_text()
    assert "## Lesion region: inside the tumour labels" in summary and "| 1 | 3 |" in summary


def test_tsem_preview_highlights_a_region():
    from tsfnet.plotting import heat_overlay

    tsem = np.random.default_rng(0).uniform(0, 0.02, (30, 30, 5)).astype(np.float32)
    tsem[10:14, 10:14, 2] = 0.5
    heat = heat_overlay(tsem, np.ones(tsem.shape, bool), 2, "TSEM")
    shown = heat.values > heat.low
    hot = np.zeros((30, 30), bool)
    hot[10:14, 10:14] = True
    assert shown[np.rot90(hot)].all() and shown.mean() < 0.2  # the hot spot, not the whole slice
    assert 0.015 < heat.low < 0.02 and heat.high > heat.low  # from the brain TSEM's 90th percentile


def test_preview_slice_follows_the_tsem():
    from tsfnet.plotting import centre_slice, hottest_slice

    rng = np.random.default_rng(1)
    tsem = rng.uniform(0, 0.02, (30, 30, 12)).astype(np.float32)
    brain = np.ones(tsem.shape, bool)
    tsem[5:12, 5:12, 9] = 0.4  # a region, off the centre slice
    assert hottest_slice(tsem, brain) == 9
    brain[:, :, 9] = False  # what lies outside the brain does not count
    assert hottest_slice(tsem, brain) != 9
    assert hottest_slice(np.zeros((4, 4, 3), np.float32), np.ones((4, 4, 3), bool)) is None
    tumour = np.zeros((8, 8, 10), bool)
    tumour[2:5, 2:5, 6:9] = True  # evaluate's comparison shows the slice through its centre
    assert centre_slice(tumour) == 7 and centre_slice(np.zeros_like(tumour)) is None


def test_paper_block_is_the_authors_126_central_slices_of_192_x_192():
    from tsfnet.evaluation.evaluate import paper_block
    from tsfnet.evaluation.tables import summary_markdown

    block = paper_block((240, 240, 155))
    volume = np.zeros((240, 240, 155))
    assert volume[block].shape == (192, 192, 126)
    assert block == (slice(24, 216), slice(24, 216), slice(14, 140))  # triplet centres of slices 13..140
    assert paper_block((200, 240, 155)) is None  # only where the paper's geometry is
    rows = [{"n_inputs": 1, "target": "T2", "psnr_block": 25.0, "ssim_block": 0.9}]
    assert "| 1 | 1 | 25.000 ± 0.000 | 0.900 ± 0.000 |" in summary_markdown(rows, [])


def test_predict_reads_the_next_case_while_the_network_runs_and_keeps_the_order(model, tmp_path, monkeypatch):
    import threading

    import tsfnet.inference.predictor as predictor

    for case in ("A", "B", "C"):
        link_case(model, tmp_path / "in", case, [0, 1])
    events, load, synthesise = [], predictor.load_input, predictor.synthesise_case

    def recorded_load(trained, case):
        events.append(("load", case.case_id, threading.current_thread().name))
        return load(trained, case)

    def slow_synthesise(trained, loaded, *args):
        events.append(("network", loaded.case.case_id, threading.current_thread().name))
        time.sleep(0.5)  # long enough for the reader to fetch the next case meanwhile
        events.append(("network done", loaded.case.case_id, threading.current_thread().name))
        return synthesise(trained, loaded, *args)

    monkeypatch.setattr(predictor, "load_input", recorded_load)
    monkeypatch.setattr(predictor, "synthesise_case", slow_synthesise)
    report = predict_folder(model, tmp_path / "in", tmp_path / "out", progress=False)
    order = [(kind, case) for kind, case, _ in events]
    assert order.index(("load", "B")) < order.index(("network done", "A"))  # read ahead, in parallel
    assert {thread for kind, _, thread in events if kind == "load"} == {"tsfnet-read_0"}
    assert {thread for kind, _, thread in events if kind != "load"} == {threading.main_thread().name}
    assert [p.name for p in report.written] == [f"{c}_{t}.nii.gz" for c in "ABC" for t in ("T2", "FLAIR")]
    assert not report.failed
