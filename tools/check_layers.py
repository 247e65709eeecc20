"""Check the import layers with import-linter (the contracts are in pyproject.toml).

import-linter (through grimp) finds a package's modules by walking its folder, and the
`anti_i2v` namespace spans several top-level folders (pyproject.toml's package-dir). So the
check runs over a copy laid out as the wheel installs it, `anti_i2v/<layer>/...`, imported
ahead of the editable install. Every import counts, lazy ones inside functions too.

    python tools/check_layers.py            # exit 0: every contract kept
    python tools/check_layers.py --tree DIR # check a prepared tree instead (the tests' use)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The folders that install under anti_i2v (pyproject.toml's package-dir), and anti_i2v/ itself
LAYERS = ("core", "models", "world", "probe", "analyses", "protect", "evaluate", "experiments")


def wheel_layout(dest: Path) -> Path:
    """Copy the sources into `dest/anti_i2v/...` as the wheel lays them out; returns `dest`."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "anti_i2v", dest / "anti_i2v", ignore=ignore)
    for layer in LAYERS:
        shutil.copytree(ROOT / layer, dest / "anti_i2v" / layer, ignore=ignore)
    return dest


def check(tree: Path) -> subprocess.CompletedProcess:
    """Run lint-imports over `tree` (a wheel layout); its output and exit code as they are."""
    lint = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(lint), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=tree, env=env, capture_output=True, text=True,
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, help="a prepared wheel layout to check")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="anti-i2v-layers-") as tmp:
        tree = args.tree or wheel_layout(Path(tmp))
        res = check(tree)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
