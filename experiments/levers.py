"""The paper's levers, each measured beside plain Anti-I2V on the equal-visibility frontier.

One lever a run, on the same held-out portraits as plain Anti-I2V with the same profile; every
cloak and video resumes from `--out`:
- `eot`: cloaks optimised through JPEG 75, blur and a 50% resize in turn (`protect --eot`),
  both sets judged under those distortions;
- `ensemble`: cloaks optimised against the model and a second one at once (`--ensemble`), judged
  on both (the second as a transfer model);
- `vae-ira`: a profile adapted with the VAE encoder's blocks (`adapt --vae`), so IRA anchors
  the VAE too.
The report (`evaluate --budgets`) re-cloaks both sets at every budget, so they are compared at
equal visibility, paired by photo. The shipped runs are `artifacts/reports/levers/<lever>/`
(32 portraits of seed 7 on mini-cogvideox, with mini-svd for the ensemble; hours on 2 cores).

Usage: python -m anti_i2v.experiments.levers LEVER [--model mini-cogvideox]
    [--profile artifacts/profiles/mini-cogvideox.json] [--second mini-svd]
    [--second-profile artifacts/profiles/mini-svd.json] [--count 32] [--seed 7] [--steps 200]
    [--budgets 4,8,16] [--reference-steps 25] [--eval-steps 25] [--out out/levers/LEVER]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anti_i2v.analyses.profile import load_profile
from anti_i2v.analyses.run import adapt
from anti_i2v.core.common import parse_floats
from anti_i2v.evaluate.run import evaluate
from anti_i2v.models.registry import ARTIFACTS, MINI_WORLD
from anti_i2v.protect.config import EvaluateConfig, ProtectConfig
from anti_i2v.protect.run import run_protect
from anti_i2v.world.dataset import render_dataset

LEVERS = ("eot", "ensemble", "vae-ira")
EOT = ("jpeg75", "blur", "resize50")  # what the EOT cloaks see, and what both sets are judged under


def main(argv: list[str] | None = None) -> Path:
    """Run one lever (see the module docstring); returns the report folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lever", choices=LEVERS)
    parser.add_argument("--model", default="mini-cogvideox")
    parser.add_argument("--profile", default=str(ARTIFACTS / "profiles" / "mini-cogvideox.json"))
    parser.add_argument("--second", default="mini-svd", help="ensemble: the second model")
    parser.add_argument("--second-profile", default=str(ARTIFACTS / "profiles" / "mini-svd.json"))
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--seed", type=int, default=7, help="the held-out portraits' seed")
    parser.add_argument("--steps", type=int, default=ProtectConfig.steps)
    parser.add_argument(
        "--reference-steps",
        type=int,
        default=ProtectConfig.reference_steps,
        help="denoising steps of the reference video the diffusion loss compares with",
    )
    parser.add_argument("--budgets", default="4,8,16")
    parser.add_argument("--eval-steps", type=int, default=EvaluateConfig.steps)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = args.out or Path("out/levers") / args.lever
    world = MINI_WORLD.get(args.model, "v1")
    photos = out / "photos"
    render_dataset(out / "world", args.count, args.seed, "heldout", photos=photos, world=world)

    def cloak(folder: str, profile: str, **lever) -> Path:
        run_protect(
            ProtectConfig(
                model=args.model,
                images=(str(photos),),
                profile=profile,
                out=str(out / folder),
                steps=args.steps,
                reference_steps=args.reference_steps,
                **lever,
            )
        )
        return out / folder

    plain = cloak("anti-i2v", args.profile)
    profiles, models, distortions = (args.profile,), (), ()
    if args.lever == "eot":
        lever = cloak("anti-i2v-eot", args.profile, eot=EOT)
        distortions = EOT
    elif args.lever == "ensemble":
        member = f"{args.second}={args.second_profile}"
        lever = cloak("anti-i2v-ens", args.profile, ensemble=(member,))
        profiles, models = (args.profile, args.second_profile), (args.second,)
    else:  # vae-ira: the profile adapted with the VAE encoder's blocks
        # probed at the plain profile's timesteps, so the two profiles differ only by the VAE
        probed = load_profile(Path(args.profile)).timesteps_probed
        overrides = {"vae": True, **({"timesteps": tuple(probed)} if probed else {})}
        adapt(
            args.model, [photos], out / "adapt-vae", masks=out / "world", probe_overrides=overrides
        )
        vae_profile = str(out / "adapt-vae" / "profile.json")
        lever = Path(f"vae={cloak('anti-i2v-vae', vae_profile)}")
        profiles = (args.profile, vae_profile)
    return evaluate(
        EvaluateConfig(
            model=args.model,
            clean=str(photos),
            protected=(str(plain), str(lever)),
            out=str(out / "report"),
            models=models,
            distortions=distortions,
            budgets=parse_floats(args.budgets, "--budgets"),
            profiles=profiles,
            steps=args.eval_steps,
        )
    )


if __name__ == "__main__":
    main()
