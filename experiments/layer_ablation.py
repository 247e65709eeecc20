"""Does the layer choice matter? Profile layers against random, inverted and last-block picks, paired.

For each objective (IRC+IRA alone, then the full Anti-I2V objective) every variant of
`experiments.variants` cloaks the same held-out portraits with the same settings (only the layers
differ), `anti-i2v evaluate` animates them on the same seeds, and the per-photo ISM drops are
compared in pairs: profile minus the median random draw (the draw whose mean drop is the median),
minus the inverted choice and minus the last blocks, each with a 95% bootstrap interval over
photos. The claim "probing picks better layers" stands when profile minus the median random draw
has an interval above 0. Every step resumes (cloaks and videos are cached), so an interrupted run
is re-run with the same command.

A run can also cover a later slice of the held-out portraits and add it to an earlier run's
per-photo results: `--start 8 --count 8 --prior artifacts/reports/layer-ablation-svd` cloaks
portraits 8-15 and summarises them with the 8 shipped ones. The portraits are the same whatever
the slice (the held-out seeds are a fixed sequence), so a 32-portrait ablation can be built a
session at a time; the merged `results-<objective>.csv` and `ablation.json` are what to ship.

Usage: python -m anti_i2v.experiments.layer_ablation [--count 8] [--start 0] [--steps 200]
    [--random 5] [--profile artifacts/profiles/mini-cogvideox.json] [--objectives irc-ira,full]
    [--prior DIR] [--eval-steps 25] [--out out/ablation]
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from anti_i2v.analyses.profile import load_profile, save_profile
from anti_i2v.core.common import write_text_atomic
from anti_i2v.evaluate.results import EvalRow, paired_difference, per_photo, write_csv
from anti_i2v.evaluate.run import evaluate
from anti_i2v.experiments.variants import ablation_variants
from anti_i2v.models.registry import MINI_WORLD, WORLD_JUDGE
from anti_i2v.protect.config import EvaluateConfig, ProtectConfig
from anti_i2v.protect.run import run_protect
from anti_i2v.world.dataset import render_dataset

OBJECTIVES = {"irc-ira": ("irc", "ira"), "full": None}  # None: the method's own terms
# Each world's judges: v1's colour-robust judge and its first judge; the v2 world's own judge.
JUDGES = {"v1": (WORLD_JUDGE["v1"], "mini-identity-v1"), "v2": (WORLD_JUDGE["v2"],)}


def drops(results: Path) -> dict[tuple[str, str], dict[str, float]]:
    """(judge, variant) -> photo -> relative ISM drop, undistorted, averaged over seeds (read
    through evaluate's typed rows and its own per-photo measure)."""
    return per_photo(EvalRow.read_csv(results))


def merged_results(new: Path, prior: Path | None, objective: str, out: Path) -> Path:
    """`new`'s rows after the prior run's `results-<objective>.csv` rows, written to `out`.

    Refuses photos present in both (a slice run twice would count them twice) and variant or
    judge sets that differ (a prior run with other layers or settings is not the same ablation).
    """
    rows = EvalRow.read_csv(new)
    if prior is not None:
        old = EvalRow.read_csv(prior / f"results-{objective}.csv")
        if {(r.method, r.judge) for r in old} != {(r.method, r.judge) for r in rows}:
            raise SystemExit(f"{prior} has other variants or judges than this run: not mergeable")
        twice = {r.photo for r in old} & {r.photo for r in rows}
        if twice:
            raise SystemExit(f"{prior} already has {sorted(twice)[0]}: pick a later --start")
        rows = old + rows
    write_csv(rows, out)
    return out


@dataclass(frozen=True)
class Comparison:
    """One objective and judge of an ablation: each variant's mean drop and the profile's paired
    differences (the `ablation.json` entry under `<objective>` -> `<judge>`)."""

    n: int  # portraits
    mean_drop: dict[str, float]  # variant -> mean relative ISM drop
    median_random: str  # the random draw whose mean drop is the median
    paired: dict[str, dict]  # "profile - X" -> diff, ci95, wins
    random_means: list[float]  # every random draw's mean drop, ascending: chance's spread

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Comparison:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def compare(per: dict[str, dict[str, float]], n_random: int) -> Comparison:
    """Means per variant and the paired differences of the profile against the others."""
    photos = sorted(per["profile"])
    mean = {v: float(np.mean([d[p] for p in photos])) for v, d in per.items()}
    randoms = sorted((f"random-{k}" for k in range(n_random)), key=lambda v: mean[v])
    median = randoms[len(randoms) // 2]
    paired = {
        f"profile - {other}": paired_difference(per["profile"], per[other])
        for other in (median, "inverted", "last")
    }
    return Comparison(len(photos), mean, median, paired, [mean[v] for v in randoms])


def main(argv: list[str] | None = None) -> Path:
    """Run the ablation (see the module docstring); returns the path of `ablation.json`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--start", type=int, default=0, help="first held-out portrait")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--random", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default="artifacts/profiles/mini-cogvideox.json")
    parser.add_argument("--objectives", default="irc-ira,full")
    parser.add_argument("--prior", type=Path, help="a shipped run to add this slice to")
    parser.add_argument("--eval-steps", type=int, default=EvaluateConfig.steps)
    parser.add_argument("--out", default="out/ablation")
    args = parser.parse_args(argv)
    out = Path(args.out)
    photos = out / "photos"
    profile = load_profile(Path(args.profile))
    # Held-out portraits of the world the profile's model was trained on, judged by its judges.
    world = MINI_WORLD.get(profile.model, "v1")
    judges = JUDGES[world]
    samples = render_dataset(out / "world", args.start + args.count, 7, "heldout", world=world)
    photos.mkdir(parents=True, exist_ok=True)
    for sample in samples[args.start :]:  # this slice's photos, each its sample's first frame
        if not (photos / f"{sample.name}.png").exists():
            shutil.copyfile(sample / "frames" / "000.png", photos / f"{sample.name}.png")
    variants = ablation_variants(profile, args.random, args.seed)
    for name, variant in variants.items():
        save_profile(variant, out / "profiles" / f"{name}.json")
    summary = {
        "profile": Path(args.profile).name,
        "world": world,
        "steps": args.steps,
        "layers": {
            n: {"collapse": v.collapse_layers, "anchors": v.anchor_layers}
            for n, v in variants.items()
        },
    }
    if args.prior is not None:  # the same ablation: same model, steps and layer variants
        before = {"world": "v1", **json.loads((args.prior / "ablation.json").read_text())}
        same = ("profile", "world", "steps", "layers")
        if any(before.get(k) != summary[k] for k in same):
            raise SystemExit(f"{args.prior} is another ablation (profile, steps or layers differ)")
        for objective in set(OBJECTIVES) - set(args.objectives.split(",")):
            if objective in before:  # an arm this slice does not run keeps its prior photos
                summary[objective] = before[objective]
                shutil.copyfile(
                    args.prior / f"results-{objective}.csv", out / f"results-{objective}.csv"
                )
    objectives = args.objectives.split(",")
    for objective in objectives:  # every cloak first: the long part, resumable
        for name in variants:
            run_protect(
                ProtectConfig(
                    model=profile.model,
                    images=(str(photos),),
                    profile=str(out / "profiles" / f"{name}.json"),
                    out=str(out / objective / name),
                    losses=OBJECTIVES[objective],
                    steps=args.steps,
                )
            )
    for objective in objectives:
        folders = [f"{name}={out / objective / name}" for name in variants]
        report = evaluate(
            EvaluateConfig(
                model=profile.model,
                clean=str(photos),
                protected=tuple(folders),
                out=str(out / f"eval-{objective}"),
                distortions=(),
                identity=judges,
                steps=args.eval_steps,
            )
        )
        per = drops(
            merged_results(
                report / "results.csv", args.prior, objective, out / f"results-{objective}.csv"
            )
        )
        summary[objective] = {
            judge: compare({v: per[judge, v] for v in variants}, args.random).to_json()
            for judge in judges
        }
        for judge in judges:
            s = summary[objective][judge]
            print(
                f"\n{objective}, judge {judge}: {s['n']} photos, median random = {s['median_random']}"
            )
            for v, m in s["mean_drop"].items():
                print(f"  {v:10s} ISM drop {m:.3f}")
            for k, p in s["paired"].items():
                lo, hi = p["ci95"]
                print(
                    f"  {k:22s} {p['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]  wins {p['wins']}/{s['n']}"
                )
    write_text_atomic(out / "ablation.json", json.dumps(summary, indent=2) + "\n")
    print(f"\nwritten {out / 'ablation.json'}")
    return out / "ablation.json"


if __name__ == "__main__":
    main()
