"""The paper's layer figure at real size: Open-Sora 1.2 (random weights) at 240x426, on this machine.

Anti-I2V's layer figure is a PCA of every block's features at timestep 500, drawn for Open-Sora
and CogVideoX. This runs the toolkit's own commands on a random-weight Open-Sora 1.2 of the real
size (the shipped config, seeded), beside what `plan` predicts for the same probe:

1. `plan`: one probe cell at 240x426, 51 frames, float32 (FakeTensorMode, no weights).
2. A random-weight pipeline of `artifacts/configs/opensora-1.2` (seed 0), saved once to
   OUT/model (float32 safetensors, about 6.4 GB).
3. `anti-i2v probe` alone (like for like with plan's figure), then `anti-i2v adapt OUT/model
   PHOTOS --timesteps 500` (the probe store, the PCA-per-block page `figures/pca_grid.png`, the
   profile; its peak adds the analysis), then `anti-i2v explore`, each in a child process.
   A rerun measures only the stages OUT/summary.json does not have yet.

Prints the planned peak beside each child's peak resident memory (which also counts Python,
torch and the libraries: an upper bound on what the tensors need) and the wall time of each
stage, and writes OUT/summary.json.

Usage: python bench/opensora_real_size.py PHOTOS --out OUT [--timesteps 500]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

GIB = 1024**3


def child(args: list[str]) -> tuple[float, int]:
    """Run `anti-i2v ARGS`; its wall seconds and peak resident bytes (a fresh process each)."""
    exe = Path(sys.executable).with_name("anti-i2v")
    code = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]).returncode; "
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r)"
    )
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-c", code, str(exe), *args], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(
            f"anti-i2v {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    rss_kib = int(
        next(line for line in done.stdout.splitlines() if line.startswith("MAXRSS")).split()[1]
    )
    return time.time() - started, rss_kib * 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("photos")
    ap.add_argument("--out", required=True)
    ap.add_argument("--timesteps", default="500")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from anti_i2v.models.backbones import load_backbone
    from anti_i2v.plan import PlanRequest, plan

    planned = plan(PlanRequest(model="opensora-1.2", task="probe", dtype="float32"))
    print(
        f"plan: probe {planned.resolution[0]}x{planned.resolution[1]}, {planned.frames} frames, "
        f"float32: peak {planned.peak_bytes / GIB:.2f} GiB, {planned.flops_per_step / 1e12:.1f} TFLOPs",
        flush=True,
    )
    model = out / "model"
    if not (model / "model_index.json").exists():
        started = time.time()
        backbone = load_backbone("opensora-1.2", weights="random", seed=0)
        backbone.pipe.save_pretrained(model, safe_serialization=True)
        del backbone
        print(f"random-weight pipeline saved in {time.time() - started:.0f} s", flush=True)
    summary_path = out / "summary.json"
    # Stages already measured are kept (a rerun measures only what is missing)
    stages = json.loads(summary_path.read_text())["stages"] if summary_path.exists() else {}
    for name, cmd in (
        # the probe alone: like for like with plan's figure (adapt adds the analysis)
        ("probe", ["probe", str(model), args.photos, "--out", str(out / "probe.zarr"),
                   "--timesteps", args.timesteps, "--device", "cpu"]),
        ("adapt", ["adapt", str(model), args.photos, "--out", str(out / "adapt"),
                   "--timesteps", args.timesteps, "--device", "cpu"]),
        ("explore", ["explore", str(out / "adapt" / "activations.zarr"), "--out",
                     str(out / "explorer")]),
    ):  # fmt: skip
        if name in stages:
            continue
        seconds, peak = child(cmd)
        photos = len(list(Path(args.photos).glob("*.png")))
        stages[name] = {"seconds": round(seconds, 1), "peak_rss_bytes": peak, "photos": photos}
        print(
            f"{name}: {seconds:.0f} s, peak resident {peak / GIB:.2f} GiB "
            f"(plan's probe peak x {peak / planned.peak_bytes:.2f})",
            flush=True,
        )
        summary_path.write_text(json.dumps(_summary(planned, stages), indent=2) + "\n")
    print(
        f"figure: {out / 'adapt' / 'figures' / 'pca_grid.png'}; explorer: {out / 'explorer' / 'index.html'}"
    )


def _summary(planned, stages: dict) -> dict:
    return {
        "model": "opensora-1.2 (random weights, seed 0)",
        "resolution": list(planned.resolution),
        "frames": planned.frames,
        "planned_peak_bytes": planned.peak_bytes,
        "planned_tflops": round(planned.flops_per_step / 1e12, 2),
        "stages": stages,
        "machine": f"{os.cpu_count()} CPU cores, {resource.getpagesize()}-byte pages",
    }


if __name__ == "__main__":
    main()
