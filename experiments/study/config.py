"""Settings of `anti-i2v study`, checked on construction (before any model loads), and its arms.

Torch-free, so the CLI refuses a bad option at once. Each default is written here only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from anti_i2v.core.common import ToolkitError, check_out_given
from anti_i2v.protect.config import (
    ALPHA_DECAYS,
    EQUAL_VISIBILITY,
    OPTIMIZERS,
    ProtectConfig,
    check_distortions,
)


@dataclass(frozen=True)
class Arm:
    """One way of cloaking a study compares: a protect recipe and where its layers come from.

    `layers` is "none" (the recipe uses no feature layers), "profile" (the profile chosen on the
    selection photos), "random-K" (the K-th random draw over the whole depth), "pilot" (the
    pilot rule's anchors, chosen on the selection photos) or "attention" (the anchors with the
    highest attention share on the photo's frame, measured on the selection photos).
    """

    name: str
    method: str
    space: str | None = None  # None: the method's own
    losses: tuple[str, ...] | None = None  # None: the method's own
    layers: str = "none"
    eot: tuple[str, ...] = ()  # a lever: distortions the model sees the cloak through
    # The cost lever: the loop's direction and step-size schedule, alpha (1/255 units) and the
    # share of the study's steps the arm takes (`protect --optimizer/--alpha-decay/--alpha`)
    optimizer: str = "sign"
    alpha_decay: str = "constant"
    alpha: float = 1.0
    step_fraction: float = 1.0
    # A lever: the change moved towards the face (`protect --region`) with this floor; None: not
    region: float | None = None

    def steps(self, study_steps: int) -> int:
        """The optimisation steps this arm takes in a study of `study_steps`."""
        return max(1, round(study_steps * self.step_fraction))

    @property
    def optimises(self) -> bool:
        return self.method != "random-noise"


# The arms in the order every table lists them; `random-layers` stands for K draws.
ARMS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("random-noise", "random-noise"),
        # RGB PGD takes the profile's timesteps too, so it differs from the colour-space arm only
        # in the space: their difference is what the colour space alone does.
        Arm("rgb-pgd", "rgb-pgd", layers="timesteps"),
        Arm("colour-space", "anti-i2v", "dual", ("diffusion",), layers="timesteps"),
        Arm("profile-layers", "anti-i2v", "dual", ("irc", "ira"), "profile"),
        Arm("random-layers", "anti-i2v", "dual", ("irc", "ira"), "random"),
        Arm("pilot-layers", "anti-i2v", "dual", ("irc", "ira"), "pilot"),
        Arm("attention-layers", "anti-i2v", "dual", ("irc", "ira"), "attention"),
        # A lever (temporal attention targeting, after Vid-Freeze and I2VGuard): the colour
        # space's diffusion loss plus a term that lowers the later frames' attention share on
        # the photo's frame in the blocks with the highest share. Its weight, 10, was piloted on
        # fresh portraits of each world (the smallest of 1, 10, 100 at which the share falls as
        # fast as with the term alone while the diffusion loss still rises).
        Arm("attention-target", "anti-i2v", "dual", ("diffusion", "attention=10"), "attention"),
        # A lever (a short unrolled trajectory): the colour space's diffusion loss read after two
        # sampler steps from the profile's timesteps instead of one noised step
        Arm("unrolled", "anti-i2v", "dual", ("unrolled",), layers="timesteps"),
        Arm("anti-i2v", "anti-i2v", layers="profile"),
        # A lever (where the change goes): full Anti-I2V with its change weighted towards the
        # face, from the study's --masks (the world's part masks), else dlib's face box.
        Arm("face-region", "anti-i2v", layers="profile", region=ProtectConfig.region_floor),
    )
}
# Arms whose anchors are chosen by the attention share (measured on the selection photos)
ATTENTION_ARMS = ("attention-layers", "attention-target")
# Run unless --arms says otherwise: every arm but those that came later (a study registered
# before they existed reruns under the same protocol), which are asked for by name.
LATER_ARMS = (*ATTENTION_ARMS, "unrolled", "face-region")
DEFAULT_ARMS = tuple(name for name in ARMS if name not in LATER_ARMS)
LEVER_ARM = "anti-i2v-eot"
# The Arm fields of the cost and region levers (a protocol records them only for arms that set
# them, so protocols registered before them read back unchanged)
LEVER_FIELDS = ("optimizer", "alpha_decay", "alpha", "step_fraction", "region")
FAST_ARM = "anti-i2v-fast"  # full Anti-I2V in fewer steps (--fast-steps), another optimiser


@dataclass(frozen=True)
class StudyConfig:
    """Settings of `anti-i2v study` (see `anti_i2v.experiments.study`); all recorded in protocol.json."""

    model: str
    photos: str  # a folder of photos (or the world render's photo folder)
    out: str
    judge: str | None = None  # default: the mini world's judge for mini models, dlib otherwise
    masks: str | None = None  # part masks for adapt's mask probe (the world render's folder)
    profile: str | None = None  # a given profile instead of adapting on the selection photos
    selection: int = 4  # photos for adapt and the pilot rule, never evaluated
    evaluation: int | None = None  # evaluation photos (default: every other photo)
    split_seed: int = 0
    arms: tuple[str, ...] = DEFAULT_ARMS
    random_layers: int = 4  # K random layer configurations over the whole depth
    budgets: tuple[float, ...] = (3.0, 6.0, 10.0, 16.0)  # 1/255 units of each arm's space
    cloak_seeds: int = 2
    generation_seeds: int = 2
    steps: int = 200
    pilot_steps: int = 50
    eval_steps: int = 25
    eot: tuple[str, ...] = ()  # a lever arm: full Anti-I2V through these distortions
    # The cost lever arm (`anti-i2v-fast`): full Anti-I2V in `fast_steps` steps (None: no arm),
    # stepping by `fast_optimizer` with `fast_alpha` on the `fast_alpha_decay` schedule
    fast_steps: int | None = None
    fast_optimizer: str = "momentum"
    fast_alpha: float = 2.0
    fast_alpha_decay: str = "cosine"
    region_floor: float = ProtectConfig.region_floor  # the face-region arm's (a pilot's choice)
    delta_e: tuple[float, ...] = EQUAL_VISIBILITY  # where curves are read per portrait
    headline_delta_e: float = (
        3.0  # the pre-registered comparisons are made here; the rest are secondary
    )
    reps: int = 2000  # bootstrap resamples
    alpha: float = 0.05  # family-wise error rate of the Holm-corrected comparisons
    budget_hours: float | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        check_out_given(self.out)
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms or len(set(self.arms)) != len(self.arms):
            raise ToolkitError(
                f"--arms {','.join(self.arms)}: name each arm once, from {', '.join(ARMS)}"
            )
        if "rgb-pgd" not in self.arms:
            raise ToolkitError(
                "--arms: keep rgb-pgd; every pre-registered comparison is made against it"
            )
        if self.selection < 1 or (self.evaluation is not None and self.evaluation < 2):
            raise ToolkitError(
                f"--selection {self.selection} --evaluation {self.evaluation}: at least 1 "
                "selection photo and 2 evaluation photos"
            )
        if len(self.budgets) < 2 or len(set(self.budgets)) != len(self.budgets):
            raise ToolkitError(
                f"--budgets {','.join(f'{b:g}' for b in self.budgets)}: give two or more distinct "
                "budgets, so every arm has a curve to read at equal visibility"
            )
        if any(not (math.isfinite(b) and 0 < b <= 255) for b in self.budgets):
            raise ToolkitError("--budgets: each budget must be in (0, 255] (1/255 units)")
        counts = {
            "--random-layers": self.random_layers,
            "--cloak-seeds": self.cloak_seeds,
            "--generation-seeds": self.generation_seeds,
            "--steps": self.steps,
            "--pilot-steps": self.pilot_steps,
            "--eval-steps": self.eval_steps,
            "--reps": self.reps,
        }
        low = [f"{k} {v}" for k, v in counts.items() if v < 1]
        if low:
            raise ToolkitError(f"{low[0]}: must be at least 1")
        if "random-layers" in self.arms and self.random_layers < 2:
            raise ToolkitError(
                f"--random-layers {self.random_layers}: at least 2 draws, or the profile's rank "
                "among them means nothing"
            )
        if self.fast_steps is not None and not 1 <= self.fast_steps <= self.steps:
            raise ToolkitError(
                f"--fast-steps {self.fast_steps}: between 1 and --steps {self.steps} (the lever "
                "is fewer steps)"
            )
        if self.fast_optimizer not in OPTIMIZERS or self.fast_alpha_decay not in ALPHA_DECAYS:
            raise ToolkitError(
                f"--fast-optimizer {self.fast_optimizer} --fast-alpha-decay "
                f"{self.fast_alpha_decay}: choose from {', '.join(OPTIMIZERS)} and "
                f"{', '.join(ALPHA_DECAYS)}"
            )
        if not (math.isfinite(self.fast_alpha) and self.fast_alpha > 0):
            raise ToolkitError(
                f"--fast-alpha {self.fast_alpha:g}: a step size above 0 (1/255 units)"
            )
        if not 0 < self.region_floor <= 1:
            raise ToolkitError(
                f"--region-floor {self.region_floor:g}: the weight off the face, in (0, 1]"
            )
        if "none" in self.eot:
            raise ToolkitError(
                "--eot none: name the distortions to average over (e.g. jpeg75,blur)"
            )
        check_distortions("--eot", self.eot)
        if not self.delta_e or any(not (0 < d < 100) for d in self.delta_e):
            raise ToolkitError("--delta-e: give visibilities in (0, 100) mean CIEDE2000")
        if self.headline_delta_e not in self.delta_e:
            raise ToolkitError(
                f"--headline-delta-e {self.headline_delta_e:g}: must be one of --delta-e "
                f"{','.join(f'{d:g}' for d in self.delta_e)}"
            )
        if not 0 < self.alpha < 1:
            raise ToolkitError(f"--alpha {self.alpha:g}: a family-wise error rate in (0, 1)")
        if self.budget_hours is not None and not self.budget_hours > 0:
            raise ToolkitError(f"--budget-hours {self.budget_hours:g}: must be above 0")

    def study_arms(self) -> list[Arm]:
        """Every arm this study runs, in table order: `random-layers` as its K draws, the lever last."""
        out: list[Arm] = []
        for name in self.arms:
            arm = ARMS[name]
            if name == "random-layers":
                out += [
                    Arm(f"random-layers-{k}", arm.method, arm.space, arm.losses, f"random-{k}")
                    for k in range(self.random_layers)
                ]
            elif arm.region is not None:
                out.append(replace(arm, region=self.region_floor))
            else:
                out.append(arm)
        if self.eot:
            out.append(Arm(LEVER_ARM, "anti-i2v", layers="profile", eot=self.eot))
        if self.fast_steps is not None:
            out.append(
                Arm(
                    FAST_ARM,
                    "anti-i2v",
                    layers="profile",
                    optimizer=self.fast_optimizer,
                    alpha_decay=self.fast_alpha_decay,
                    alpha=self.fast_alpha,
                    step_fraction=self.fast_steps / self.steps,
                )
            )
        return out
