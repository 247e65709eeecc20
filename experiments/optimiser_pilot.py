"""Pilot for the cost lever: which optimiser reaches a full-step cloak's objective in a quarter of the steps?

Runs before a study is registered, on that study's selection photos only (the same seeded split
`anti-i2v study` makes, so no evaluation photo is ever seen). Every variant cloaks those photos
with full Anti-I2V at one budget:

- the reference: PGD as the paper steps it (sign of the gradient, alpha 1/255), `--steps` steps;
- each candidate: `--steps / 4` steps with another direction (sign or MI-FGSM momentum), alpha
  and step-size schedule (constant, or a half cosine).

A variant's score is the share of the reference's objective rise it reaches: (its final objective
- the start) / (the reference's final objective - the start), per photo, then averaged. The final
  objective is the mean over the last cycle of the profile's timesteps (each step draws one). The
  variant with the highest share becomes the study's `--fast-*` options. The study, not this
  pilot, measures what counts (identity removed at equal visibility); the objective only ranks
  candidates cheaply.

Written to `--out`: pilot.json (every variant's per-photo scores and the choice), the study
options of the choice (study-options.txt: `--fast-steps ... --fast-alpha-decay ...`) and the cloaks.

Usage: python -m anti_i2v.experiments.optimiser_pilot MODEL PHOTOS --profile PROFILE.json
    [--selection 4] [--split-seed 0] [--steps 60] [--budget 8] [--out out/optimiser-pilot]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from anti_i2v.analyses.profile import load_profile
from anti_i2v.core.common import write_text_atomic
from anti_i2v.core.images import gather_images
from anti_i2v.experiments.study.config import StudyConfig
from anti_i2v.experiments.study.protocol import split_photos
from anti_i2v.experiments.study.run import copy_group
from anti_i2v.protect.config import ProtectConfig
from anti_i2v.protect.run import run_protect

# (name, optimizer, alpha, schedule): the candidates at a quarter of the steps.
CANDIDATES = (
    ("sign-a1", "sign", 1.0, "constant"),
    ("sign-a2-cosine", "sign", 2.0, "cosine"),
    ("momentum-a1", "momentum", 1.0, "constant"),
    ("momentum-a2-cosine", "momentum", 2.0, "cosine"),
    ("momentum-a4-cosine", "momentum", 4.0, "cosine"),
)


def final_objective(losses: list[dict], cycle: int) -> float:
    """The mean objective over the last `cycle` steps (one pass over the profile's timesteps)."""
    return float(np.mean([row["objective"] for row in losses[-cycle:]]))


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    photos = gather_images([Path(args.photos)])  # as the study lists them
    study = StudyConfig(
        model=args.model, photos=args.photos, out=str(out / "unused"), selection=args.selection,
        split_seed=args.split_seed,
    )  # fmt: skip
    split = split_photos(photos, study)
    chosen = [p for p in photos if p.stem in split.selection]
    selection = copy_group(chosen, split.selection, out / "selection")
    cycle = len(load_profile(args.profile).timesteps)
    quarter = max(1, args.steps // 4)
    variants = [("reference", "sign", 1.0, "constant", args.steps)] + [
        (*c, quarter) for c in CANDIDATES
    ]
    scores: dict[str, dict] = {}
    finals: dict[str, dict[str, float]] = {}
    starts: dict[str, float] = {}
    for name, optimizer, alpha, decay, steps in variants:
        folder = out / "cloaks" / name
        run_protect(
            ProtectConfig(
                model=args.model,
                images=(str(selection),),
                profile=args.profile,
                out=str(folder),
                eps=args.budget,
                steps=steps,
                alpha=alpha,
                optimizer=optimizer,
                alpha_decay=decay,
                reference_cache=str(out / "cloaks" / ".reference"),
            )
        )
        finals[name] = {}
        for p in chosen:
            losses = json.loads((folder / f"{p.stem}.json").read_text())["losses"]
            starts.setdefault(p.stem, losses[0]["objective"])
            finals[name][p.stem] = final_objective(losses, cycle)
        scores[name] = {
            "optimizer": optimizer,
            "alpha": alpha,
            "alpha_decay": decay,
            "steps": steps,
        }
    for name in scores:
        shares = {
            s: (finals[name][s] - starts[s]) / (finals["reference"][s] - starts[s]) for s in starts
        }
        scores[name] |= {"final_objective": finals[name], "share_of_reference": shares,
                         "mean_share": float(np.mean(list(shares.values())))}  # fmt: skip
    best = max(CANDIDATES, key=lambda c: scores[c[0]]["mean_share"])[0]
    result = {
        "model": args.model,
        "selection": sorted(split.selection),
        "budget": args.budget,
        "steps": args.steps,
        "variants": scores,
        "choice": best,
        "command": "python -m anti_i2v.experiments.optimiser_pilot "
        f"{args.model} PHOTOS --profile {Path(args.profile).name} --selection {args.selection} "
        f"--split-seed {args.split_seed} --steps {args.steps} --budget {args.budget:g}",
    }
    write_text_atomic(out / "pilot.json", json.dumps(result, indent=2) + "\n")
    pick = scores[best]
    # The study's options for the chosen candidate, for a recipe to pass on as they are
    write_text_atomic(
        out / "study-options.txt",
        f"--fast-steps {quarter} --fast-optimizer {pick['optimizer']} --fast-alpha "
        f"{pick['alpha']:g} --fast-alpha-decay {pick['alpha_decay']}\n",
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("photos")
    ap.add_argument("--profile", required=True)
    ap.add_argument("--selection", type=int, default=StudyConfig.selection)
    ap.add_argument("--split-seed", type=int, default=StudyConfig.split_seed)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--budget", type=float, default=8.0)
    ap.add_argument("--out", default="out/optimiser-pilot")
    result = run(ap.parse_args())
    for name, v in result["variants"].items():
        print(
            f"{name:20s} {v['steps']:4d} steps  share of the reference's rise {v['mean_share']:.3f}"
        )
    print(f"choice: {result['choice']}")


if __name__ == "__main__":
    main()
