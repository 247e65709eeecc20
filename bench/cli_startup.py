"""How fast `anti-i2v` answers before any model work: `--help`, `models`, and refusals of bad
arguments, side by side with importing the stack a command used to load first (torch,
diffusers, transformers). Each figure is the median wall time of `--repeat` fresh processes.

    python bench/cli_startup.py [--repeat 5]

Prints one row per command: seconds, and the ratio to the import-the-stack baseline.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent / "anti-i2v"


def _wall(cmd: list[str], repeat: int) -> tuple[float, int]:
    times, code = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        code = subprocess.run(cmd, capture_output=True).returncode
        times.append(time.perf_counter() - start)
    return statistics.median(times), code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="anti-i2v-cli-")
    commands = {
        "--help": ["--help"],
        "models": ["models"],
        "protect --eps 0 (refused)": ["protect", "tiny:cogvideox", tmp, "--out", f"{tmp}/o", "--eps", "0"],
        "probe --pool 0 (refused)": ["probe", "tiny:cogvideox", tmp, "--out", f"{tmp}/a.zarr", "--pool", "0"],
        "evaluate --seeds 0 (refused)": ["evaluate", "m", "--clean", tmp, "--protected", tmp,
                                         "--out", f"{tmp}/r", "--seeds", "0"],
        "plan --frames 0 (refused)": ["plan", "tiny:cogvideox", "--frames", "0"],
        "analyse --anchors 0 (refused)": ["analyse", tmp, "--out", f"{tmp}/p.json", "--anchors", "0"],
    }  # fmt: skip
    stack, _ = _wall([sys.executable, "-c", "import torch, diffusers, transformers"], args.repeat)
    print(f"baseline: importing torch, diffusers and transformers takes {stack:.2f} s")
    print(f"{'command':32s} {'seconds':>8s} {'exit':>5s} {'x baseline':>11s}")
    for name, argv in commands.items():
        seconds, code = _wall([str(BIN), *argv], args.repeat)
        print(f"{name:32s} {seconds:8.2f} {code:5d} {seconds / stack:11.2f}")


if __name__ == "__main__":
    main()
