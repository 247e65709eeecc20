"""The toolkit installs under one namespace, `anti_i2v`: no generic name lands in site-packages.

Both ways a user installs it are checked from a folder outside the checkout: the editable
install this suite runs in, and a wheel built from the checkout into a fresh virtual environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = (
    "import importlib.util, anti_i2v.probe, anti_i2v.analyses, anti_i2v.protect; "
    "assert all(importlib.util.find_spec(n) is None for n in ('probe', 'analyses', 'protect')), "
    "'a generic name is importable'; "
    "print(anti_i2v.probe.__file__)"
)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}


def test_editable_install_imports_one_namespace_from_outside_the_checkout(tmp_path):
    res = subprocess.run(
        [sys.executable, "-c", CHECK],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert Path(res.stdout.strip()) == ROOT / "probe" / "__init__.py"  # the card's folder
    help_ = subprocess.run(
        [str(Path(sys.executable).parent / "anti-i2v"), "--help"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert help_.returncode == 0 and "protect" in help_.stdout


@pytest.mark.slow  # builds a wheel and a virtual environment
def test_wheel_installs_one_namespace_into_a_fresh_venv(tmp_path):
    # Built from a copy of the tracked files: setuptools writes build/ beside its sources
    source = tmp_path / "source"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    for name in filter(None, tracked):
        if (ROOT / name).is_file() and not name.startswith(("artifacts/", "tests/")):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((ROOT / name).read_bytes())
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(source)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    [wheel] = wheels.glob("anti_i2v-*.whl")
    import zipfile

    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"anti_i2v"}
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # The dependencies come from this suite's environment, as a path (its .pth files, among
    # them the editable install's, are not run from there): only the wheel provides anti_i2v.
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, str(wheel)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    res = subprocess.run([str(py), "-c", CHECK], cwd=tmp_path, env=_clean_env(),
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert Path(res.stdout.strip()).is_relative_to(site)
    cli = subprocess.run(
        [str(py), "-c", "from anti_i2v.cli import app; app()", "--help"],
        cwd=tmp_path, env=_clean_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert cli.returncode == 0 and "protect" in cli.stdout, cli.stderr[-2000:]
    # The explorer's page ships inside the package
    assert (Path(site) / "anti_i2v" / "analyses" / "explorer" / "explorer.js").is_file()
