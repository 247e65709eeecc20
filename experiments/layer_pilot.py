"""A causal layer rule, tested: anchor the blocks whose pilot cloak removes the most identity.

The profile's rule picks anchors by how semantic a block's features look (mask probe, spatial
coherence), and the layer ablation found that pick no better than a random one. This rule asks
each block what the cloak is for instead, on pilot portraits kept apart from the ablation's:

1. Pilot cloaks: for every block that is not a collapse layer, IRC + IRA on that block alone
   (the profile's collapse layers and timesteps, `--steps` sign steps, the default budget).
2. Each pilot cloak is animated (`evaluate`, the world's judges) and the block scores the video's
   relative identity drop under the headline judge, averaged over the pilot portraits.
   A judge-free score is measured beside it: how far the cloak moves the denoiser's clean-latent
   estimate (`latent_move`, below). It is reported, not used: on mini-svd it ranked the blocks
   against the identity drop.
3. The pilot profile: the `n` blocks with the largest pilot drop as anchors (n = the profile's
   anchor count); collapse layers and timesteps are the profile's.
4. `--against DIR` (a shipped ablation, e.g. artifacts/reports/layer-ablation-svd): the pilot
   profile cloaks that ablation's portraits with each of its objectives, and its per-photo drops
   are paired with every variant there (the profile's rule, the random draws, inverted, last).
   The pairing is checked: each photo's clean-video identity must equal the ablation's.

Written to `--out`: pilot.json (every score and paired difference), profile-pilot.json, and the
per-photo rows of the pilot (pilot-results.csv) and of each comparison (results-<objective>.csv).

Pilot portraits are held-out identities of another seed (`--pilot-seed 11`; the ablation's are
seed 7), so the rule never sees the photos it is judged on. Every cloak and video resumes.
Cost: one pilot cloak per block and pilot portrait, plus its video; on a real model with dozens
of blocks, restrict the candidates (`--candidates`).

Usage: python -m anti_i2v.experiments.layer_pilot --profile artifacts/profiles/mini-svd.json
    [--count 8] [--steps 50] [--pilot-seed 11] [--candidates a,b,...]
    [--against artifacts/reports/layer-ablation-svd] [--out out/layer-pilot]
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from anti_i2v.analyses.profile import Profile, load_profile, save_profile
from anti_i2v.core.common import write_text_atomic
from anti_i2v.core.images import load_photo
from anti_i2v.evaluate.results import EvalRow, paired_difference
from anti_i2v.evaluate.run import evaluate
from anti_i2v.experiments.layer_ablation import JUDGES, OBJECTIVES, drops
from anti_i2v.models.backbones import Backbone, load_backbone
from anti_i2v.models.registry import MINI_WORLD, judge_name
from anti_i2v.protect.config import EvaluateConfig, ProtectConfig
from anti_i2v.protect.objective import clip_frames_for
from anti_i2v.protect.run import run_protect
from anti_i2v.world.dataset import render_dataset


@torch.no_grad()
def latent_move(
    backbone: Backbone, clean: torch.Tensor, cloak: torch.Tensor, timesteps: list[int], seed: int
) -> float:
    """How far a cloak moves the denoiser's clean-latent estimate, relative to its spread.

    Args:
        clean, cloak: `(3, H, W)` photos in [0, 1].
        timesteps: where to compare (0..1000 scale); the noise is drawn from `seed`, and the
            noised latent is the clean photo's for both, so only the image conditioning differs.

    Returns:
        ||x0(cloak) - x0(clean)||^2 / ||x0(clean) - mean||^2, averaged over `timesteps`.
    """
    clip = clip_frames_for(backbone, 4)
    conds = [backbone.condition(backbone.resize(image[None]), clip) for image in (clean, cloak)]
    latent = conds[0].clean
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    moves = []
    for t in timesteps:
        noisy = backbone.add_noise(latent, noise, t)
        x0 = []
        for cond in conds:
            output = backbone.denoiser(**backbone.denoiser_kwargs(noisy, cond, t))
            x0.append(backbone.predict_clean(noisy, backbone.hidden(output), t))
        moves.append(float((x0[1] - x0[0]).pow(2).sum() / (x0[0] - x0[0].mean()).pow(2).sum()))
    return float(np.mean(moves))


def portraits(folder: Path, count: int, seed: int, world: str) -> Path:
    """Held-out portraits `0 .. count-1` of `seed` as a flat photo folder under `folder`."""
    render_dataset(folder / "world", count, seed, "heldout", photos=folder / "photos", world=world)
    return folder / "photos"


def cloak(
    profile: Profile,
    photos: Path,
    variant: Path,
    out: Path,
    losses,
    steps: int,
    device: str = "auto",
) -> None:
    """Cloak every photo with the variant profile at `variant` (resumes)."""
    run_protect(
        ProtectConfig(
            model=profile.model,
            images=(str(photos),),
            profile=str(variant),
            out=str(out),
            losses=losses,
            steps=steps,
            device=device,
        )
    )


def pilot_scores(
    profile: Profile,
    photos: Path,
    out: Path,
    judges: tuple[str, ...],
    steps: int,
    eval_steps: int,
    candidates: list[str] | None = None,
    latent_seed: int | None = 0,
    device: str = "auto",
) -> dict[str, dict]:
    """Steps 1-2: a pilot cloak per candidate block on `photos`, animated and judged.

    Args:
        candidates: blocks to try (default: every block that is not a collapse layer).
        latent_seed: the noise of the judge-free `latent_move` score; None leaves it out.

    Returns:
        block -> {"drop_<judge>": mean relative ISM drop, "latent_move": ...}, in layer order.
        The videos' rows are in `out/eval/results.csv`; every cloak and video resumes.
    """
    pool = [x for x in profile.layers if x not in profile.collapse_layers]
    blocks = [x for x in (candidates or pool) if x in pool]
    for layer in blocks:  # the long part: one pilot cloak per photo and block
        single = out / "profiles" / f"{layer}.json"
        save_profile(replace(profile, anchor_layers=[layer]), single)
        cloak(profile, photos, single, out / layer, ("irc", "ira"), steps, device)
    report = evaluate(
        EvaluateConfig(
            model=profile.model,
            clean=str(photos),
            protected=tuple(f"{x}={out / x}" for x in blocks),
            out=str(out / "eval"),
            distortions=(),
            identity=judges,
            steps=eval_steps,
            device=device,
        )
    )
    per = drops(report / "results.csv")
    named = [judge_name(j) for j in judges]  # as the rows name them
    scores: dict[str, dict] = {
        layer: {f"drop_{j}": float(np.mean(list(per[j, layer].values()))) for j in named}
        for layer in blocks
    }
    if latent_seed is not None:
        backbone = load_backbone(profile.model)
        names = sorted(p.stem for p in photos.glob("*.png"))
        cleans = {n: load_photo(photos / f"{n}.png").pixels for n in names}
        for layer in blocks:
            moves = [
                latent_move(
                    backbone,
                    cleans[n],
                    load_photo(out / layer / f"{n}.png").pixels,
                    profile.timesteps,
                    latent_seed,
                )
                for n in names
            ]
            scores[layer] = {"latent_move": float(np.mean(moves)), **scores[layer]}
    return scores


def pilot_anchors(profile: Profile, scores: dict[str, dict], judge: str) -> list[str]:
    """Step 3: the blocks with the largest pilot drop under `judge` (its name in the rows), as
    many as the profile anchors, in layer order (ties go to the earlier block)."""
    blocks = list(scores)
    ranked = sorted(blocks, key=lambda x: (-scores[x][f"drop_{judge}"], blocks.index(x)))
    return [x for x in profile.layers if x in ranked[: len(profile.anchor_layers)]]


def pilot(profile: Profile, args, out: Path, world: str) -> tuple[list[str], dict]:
    """Steps 1-3 on held-out portraits of `args.pilot_seed`: the scores and the anchors they choose."""
    photos = portraits(out / "pilot", args.count, args.pilot_seed, world)
    judges = JUDGES[world]
    candidates = args.candidates.split(",") if args.candidates else None
    scores = pilot_scores(
        profile, photos, out / "pilot", judges, args.steps, args.eval_steps, candidates, args.seed
    )
    shutil.copyfile(out / "pilot" / "eval" / "results.csv", out / "pilot-results.csv")
    anchors = pilot_anchors(profile, scores, judges[0])
    names = sorted(p.stem for p in photos.glob("*.png"))
    print(
        f"\npilot: {len(names)} portraits (seed {args.pilot_seed}), {args.steps} steps, IRC + IRA"
    )
    print(f"collapse {profile.collapse_layers}; timesteps {profile.timesteps}")
    for layer, s in scores.items():
        cols = "  ".join(f"{k} {v:.3f}" for k, v in s.items())
        print(f"  {layer:24s} {cols}{'  <- anchor' if layer in anchors else ''}")
    print(f"anchors by pilot drop: {anchors} (the profile's rule: {profile.anchor_layers})")
    return anchors, {"photos": names, "scores": scores}


def paired_against(
    per: dict[tuple[str, str], dict[str, float]], judge: str, shipped: Path, objective: str
) -> dict:
    """The pilot profile's per-photo drops minus every shipped variant's, paired by photo."""
    theirs = drops(shipped / f"results-{objective}.csv")
    mine = per[judge, "pilot"]
    median = json.loads((shipped / "ablation.json").read_text())[objective][judge]["median_random"]
    out = {"n": len(mine), "pilot": float(np.mean(list(mine.values()))), "median_random": median}
    out["minus"] = {
        variant: {
            "mean": float(np.mean([d[p] for p in sorted(mine)])),
            **paired_difference(mine, d),
        }
        for (j, variant), d in sorted(theirs.items())
        if j == judge
    }
    return out


def check_pairing(new: Path, shipped: Path, objective: str) -> None:
    """Refuse a comparison whose clean videos differ from the ablation's (not the same pairs)."""

    def clean_ism(path: Path) -> dict[tuple[str, str], float]:
        return {
            (r.photo, r.judge): round(r.ism_clean, 4)
            for r in EvalRow.read_csv(path)
            if r.distortion == "none"
        }

    a, b = clean_ism(new), clean_ism(shipped / f"results-{objective}.csv")
    differ = [k for k in a if k in b and a[k] != b[k]]
    if differ or not set(a) <= set(b):
        raise SystemExit(f"clean videos differ from {shipped}'s ({differ[:1]}): not paired")


def main(argv: list[str] | None = None) -> Path:
    """Run the pilot (see the module docstring); returns the path of `pilot.json`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="artifacts/profiles/mini-svd.json")
    parser.add_argument("--count", type=int, default=8, help="pilot portraits")
    parser.add_argument("--steps", type=int, default=50, help="sign steps of a pilot cloak")
    parser.add_argument("--pilot-seed", type=int, default=11)
    parser.add_argument("--candidates", default="", help="blocks to try (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--against", type=Path, help="a shipped layer ablation to compare with")
    parser.add_argument("--eval-steps", type=int, default=EvaluateConfig.steps)
    parser.add_argument("--out", default="out/layer-pilot")
    args = parser.parse_args(argv)
    out = Path(args.out)
    profile = load_profile(Path(args.profile))
    world = MINI_WORLD.get(profile.model, "v1")
    anchors, found = pilot(profile, args, out, world)
    chosen = out / "profile-pilot.json"
    save_profile(replace(profile, anchor_layers=anchors), chosen)
    summary = {
        "profile": Path(args.profile).name,
        "world": world,
        "pilot_seed": args.pilot_seed,
        "pilot_steps": args.steps,
        "pilot": found,
        "collapse": profile.collapse_layers,
        "anchors": anchors,
        "rule_anchors": profile.anchor_layers,
    }
    if args.against is not None:
        shipped = json.loads((args.against / "ablation.json").read_text())
        judges = JUDGES[world]
        arms = [o for o in OBJECTIVES if o in shipped]  # the arms that ablation ran
        n = shipped[arms[0]][judges[0]]["n"]  # its portraits: held-out 0..n-1 of seed 7
        photos = portraits(out / "against", n, 7, world)
        for objective in arms:
            folder = out / "against" / objective / "pilot"
            cloak(profile, photos, chosen, folder, OBJECTIVES[objective], shipped["steps"])
            report = evaluate(
                EvaluateConfig(
                    model=profile.model,
                    clean=str(photos),
                    protected=(f"pilot={folder}",),
                    out=str(out / "against" / f"eval-{objective}"),
                    distortions=(),
                    identity=judges,
                    steps=args.eval_steps,
                )
            )
            check_pairing(report / "results.csv", args.against, objective)
            shutil.copyfile(report / "results.csv", out / f"results-{objective}.csv")
            per = drops(report / "results.csv")
            summary[objective] = {
                j: paired_against(per, j, args.against, objective) for j in judges
            }
            for j in judges:
                s = summary[objective][j]
                print(
                    f"\n{objective}, judge {j}: pilot profile drop {s['pilot']:.3f} ({s['n']} photos;"
                    f" the ablation's median random draw: {s['median_random']})"
                )
                for v, p in s["minus"].items():
                    lo, hi = p["ci95"]
                    print(
                        f"  minus {v:10s} ({p['mean']:.3f}) {p['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                        f"  wins {p['wins']}/{s['n']}"
                    )
    write_text_atomic(out / "pilot.json", json.dumps(summary, indent=2) + "\n")
    # What to ship: pilot.json, profile-pilot.json, pilot-results.csv, results-<objective>.csv
    print(f"\nwritten {chosen} and {out / 'pilot.json'}")
    return out / "pilot.json"


if __name__ == "__main__":
    main()
