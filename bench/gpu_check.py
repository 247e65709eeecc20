"""`make gpu-check`: what only a GPU can measure, in one run that keeps to a time limit.

Three stages, each recorded as passed, failed or skipped (with why) and its seconds:

1. `gpu tests`: `pytest -m gpu` (the tests the CPU suite skips for want of CUDA).
2. `probe overhead`: `bench/probe_overhead.py`'s side-by-side timing on its midsize CogVideoX
   (12 blocks of width 512, 128x128, random weights): probe + zarr store over the plain forward
   pass. The target, which 2 CPU cores could not measure: at most 1.15x.
3. `protect step`: one Anti-I2V protect step (forward and backward to the photo, checkpointing
   on) of full-size random-weight CogVideoX-5B-I2V in bfloat16 at 480x720, and of Wan2.2-TI2V-5B
   at its own 704x1280, in a fresh process: live tensor bytes at the peak (as `plan`
   counts them), CUDA's own peak allocation, and wall seconds, beside `plan`'s peak and its
   seconds on an H100 at the utilisation it assumes. Weights are random: no hub is needed.

Writes `OUT/summary.json` (schema below) and `OUT/summary.md`, and prints the markdown.

    {"schema": "anti-i2v.gpu-check/1", "device": str, "torch": str, "time_limit_s": float,
     "seconds": float, "passed": bool,
     "stages": [{"stage": str, "status": "passed"|"failed"|"skipped", "seconds": float,
                 "detail": str, ...stage fields}]}

Stage fields: gpu tests: `passed`, `failed`, `skipped` counts; probe overhead: `model`, `forward_ms`,
`probe_ms`, `ratio`, `target`; protect step: `model`, `resolution`, `dtype`,
`planned_peak_gib`, `measured_peak_gib`, `cuda_peak_gib`, `peak_ratio` (planned / measured),
`planned_seconds`, `measured_seconds`, `flops`, `utilisation` (measured FLOP/s over the GPU's
datasheet peak).

`--device cpu` is the dry run the CPU suite runs (`tests/test_gpu_check.py`): the same code at toy
size (tiny models in float32, one timing pass, pytest on a file with no gpu tests), so that the
script is known to work before the first GPU runs it. Usage:
    python bench/gpu_check.py [--device cuda|cpu] [--out out/gpu-check] [--time-limit 480]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCHEMA = "anti-i2v.gpu-check/1"
OVERHEAD_TARGET = 1.15
GIB = 1024**3
# (model, resolution, dtype) per device: the real sizes on a GPU, toy ones for the CPU dry run
PROTECT = {
    "cuda": [
        ("cogvideox-5b-i2v", (480, 720), "bfloat16"),
        ("wan2.2-ti2v-5b", (704, 1280), "bfloat16"),
    ],
    "cpu": [("tiny:cogvideox", None, "float32"), ("tiny:wan22", None, "float32")],
}
GPU_FOR_PLAN = "h100-80gb"  # plan's seconds are for this GPU (an H100 is what the project lends)


def run_gpu_tests(device: str, deadline: float) -> dict:
    """`pytest -m gpu`: all of tests/ on CUDA. The CPU dry run only proves the call and the
    reading of its summary line, on one light file with no gpu tests (nothing is selected)."""
    where = ["tests"] if device == "cuda" else ["--noconftest", "tests/test_gpu_check.py"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *where]
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=max(1.0, deadline - time.time())
        )
    except subprocess.TimeoutExpired:
        return {"status": "failed", "detail": "pytest -m gpu ran past the time limit"}
    tail = (out.stdout.strip().splitlines() or [""])[-1]
    counts = {k: _count(tail, k) for k in ("passed", "failed", "skipped")}
    ok = out.returncode in (0, 5) and counts["failed"] == 0  # 5: nothing selected
    return {"status": "passed" if ok else "failed", "detail": tail, **counts}


def _count(line: str, word: str) -> int:
    """The number before `word` in pytest's last line (`3 passed, 2 skipped in 4.1s`)."""
    parts = line.replace(",", " ").split()
    return next((int(parts[i - 1]) for i, p in enumerate(parts) if p == word and i), 0)


def run_probe_overhead(device: str) -> dict:
    """The probe's cost over the plain forward, on `bench/probe_overhead.py`'s midsize model
    (the dry run times tiny:cogvideox once: the code path, not the number)."""
    import torch

    sys.path.insert(0, str(HERE))
    from probe_overhead import bench, midsize_cogvideox

    from anti_i2v.models.backbones import load_backbone

    if device == "cuda":
        backbone, repeats, rounds = midsize_cogvideox(), 10, 3
        backbone.pipe.to(device)
    else:
        backbone, repeats, rounds = load_backbone("tiny:cogvideox"), 1, 1
    with torch.no_grad():
        plain, _, probed = bench(backbone, repeats, rounds=rounds)
    ratio = probed / plain
    return {
        "status": "passed" if ratio <= OVERHEAD_TARGET or device != "cuda" else "failed",
        "detail": f"{backbone.name}: probe + store {ratio:.2f}x the plain forward "
        f"(target <= {OVERHEAD_TARGET}x)",
        "model": backbone.name,
        "forward_ms": plain * 1e3,
        "probe_ms": probed * 1e3,
        "ratio": ratio,
        "target": OVERHEAD_TARGET,
    }


def protect_step(model: str, resolution: tuple[int, int] | None, dtype: str, device: str) -> dict:
    """One protect step measured against its plan (run in a fresh process by `run_protect`)."""
    import torch

    from anti_i2v.models.backbones import load_backbone
    from anti_i2v.plan import GPUS, UTILISATION, PlanRequest, plan, run_step, time_step

    req = PlanRequest(
        model=model, task="protect", dtype=dtype, checkpointing=True, resolution=resolution
    )
    planned = plan(req)
    backbone = load_backbone(model, dtype=dtype, device=device, weights="random")
    if resolution is not None:
        backbone.resolution = tuple(resolution)
    backbone.enable_checkpointing()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    peak, flops, _ = run_step(backbone, req, fake=False)
    cuda_peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    seconds = time_step(backbone, req)
    tflops = GPUS[GPU_FOR_PLAN][1]
    ratio = planned.peak_bytes / peak
    return {
        "status": "passed" if 0.8 <= ratio <= 1.2 else "failed",
        "detail": f"{model}: planned peak {ratio:.2f}x the measured one, {seconds:.2f} s a step",
        "model": model,
        "resolution": list(backbone.resolution),
        "dtype": dtype,
        "planned_peak_gib": planned.peak_bytes / GIB,
        "measured_peak_gib": peak / GIB,
        "cuda_peak_gib": None if cuda_peak is None else cuda_peak / GIB,
        "peak_ratio": ratio,
        "planned_seconds": planned.gpus[GPU_FOR_PLAN]["seconds_per_step"],
        "assumed_utilisation": UTILISATION,
        "measured_seconds": seconds,
        "flops": flops,
        "utilisation": flops / seconds / (tflops * 1e12) if device == "cuda" else None,
    }


def run_protect(steps: list, device: str, deadline: float) -> list[dict]:
    """Every `protect_step` in one fresh process (no model of the parent's is resident), each
    printed as it finishes, so that a step past the deadline loses only itself and those after."""
    args = [sys.executable, __file__, "--steps-json", json.dumps([steps, device])]
    try:
        out = subprocess.run(
            args, capture_output=True, text=True, timeout=max(1.0, deadline - time.time())
        )
        stdout, why = out.stdout, None if out.returncode == 0 else (out.stderr or "no output")
    except subprocess.TimeoutExpired as exc:
        stdout, why = exc.stdout or "", "ran past the time limit"
    if isinstance(stdout, bytes):
        stdout = stdout.decode()
    done = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    for model, *_ in steps[len(done) :]:
        last = why.strip().splitlines()[-1][:300] if why and why.strip() else "no output"
        done.append({"status": "failed", "model": model, "detail": f"{model}: {last}"})
    return done


def markdown(summary: dict) -> str:
    """The summary as markdown: one table of stages, one of protect steps."""
    rows = [
        f"# GPU check: {summary['device']}",
        "",
        f"torch {summary['torch']}; {summary['seconds']:.0f} s of a {summary['time_limit_s']:.0f} s "
        f"limit; {'all passed' if summary['passed'] else 'NOT all passed'}.",
        "",
        "| stage | status | seconds | detail |",
        "|---|---|---|---|",
    ]
    for s in summary["stages"]:
        rows.append(f"| {s['stage']} | {s['status']} | {s['seconds']:.1f} | {s['detail']} |")
    steps = [s for s in summary["stages"] if s["stage"] == "protect step" and "peak_ratio" in s]
    if steps:
        rows += [
            "",
            "| model | resolution | dtype | planned peak GiB | measured GiB | CUDA peak GiB | "
            "planned s | measured s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s in steps:
            cuda = "-" if s["cuda_peak_gib"] is None else f"{s['cuda_peak_gib']:.2f}"
            rows.append(
                f"| {s['model']} | {s['resolution'][0]}x{s['resolution'][1]} | {s['dtype']} | "
                f"{s['planned_peak_gib']:.2f} | {s['measured_peak_gib']:.2f} | {cuda} | "
                f"{s['planned_seconds']:.2f} | {s['measured_seconds']:.2f} |"
            )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--out", default="out/gpu-check")
    parser.add_argument("--time-limit", type=float, default=480.0, help="seconds for all stages")
    parser.add_argument("--steps-json", help=argparse.SUPPRESS)  # the protect steps' process
    args = parser.parse_args(argv)
    if args.steps_json:
        steps, device = json.loads(args.steps_json)
        for model, resolution, dtype in steps:
            step = protect_step(model, resolution and tuple(resolution), dtype, device)
            print(json.dumps(step), flush=True)
            if device == "cuda":
                import torch

                torch.cuda.empty_cache()  # the next model starts from an empty cache
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; run on a GPU machine, or --device cpu for the dry run")
        return 2
    started = time.time()
    deadline = started + args.time_limit
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (dry run)"
    stages = []

    def stage(name: str, run) -> None:
        t0 = time.time()
        if time.time() >= deadline:
            result = {"status": "skipped", "detail": "the time limit was reached first"}
        else:
            try:
                result = run()
            except Exception as exc:  # a stage's failure is recorded; the others still run
                result = {"status": "failed", "detail": f"{type(exc).__name__}: {exc}"[:300]}
        stages.append({"stage": name, **result, "seconds": time.time() - t0})
        print(f"{name}: {result['status']}: {result['detail']}", flush=True)

    stage("gpu tests", lambda: run_gpu_tests(args.device, deadline))
    stage("probe overhead", lambda: run_probe_overhead(args.device))
    t0 = time.time()
    if time.time() < deadline:
        steps = run_protect([list(s) for s in PROTECT[args.device]], args.device, deadline)
    else:
        steps = [
            {"status": "skipped", "model": m, "detail": "the time limit was reached first"}
            for m, *_ in PROTECT[args.device]
        ]
    for step in steps:  # one process ran them all: each is charged an equal share of its time
        stages.append({"stage": "protect step", **step, "seconds": (time.time() - t0) / len(steps)})
        print(f"protect step: {step['status']}: {step['detail']}", flush=True)
    summary = {
        "schema": SCHEMA,
        "device": device_name,
        "torch": torch.__version__,
        "time_limit_s": args.time_limit,
        "seconds": time.time() - started,
        "passed": all(s["status"] == "passed" for s in stages),
        "stages": stages,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("summary.json", json.dumps(summary, indent=2) + "\n"),
        ("summary.md", markdown(summary)),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)  # atomic: a summary is whole or absent
    print(markdown(summary))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
