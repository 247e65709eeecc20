"""The docs: report READMEs and the results tables are generated from the result files, the
README is a landing page, the docs site builds strictly, and the API page's example runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from anti_i2v import reports

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_every_report_readme_and_results_table_is_what_its_results_give(capsys):
    assert reports.main(["--check"]) == 0, capsys.readouterr().out
    folders = reports.report_folders()
    assert len(folders) >= 15 and all((f / "README.md").is_file() for f in folders)


def test_a_report_readme_follows_its_json(tmp_path):
    folder = tmp_path / "mini-world-svd-v2"
    shutil.copytree(reports.REPORTS / "mini-world-svd-v2", folder)
    summary = json.loads((folder / "summary.json").read_text())
    row = next(
        e for e in summary["table"] if e["method"] == "anti-i2v" and e["distortion"] == "none"
    )
    row["ism_drop"] = 0.4321
    (folder / "summary.json").write_text(json.dumps(summary))
    assert "+0.432" in reports.readme_for(folder)
    assert "+0.432" not in (folder / "README.md").read_text()


def test_a_report_readme_shows_each_distortions_drop_and_share(tmp_path):
    """A report with distortions gets a table of the drop after each, from its summary.json."""
    folder = tmp_path / "h264-mini-cogvideox"
    shutil.copytree(reports.REPORTS / "h264-mini-cogvideox", folder)
    summary = json.loads((folder / "summary.json").read_text())
    row = next(
        e
        for e in summary["table"]
        if (e["method"], e["distortion"], e["judge"]) == ("rgb-pgd", "h264crf33", "mini-identity")
    )
    row["ism_drop"], row["ism_drop_surviving"] = 0.4321, 0.987
    (folder / "summary.json").write_text(json.dumps(summary))
    text = reports.readme_for(folder)
    section = text[text.index("## After each distortion, judge mini-identity") :]
    assert "| rgb-pgd | h264crf33 | +0.432 [" in section and "| 0.99 |" in section
    assert "| clean |" not in section  # the clean photos are never distorted


def test_the_shipped_studies_readmes_and_table_follow_their_reports(tmp_path):
    shipped = reports.studies()
    assert "mini-svd-v2" in [f.name for f in shipped]
    for folder in shipped:  # every file a study writes, shipped beside its README
        for name in (
            "protocol.json",
            "report.json",
            "portraits.csv",
            "results.csv",
            "frontier.png",
        ):
            assert (folder / name).is_file(), f"{folder.name} lacks {name}"
    folder = tmp_path / "study"
    shutil.copytree(shipped[0], folder)
    report = json.loads((folder / "report.json").read_text())
    report["verdicts"] = ["A planted sentence."]
    (folder / "report.json").write_text(json.dumps(report))
    assert "- A planted sentence." in reports.study_readme(folder)
    assert "A planted sentence." in reports.results_table(tmp_path)
    assert "A planted sentence." not in (shipped[0] / "README.md").read_text()


def test_the_readme_is_a_landing_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    # the results table stays, one row a study; its verdict sentences live in docs/results.md
    results = text[text.index(reports.README_START) : text.index(reports.README_END)]
    assert "| mini-svd-v2 |" in results and "At ΔE 3" not in results
    assert "At ΔE 3" in (ROOT / "docs" / "results.md").read_text()
    assert reports.README_START in text and "make docs" in text


@pytest.mark.slow  # builds the site
def test_the_docs_site_builds_strictly(tmp_path):
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    gen = subprocess.run(
        [str(BIN / "typer"), "anti_i2v.cli", "utils", "docs", "--name", "anti-i2v",
         "--output", str(tmp_path / "docs" / "commands.md")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    assert "## `anti-i2v protect`" in (tmp_path / "docs" / "commands.md").read_text()
    build = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    assert (tmp_path / "site" / "concepts" / "index.html").is_file()


@pytest.mark.slow  # probe, analyse, protect and evaluate on a tiny model
def test_the_api_pages_example_runs(tmp_path, monkeypatch):
    page = (ROOT / "docs" / "api.md").read_text()
    [code] = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/api.md", "exec"), {"__name__": "docs_api"})
    assert (tmp_path / "report" / "summary.json").is_file()
    assert json.loads((tmp_path / "profile.json").read_text())["model"] == "tiny:cogvideox"


def test_the_inside_sentences_follow_the_lens_and_attention_files(tmp_path):
    folder = tmp_path / "inside-mini-cogvideox"
    shutil.copytree(reports.INSIDE, folder)
    text = "\n".join(reports.inside_text(folder))
    assert "block 2 (0.83 to 0.53)" in text and "by both measures" in text
    # move the highest share to another block: the sentences follow, whichever way it falls
    data = json.loads((folder / "attention.json").read_text())
    data["frame0"]["transformer_blocks.5"] = [0.999] * len(data["timesteps"])
    (folder / "attention.json").write_text(json.dumps(data))
    text = "\n".join(reports.inside_text(folder))
    assert "0.999" not in text and "1.00 of their attention on the photo's frame in block 5" in text
    assert "are at different blocks" in text and "by both measures" not in text
