"""benchmarks/quality_seeds.py reads the result files quality.py writes and pools them by seed."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tests.conftest import import_benchmark


@pytest.fixture(scope="module")
def quality():
    yield from import_benchmark("quality")


@pytest.fixture(scope="module")
def seeds():
    yield from import_benchmark("quality_seeds")


@pytest.fixture(scope="module")
def common():
    yield from import_benchmark("common")


def options(seed: int, steps: int = 2000) -> argparse.Namespace:
    return argparse.Namespace(
        train=12, val=2, test=4, downsample=1, seed=seed, steps=steps, budget=1.0, batch=8, patch=[96, 96],
        full=False, task_sampling="per_sample", window=None, all_subsets=False,
    )  # fmt: skip


def result_file(
    quality, folder: Path, name: str, args: argparse.Namespace, box: dict[str, list[float]], machine: str = ""
) -> Path:
    """A result file as quality.report lays it out (its Machine and Data lines and Table 1), PSNR
    box given per method for 1 / 2 / 3 inputs; the lesion 5 dB lower."""

    def rows(values: list[float]) -> list[dict]:
        return [
            {"n_inputs": n, "psnr": v, "ssim": 0.5, "psnr_brain": v, "ssim_brain": 0.5, "psnr_lesion": v - 5,
             "ssim_lesion": 0.1, "lpips": float("nan")}
            for n, v in zip((1, 2, 3), values, strict=True)
        ]  # fmt: skip

    outcomes = {method: {"rows": rows(values)} for method, values in box.items()}
    path = folder / name
    lines = [
        "# quality",
        "",
        machine,
        quality.data_line(args),
        "",
        quality.TABLE1_HEADING,
        "",
        *quality.table1(outcomes),
    ]
    path.write_text("\n".join([*lines, "", "## Verdicts", ""]), encoding="utf-8")
    return path


def test_pooled_seeds_give_paired_differences_and_the_best_baseline_of_each_seed(quality, seeds, tmp_path):
    files = [
        result_file(quality, tmp_path, "s0.md", options(0), {
            "tsf": [20.0, 21.0, 21.5], "mean": [20.0, 20.8, 21.1], "hinet": [21.0, 22.0, 23.0],
        }),
        result_file(quality, tmp_path, "s1.md", options(1), {
            "tsf": [20.0, 21.0, 21.0], "mean": [20.0, 21.2, 21.4], "tsf-ms": [20.0, 21.5, 22.0],
        }),
        # seed 1's Hi-Net in a file of its own; its mean, trained again, 0.2 dB off
        result_file(quality, tmp_path, "s1b.md", options(1), {"hinet": [21.0, 21.1, 21.9], "mean": [20.0, 21.4, 21.4]}),
        # seed 2 without Hi-Net: its best baseline is the mean, which the mean over seeds leaves out
        result_file(quality, tmp_path, "s2.md", options(2), {"tsf": [20.0, 21.0, 21.0], "mean": [20.0, 20.0, 20.0]}),
    ]  # fmt: skip
    pooled = seeds.pool([seeds.read_run(path) for path in files])
    assert sorted(pooled.by_seed) == [0, 1, 2]
    assert pooled.by_seed[1]["mean"][2] == {"box": 21.2, "lesion": 16.2}  # the first file's mean is kept
    assert pooled.notes == [
        "mean at seed 1 trained in two runs, up to 0.20 dB apart in the box: s1.md kept, s1b.md not"
    ]
    text = "\n".join(seeds.report(pooled, files))
    assert "| tsf | 0, 1, 2 | 20.00 (20.00 to 20.00) | 21.00 (21.00 to 21.00) | 21.17 (21.00 to 21.50) |" in text
    assert "| tsf-ms | 1 | 20.00 | 21.50 | 22.00 |" in text
    assert "| hinet | 0, 1 | 16.00 (16.00 to 16.00) | 16.55 (16.10 to 17.00) | 17.45 (16.90 to 18.00) |" in text
    assert "- seed 1, 3 inputs: tsf-ms 22.00 > hinet 21.90 > mean 21.40 > tsf 21.00" in text
    # tsf - mean: +0.20 / +0.40 at seed 0, -0.20 / -0.40 at seed 1, +1.00 / +1.00 at seed 2
    assert "| tsf - mean | +0.20 / +0.40 | -0.20 / -0.40 | +1.00 / +1.00 | +0.33 / +0.33 |" in text
    # the best baseline is each seed's own: Hi-Net at seed 0, the mean at 2 inputs and Hi-Net at 3 at
    # seed 1, the mean at seed 2, whose margin stays out of the mean over the seeds
    assert (
        "| tsf - best baseline | -1.00 / -1.50 (hinet) | -0.20 / -0.90 (mean / hinet) | +1.00 / +1.00 (mean) "
        "| -0.60 / -1.20 (seeds with every baseline: 0, 1) |"
    ) in text
    assert "| tsf-ms - best baseline | - | +0.30 / +0.10 (mean / hinet) | - | +0.30 / +0.10 |" in text


def test_files_of_other_options_or_not_from_quality_are_refused(quality, seeds, tmp_path):
    first = result_file(quality, tmp_path, "a.md", options(0), {"tsf": [20.0, 21.0, 22.0]})
    longer = result_file(quality, tmp_path, "b.md", options(1, steps=4000), {"tsf": [20.0, 21.0, 22.0]})
    with pytest.raises(SystemExit, match=r"b\.md: other options than a\.md"):
        seeds.pool([seeds.read_run(first), seeds.read_run(longer)])
    stranger = tmp_path / "notes.md"
    stranger.write_text("# some notes\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"notes\.md: no 'Data: \.\.\., seed K\. \.\.\.' line"):
        seeds.read_run(stranger)


def test_runs_of_another_precision_are_refused(quality, seeds, tmp_path):
    """The precision is read from the Machine line; files from before quality.py --precision name
    the CPU's bf16 instead, and `auto` trained in bf16 where it is native."""

    def run(name: str, seed: int, bf16: str, named: str = ""):
        machine = f"Machine: 2 CPU cores (x86_64, bf16 {bf16}), no GPU, torch 2.14.1; device auto; {named}30 min."
        return seeds.read_run(result_file(quality, tmp_path, name, options(seed), {"tsf": [20.0, 21.0, 22.0]}, machine))

    old_fp32, new_fp32, old_bf16 = (
        run("a.md", 0, "emulated"),
        run("b.md", 1, "native", "precision fp32; "),
        run("c.md", 2, "native"),
    )
    assert [r.precision for r in (old_fp32, new_fp32, old_bf16)] == ["fp32", "fp32", "bf16"]
    assert "Trained in fp32." in "\n".join(seeds.report(seeds.pool([old_fp32, new_fp32]), []))
    with pytest.raises(SystemExit, match=r"c\.md: trained in bf16, a\.md in fp32; only runs of one precision pool"):
        seeds.pool([old_fp32, old_bf16])


def test_a_result_file_is_replaced_whole_or_not_at_all(common, tmp_path, monkeypatch):
    """benchmarks/common.write_result, which every benchmark writes its file with: a run
    stopped while writing keeps the day's earlier result and leaves no partial file."""
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    earlier = common.write_result("quality_seeds", ["# earlier"])
    write_text = Path.write_text

    def stopped_halfway(self: Path, text: str, *args, **kwargs) -> int:
        write_text(self, text[:3], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", stopped_halfway)
    with pytest.raises(KeyboardInterrupt):
        common.write_result("quality_seeds", ["# later, longer"])
    monkeypatch.undo()
    assert earlier.read_text(encoding="utf-8") == "# earlier\n"
    assert list(tmp_path.iterdir()) == [earlier]


def test_rewriting_a_result_keeps_what_was_written_by_hand(common, tmp_path, monkeypatch):
    """A benchmark rerun on the day of its result replaces the generated lines but keeps the
    hand-written paragraph where it was (after the line it followed) and a hand-written section
    at the end; a paragraph the new lines already hold is not doubled."""
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    first = [
        "# quality",
        "",
        "Command: `old`",
        "Machine: 2 cores; 50 min in all.",
        "",
        "Data: old.",
        "",
        "## Table",
        "| 1 |",
    ]
    path = common.write_result("quality", first)
    text = path.read_text(encoding="utf-8")
    text = text.replace(
        "Machine: 2 cores; 50 min in all.\n",
        "Machine: 2 cores; 50 min in all.\n\nHow this run went (written by hand): slow,\nthen fast.\n",
    )
    path.write_text(text + "\n## Reading (written after it, by hand)\n\nHi-Net wins.\n", encoding="utf-8")
    second = [
        "# quality",
        "",
        "Command: `new`",
        "Machine: 2 cores; 40 min in all.",
        "",
        "Data: new.",
        "",
        "## Table",
        "| 2 |",
    ]
    common.write_result("quality", second)
    assert path.read_text(encoding="utf-8").splitlines() == [
        *second[:4], "", "How this run went (written by hand): slow,", "then fast.", *second[4:],
        "", "## Reading (written after it, by hand)", "", "Hi-Net wins.",
    ]  # fmt: skip
    common.write_result("quality", path.read_text(encoding="utf-8").splitlines())
    assert path.read_text(encoding="utf-8").count("by hand)") == 2
