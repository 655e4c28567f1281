"""The README's promises: its test command is what CI runs, its flags exist."""

from __future__ import annotations

import re
from pathlib import Path

from typer.main import get_command

from tsfnet.cli import app

ROOT = Path(__file__).resolve().parents[1]


def quick_start() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_quick_start_is_two_commands_and_ci_runs_the_second():
    commands = quick_start()
    assert len(commands) == 2
    assert commands[0].endswith("tsfnet demo")
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1].replace("python3 -m venv .venv && ", "") in ci


def test_flags_named_in_the_readme_exist():
    readme = (ROOT / "README.md").read_text()
    command = get_command(app)
    for name, sub in command.commands.items():
        known = {opt for p in getattr(sub, "params", []) for opt in (*p.opts, *p.secondary_opts)}
        for line in readme.splitlines():
            for match in re.finditer(rf"tsfnet {name} ([^`|]*)", line):
                for flag in re.findall(r"(--[a-z][a-z0-9-]*)", match.group(1)):
                    assert flag in known, f"README names {flag} for tsfnet {name}"


def test_every_result_file_the_docs_cite_exists():
    """The docs read their numbers from benchmarks/results/: a renamed or missing file would
    leave a claim without its evidence."""
    results = ROOT / "benchmarks" / "results"
    cited = set()
    for doc in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        cited |= {
            (doc.name, name) for name in re.findall(r"([\w.+-]+_20\d\d-\d\d-\d\d[\w.+-]*\.(?:md|png))", doc.read_text())
        }
    assert len(cited) > 10
    missing = sorted(f"{doc}: {name}" for doc, name in cited if not (results / name).exists())
    assert not missing, missing
