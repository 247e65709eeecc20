"""The import layers hold, and the check that enforces them (`make lint`) would catch a break."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_layers", ROOT / "tools" / "check_layers.py")
check_layers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_layers)

needs_linter = pytest.mark.skipif(
    not (Path(sys.executable).parent / "lint-imports").exists(),
    reason="import-linter is in the dev extra",
)


@pytest.fixture
def tree(tmp_path) -> Path:
    return check_layers.wheel_layout(tmp_path)


def _add(path: Path, code: str) -> None:
    path.write_text(path.read_text() + "\n\n" + code + "\n")


@needs_linter
def test_the_toolkit_keeps_every_import_contract(tree):
    res = check_layers.check(tree)
    assert res.returncode == 0, res.stdout[-3000:]
    assert "0 broken" in res.stdout


@needs_linter
def test_a_lazy_backward_import_breaks_the_layers(tree):
    # the kind of import that hid in functions before: the bottom layer reaching up to a stage
    _add(
        tree / "anti_i2v" / "core" / "images.py",
        "def _sneaky():\n    from anti_i2v.protect import run  # noqa\n",
    )
    res = check_layers.check(tree)
    assert res.returncode != 0
    assert "anti_i2v.core.images -> anti_i2v.protect.run" in res.stdout


@needs_linter
def test_a_cycle_between_sibling_modules_breaks_the_check(tree):
    # v1's renderer reaching back to the module that dispatches between worlds
    _add(
        tree / "anti_i2v" / "world" / "render.py",
        "def _back():\n    from anti_i2v.world import dataset  # noqa\n",
    )
    res = check_layers.check(tree)
    assert res.returncode != 0 and "cycle" in res.stdout.lower(), res.stdout[-2000:]
