"""The CLI answers before importing a model library: `--help`, `models` and refusals of bad
arguments load no torch, diffusers or transformers (their timings: bench/cli_startup.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "diffusers", "transformers", "sklearn", "zarr")
PROBE = (
    "import sys\n"
    "from anti_i2v.cli import app\n"
    "try:\n"
    "    app(sys.argv[1:])\n"
    "except SystemExit as e:\n"
    "    code = e.code\n"
    "loaded = sorted(m for m in {heavy!r} if m in sys.modules)\n"
    "print('LOADED', loaded, 'EXIT', code)\n"
)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["models"],
        ["protect", "tiny:cogvideox", ".", "--out", "o", "--eps", "0"],
        ["probe", "tiny:cogvideox", ".", "--out", "a.zarr", "--pool", "0"],
        ["evaluate", "m", "--clean", ".", "--protected", "x", "--out", "r", "--seeds", "0"],
        ["plan", "tiny:cogvideox", "--frames", "0"],
        ["analyse", "x", "--out", "p.json", "--anchors", "0"],
        ["explore", "x", "--out", "e", "--dims", "1"],
        ["adapt", "tiny:cogvideox", ".", "--out", "ad", "--pool", "0"],
    ],
)
def test_answers_without_importing_a_model_library(argv, tmp_path):
    res = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("LOADED []"), (last, res.stderr[-1500:])
    assert last.endswith("EXIT 0") or last.endswith("EXIT 2"), last
