"""The CLI answers before importing a model library: `--help`, `models` and refusals of bad
arguments load no torch, diffusers or transformers (their timings: bench/cli_startup.py)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "diffusers", "transformers", "sklearn", "zarr")
# One interpreter answers every command in turn and reports what each left loaded: the first
# command that imports a heavy library is the one named (one process, not one per command).
PROBE = (
    "import sys\n"
    "from anti_i2v.cli import app\n"
    "for argv in {argvs!r}:\n"
    "    try:\n"
    "        app(argv)\n"
    "    except SystemExit as e:\n"
    "        code = e.code\n"
    "    loaded = sorted(m for m in {heavy!r} if m in sys.modules)\n"
    "    print('ARGV', argv, 'LOADED', loaded, 'EXIT', code)\n"
)
COMMANDS = [
    ["--help"],
    ["models"],
    ["protect", "tiny:cogvideox", ".", "--out", "o", "--eps", "0"],
    ["probe", "tiny:cogvideox", ".", "--out", "a.zarr", "--pool", "0"],
    ["evaluate", "m", "--clean", ".", "--protected", "x", "--out", "r", "--seeds", "0"],
    ["plan", "tiny:cogvideox", "--frames", "0"],
    ["analyse", "x", "--out", "p.json", "--anchors", "0"],
    ["explore", "x", "--out", "e", "--dims", "1"],
    ["adapt", "tiny:cogvideox", ".", "--out", "ad", "--pool", "0"],
]


def test_answers_without_importing_a_model_library(tmp_path):
    res = subprocess.run(
        [sys.executable, "-c", PROBE.format(argvs=COMMANDS, heavy=HEAVY)],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    lines = [line for line in res.stdout.splitlines() if line.startswith("ARGV ")]
    assert len(lines) == len(COMMANDS), res.stderr[-1500:]
    for line in lines:
        assert "LOADED []" in line, (line, res.stderr[-1500:])
        assert line.endswith("EXIT 0") or line.endswith("EXIT 2"), line
