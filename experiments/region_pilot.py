"""Pilot for the region lever: how far towards the face can the change go before it shows?

Runs before a study is registered, on that study's selection photos only (the split
`anti-i2v study` makes, so no evaluation photo is seen). At one budget it cloaks those photos
with RGB PGD, full Anti-I2V, and full Anti-I2V with `--region` at each candidate floor, and
measures each cloak's mean and 95th-percentile CIEDE2000 (the study's two visibility columns).

A floor is acceptable when its cloaks' p95/mean ratio is no higher than RGB PGD's: at equal mean
visibility its worst pixels are then no more visible than the plain baseline's, the issue's
condition for a win that is not change piled into a patch people see. The pilot picks the lowest
acceptable floor (the change moved furthest towards the face); the study, not this pilot,
measures identity. When none is acceptable, the highest floor is taken and pilot.json says so.

Written to `--out`: pilot.json (every variant's per-photo numbers and the choice), the study
option of the choice (study-options.txt: `--region-floor F`) and the cloaks.

Usage: python -m anti_i2v.experiments.region_pilot MODEL PHOTOS --profile PROFILE.json
    --masks WORLD [--selection 4] [--split-seed 0] [--steps 60] [--budget 8]
    [--floors 0.1,0.25,0.5] [--out out/region-pilot]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from anti_i2v.core.common import parse_floats, write_text_atomic
from anti_i2v.core.images import gather_images, load_photo
from anti_i2v.experiments.study.config import StudyConfig
from anti_i2v.experiments.study.protocol import split_photos
from anti_i2v.experiments.study.run import copy_group
from anti_i2v.protect.config import ProtectConfig
from anti_i2v.protect.metrics import DELTA_E_PERCENTILE, delta_e_map
from anti_i2v.protect.run import run_protect


def visibility(photo: Path, cloak: Path) -> tuple[float, float]:
    """A cloak's mean and 95th-percentile CIEDE2000 against its photo."""
    colour = delta_e_map(load_photo(photo).pixels, load_photo(cloak).pixels)
    return float(colour.mean()), float(np.percentile(colour, DELTA_E_PERCENTILE))


def main(argv: list[str] | None = None) -> dict:
    """Run the pilot (see the module docstring); returns pilot.json's content."""
    ap = argparse.ArgumentParser(prog="python -m anti_i2v.experiments.region_pilot")
    ap.add_argument("model")
    ap.add_argument("photos", type=Path)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--masks", required=True, help="the world render's folder")
    ap.add_argument("--selection", type=int, default=4)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--budget", type=float, default=8.0)
    ap.add_argument("--floors", default="0.1,0.25,0.5")
    ap.add_argument("--out", type=Path, default=Path("out/region-pilot"))
    args = ap.parse_args(argv)
    floors = sorted(parse_floats(args.floors, "--floors"))

    study = StudyConfig(args.model, str(args.photos), "-", selection=args.selection,
                        split_seed=args.split_seed)  # fmt: skip
    photos = gather_images([args.photos])  # as the study lists them
    split = split_photos(photos, study)
    # only these photos are ever cloaked here
    selection = copy_group(photos, split.selection, args.out / "selection")

    variants = {"rgb-pgd": {"method": "rgb-pgd"}, "anti-i2v": {}}
    variants |= {f"region-{f:g}": {"region": args.masks, "region_floor": f} for f in floors}
    results = {}
    for name, extra in variants.items():
        folder = args.out / "cloaks" / name
        cfg = ProtectConfig(model=args.model, images=(str(selection),), profile=args.profile,
                            out=str(folder), steps=args.steps, eps=args.budget, **extra)  # fmt: skip
        run_protect(cfg)
        per = {
            p.stem: visibility(p, folder / f"{p.stem}.png")
            for p in sorted(gather_images([selection]))
        }
        means = [m for m, _ in per.values()]
        p95s = [q for _, q in per.values()]
        results[name] = {
            "per_photo": {k: {"delta_e_mean": m, "delta_e_p95": q} for k, (m, q) in per.items()},
            "delta_e_mean": float(np.mean(means)),
            "delta_e_p95": float(np.mean(p95s)),
            "p95_over_mean": float(np.mean(p95s) / np.mean(means)),
        }
    limit = results["rgb-pgd"]["p95_over_mean"]
    ok = [f for f in floors if results[f"region-{f:g}"]["p95_over_mean"] <= limit]
    choice = ok[0] if ok else floors[-1]
    pilot = {
        "model": args.model,
        "selection": sorted(split.selection),
        "budget": args.budget,
        "steps": args.steps,
        "rule": "lowest floor whose p95/mean CIEDE2000 is at most RGB PGD's",
        "variants": results,
        "acceptable": ok,
        "choice": choice,
        "note": None if ok else "no floor kept p95/mean at RGB PGD's; the highest was taken",
    }
    write_text_atomic(args.out / "pilot.json", json.dumps(pilot, indent=2) + "\n")
    write_text_atomic(args.out / "study-options.txt", f"--region-floor {choice:g}\n")
    print(json.dumps({k: v["p95_over_mean"] for k, v in results.items()}), "->", choice)
    return pilot


if __name__ == "__main__":
    main()
