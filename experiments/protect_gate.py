"""The protect efficacy gate on mini-cogvideox: ISM and fidelity drops per method and space.

Protects N held-out portraits with each method at eps 16/255 (200 steps by default), generates
videos from clean and protected photos, and prints mean ISM drop and video PSNR with 95% bootstrap
intervals (via `anti-i2v evaluate`, no distortions).
Usage: python -m anti_i2v.experiments.protect_gate [--count 32] [--steps 200] [--runs anti-i2v,random-noise,rgb-pgd,lab,dct,rgb]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from anti_i2v.analyses.run import adapt
from anti_i2v.evaluate.run import evaluate
from anti_i2v.protect.config import EvaluateConfig
from anti_i2v.protect.run import ProtectConfig, run_protect
from anti_i2v.world.dataset import render_dataset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--runs", default="anti-i2v,random-noise,rgb-pgd")
    parser.add_argument("--out", default="out/gate-protect")
    parser.add_argument("--distortions", default="")
    args = parser.parse_args()
    out = Path(args.out)
    photos = out / "photos"
    render_dataset(out / "world", args.count, 7, "heldout", photos=photos)
    profile = out / "adapt" / "profile.json"
    if not profile.exists():
        adapt("mini-cogvideox", [photos], out / "adapt", masks=out / "world")
    folders = []
    for run in args.runs.split(","):
        method, space = (
            (run, None) if run not in ("lab", "dct", "rgb", "dual") else ("anti-i2v", run)
        )
        folder = out / (run if space is None else f"anti-i2v-{space}")
        run_protect(
            ProtectConfig(
                model="mini-cogvideox",
                images=(str(photos),),
                profile=str(profile),
                out=str(folder),
                method=method,
                space=space,
                steps=args.steps,
            )
        )
        folders.append(str(folder))
    report = evaluate(
        EvaluateConfig(
            model="mini-cogvideox",
            clean=str(photos),
            protected=tuple(folders),
            out=str(out / "report"),
            distortions=tuple(d for d in args.distortions.split(",") if d),
        )
    )
    summary = json.loads((report / "summary.json").read_text())
    print(
        f"{'method':22s} {'dist':9s} {'n':>3s} {'ISM clean':>9s} {'ISM prot':>9s} {'ISM drop [95% CI]':>24s} "
        f"{'video PSNR [95% CI]':>24s} {'cloak PSNR':>10s}"
    )
    for e in sorted(
        summary["table"],
        key=lambda e: (e["distortion"] != "none", e["method"] != "clean", e["method"]),
    ):
        lo, hi = e["ism_drop_ci95"]
        plo, phi = e["psnr_video_ci95"]
        print(
            f"{e['method']:22s} {e['distortion']:9s} {e['n']:3d} {e['ism_clean']:9.3f} {e['ism_protected']:9.3f} "
            f"{e['ism_drop']:8.3f} [{lo:6.3f},{hi:6.3f}] {e['psnr_video']:8.2f} [{plo:6.2f},{phi:6.2f}] "
            f"{e['cloak_psnr']:10.2f}"
        )


if __name__ == "__main__":
    main()
