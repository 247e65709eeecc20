"""A study's pre-registration: what will be measured and compared, fixed before the first cloak.

`protocol.json` holds the seeded split of the photos (selection photos choose the layers and
are never evaluated), the arms, budgets and seeds, the comparisons and their correction, and
the content hashes of the model's weights and of the judge, with the toolkit's version. Every
later run of the same study rebuilds the protocol from its options and refuses, in one line, to
go on when anything differs: a study cannot be re-tuned after its numbers are seen.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from anti_i2v.core.common import TOOLKIT_VERSION, ToolkitError, file_sha256, write_text_atomic
from anti_i2v.experiments.study.config import (
    ATTENTION_ARMS,
    FAST_ARM,
    LEVER_ARM,
    LEVER_FIELDS,
    Arm,
    StudyConfig,
)

QUESTION = (
    "On this model, at a visibility nobody notices, does the cloak remove more identity than "
    "plain RGB PGD, and do the layers the probe chose beat random ones?"
)
POOLED_RANDOM = "random-layers"  # the K random draws, averaged per portrait, as one arm


@dataclass(frozen=True)
class Comparison:
    """One pre-registered comparison: arm `a` minus arm `b`, in relative ISM drop at the headline ΔE."""

    a: str
    b: str
    why: str


def comparisons(arms: set[str]) -> list[Comparison]:
    """The family Holm corrects, given the arms run (pooled `random-layers` as one arm).

    Every cloak against RGB PGD (does anything beat the plain baseline), then what each
    ingredient adds: the profile's and the pilot's layers against random ones, the feature
    terms on top of the colour space, and a lever against plain Anti-I2V.
    """
    wanted = [
        *[
            (a, "rgb-pgd", "does it beat plain RGB PGD at equal visibility?")
            for a in (
                "anti-i2v",
                "colour-space",
                "profile-layers",
                "pilot-layers",
                "attention-layers",
                "attention-target",
                "unrolled",
                "face-region",
                LEVER_ARM,
                FAST_ARM,
            )
        ],
        ("profile-layers", POOLED_RANDOM, "do the probed layers beat random ones?"),
        ("pilot-layers", POOLED_RANDOM, "do the pilot rule's layers beat random ones?"),
        (
            "attention-layers",
            POOLED_RANDOM,
            "do the blocks that attend most to the photo's frame beat random ones?",
        ),
        (
            "attention-layers",
            "profile-layers",
            "does the attention share choose better anchors than the semantic scores?",
        ),
        ("anti-i2v", "colour-space", "what IRC and IRA add on top of the colour space"),
        (
            "attention-target",
            "colour-space",
            "what the attention term adds on top of the colour space's diffusion loss",
        ),
        (
            "unrolled",
            "colour-space",
            "what backpropagating through two sampler steps adds to the one-step diffusion loss",
        ),
        ("face-region", "anti-i2v", "what moving the change towards the face adds"),
        (LEVER_ARM, "anti-i2v", "what the EOT lever adds"),
        (FAST_ARM, "anti-i2v", "does the fast optimiser reach the full-step cloak's effect?"),
    ]
    return [Comparison(a, b, why) for a, b, why in wanted if a in arms and b in arms]


@dataclass(frozen=True)
class Split:
    """The seeded split: selection photos (adapt, pilot) and evaluation photos, disjoint."""

    seed: int
    selection: dict[str, str]  # photo name -> content sha256
    evaluation: dict[str, str]


def split_photos(
    photos: list[Path], cfg: StudyConfig, sha256: dict[Path, str] | None = None
) -> Split:
    """Shuffle the photos (sorted by name, then seeded) and cut them into the two groups.

    `sha256`: the photos' content hashes where already computed (reading a photo hashes it).

    Raises:
        ToolkitError: too few photos, or two photos with the same name (stems key every result).
    """
    stems = [p.stem for p in photos]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise ToolkitError(f"two photos are named {twice[0]}; give each photo its own name")
    need = cfg.selection + (cfg.evaluation or 2)
    if len(photos) < need:
        raise ToolkitError(
            f"{len(photos)} photos: this study needs {need} ({cfg.selection} to choose layers, "
            f"{cfg.evaluation or 'at least 2'} to evaluate); add photos or lower --selection"
        )
    order = sorted(photos, key=lambda p: p.name)
    random.Random(cfg.split_seed).shuffle(order)
    chosen = order[: cfg.selection]
    rest = order[cfg.selection :]
    evaluated = rest if cfg.evaluation is None else rest[: cfg.evaluation]

    def hashed(group: list[Path]) -> dict[str, str]:
        known = sha256 or {}
        return {
            p.stem: known[p] if p in known else file_sha256(p)
            for p in sorted(group, key=lambda p: p.name)
        }

    return Split(cfg.split_seed, hashed(chosen), hashed(evaluated))


def arm_record(arm: Arm) -> dict:
    """An arm as the protocol records it: the cost lever's fields only where an arm uses them, so
    protocols registered before the lever existed read back unchanged."""
    record = asdict(arm)
    for name in LEVER_FIELDS:
        if record[name] == Arm.__dataclass_fields__[name].default:
            record.pop(name)
    return record


def build_protocol(
    cfg: StudyConfig, split: Split, judge: str, judge_sha: str, weights_sha: str
) -> dict:
    """The protocol as protocol.json holds it: plain JSON types (lists, not tuples), so the one
    rebuilt on a rerun compares equal, key by key, to the one read back."""
    arms = cfg.study_arms()
    # The arms the comparisons may name: the K draws count as one, pooled per portrait
    named = {a.name for a in arms} | ({POOLED_RANDOM} if "random-layers" in cfg.arms else set())
    protocol = {
        "question": QUESTION,
        "toolkit_version": TOOLKIT_VERSION,
        "model": cfg.model,
        "weights_sha256": weights_sha,
        "judge": judge,
        "judge_sha256": judge_sha,
        "split": asdict(split),
        "layers": (
            {"rule": "given profile", "profile_sha256": file_sha256(Path(cfg.profile))}
            if cfg.profile
            else {"rule": "adapt (probe + analyse) on the selection photos"}
        )
        | {
            "random": f"{cfg.random_layers} draws over the whole depth, seeds 0..{cfg.random_layers - 1}; "
            "the collapse and anchor counts are the profile's; no draw equals the profile's or another draw",
            "pilot": "IRC + IRA on each non-collapse block alone over the selection photos; "
            "the blocks whose videos lose the most identity become the anchors",
        }
        | (
            {
                "attention": "the share of later frames' attention on the photo's frame, "
                "measured on the selection photos at the probed timesteps (`anti-i2v "
                "attention`, 64 queries a call, seed 0); the profile's rule ranks blocks by it, "
                "keeping the profile's collapse blocks and timesteps"
            }
            if set(cfg.arms) & set(ATTENTION_ARMS)
            else {}
        ),
        "arms": [arm_record(a) for a in arms],
        "budgets": list(cfg.budgets),
        "steps": cfg.steps,
        "pilot_steps": cfg.pilot_steps,
        "eval_steps": cfg.eval_steps,
        "cloak_seeds": list(range(cfg.cloak_seeds)),
        "generation_seeds": list(range(cfg.generation_seeds)),
        "analysis": {
            "measure": "relative ISM drop of the generated video, (ism_clean - ism_protected) / ism_clean",
            "visibility": ["mean CIEDE2000", "95th-percentile CIEDE2000", "SSIM"],
            "read_at_delta_e": list(cfg.delta_e),
            "headline_delta_e": cfg.headline_delta_e,
            "interpolation": "per portrait, cloak seed and generation seed: linear in mean "
            "CIEDE2000 between the budgets, never extrapolated; the mean-curve reading beside it",
            "bootstrap": f"paired, {cfg.reps} resamples of portraits, with cloak and generation "
            "seeds resampled within each portrait (nested); two-sided percentile p-values",
            "reps": cfg.reps,
            "correction": "holm",
            "alpha": cfg.alpha,
            "comparisons": [asdict(c) for c in comparisons(named)],
            "rank": "the profile among every layer configuration tried (its own, the random "
            "draws, the pilot's"
            + (", the attention share's" if "attention-layers" in cfg.arms else "")
            + ") by mean drop at the headline ΔE; permutation p = (1 + draws at or above it) / "
            "(1 + draws)",
        },
    }
    return json.loads(json.dumps(protocol))


def register(out: Path, protocol: dict) -> None:
    """Write `out/protocol.json`, or check that the one there is this protocol.

    Raises:
        ToolkitError: one line naming the first setting that differs from the registered one.
    """
    path = out / "protocol.json"
    if path.exists():
        before = json.loads(path.read_text())
        for key in sorted(set(before) | set(protocol)):
            if before.get(key) != protocol.get(key):
                raise ToolkitError(
                    f"{path} was registered with another {key!r}; a study runs under the protocol "
                    "it registered: use the same options and inputs, or a new --out"
                )
        return
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(protocol, indent=2) + "\n")
