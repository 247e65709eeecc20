"""`make gpu-check` (bench/gpu_check.py) dry-runs on CPU at toy size: the same code a GPU will run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


@pytest.mark.slow  # pytest -m gpu on one file, a probe timing and two protect steps in fresh processes
def test_gpu_check_dry_runs_on_cpu_and_writes_its_documented_summary(tmp_path):
    out = tmp_path / "gpu-check"
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(out), "--time-limit", "300"],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"] == "anti-i2v.gpu-check/1" and summary["passed"] is True
    stages = summary["stages"]
    assert [s["stage"] for s in stages] == [
        "gpu tests",
        "probe overhead",
        "protect step",
        "protect step",
    ]
    assert all(s["status"] == "passed" and s["seconds"] >= 0 for s in stages)
    tests = stages[0]
    assert tests["failed"] == 0 and "deselected" in tests["detail"]  # no gpu test in that file
    overhead = stages[1]
    assert overhead["ratio"] == pytest.approx(overhead["probe_ms"] / overhead["forward_ms"])
    for step, model in zip(stages[2:], ("tiny:cogvideox", "tiny:wan22"), strict=True):
        assert step["model"] == model and 0.8 <= step["peak_ratio"] <= 1.2
        assert step["measured_seconds"] > 0 and step["flops"] > 0 and step["cuda_peak_gib"] is None
    md = (out / "summary.md").read_text()
    assert "| protect step | passed |" in md and "tiny:wan22" in md


@pytest.mark.slow  # a fresh process importing torch
def test_gpu_check_without_cuda_says_so_in_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for machines without it")
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and "no CUDA device" in res.stdout
    assert len(res.stdout.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
