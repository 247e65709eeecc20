"""Settings of `anti-i2v protect`, checked on construction (before any model loads).

The defaults are the paper's; the CLI reads them from here, so each is written once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from anti_i2v.core.common import ToolkitError, check_out_given, is_url
from anti_i2v.probe.config import MODEL_DTYPES, OFFLOADS, check_timesteps
from anti_i2v.protect.methods import LOSS_TERMS, METHODS, parse_loss

SPACES = ("dual", "lab", "dct", "rgb")  # see protect.spaces
# What a cloak meets on its way to an attacker (see protect.evaluate.distortions).
DISTORTIONS = ("jpeg90", "jpeg75", "jpeg50", "blur", "noise", "resize50", "platform", "vae")
# Cloak visibilities (mean CIEDE2000) at which the frontier compares methods: 2 is about the
# threshold of a noticeable colour difference, 5 clearly visible.
EQUAL_VISIBILITY = (2.0, 3.0, 5.0)
# The loop's step direction (the gradient's sign, or MI-FGSM's momentum) and step-size schedules.
OPTIMIZERS = ("sign", "momentum")
ALPHA_DECAYS = ("constant", "cosine")
MIN_SIDE = 16  # px: below this a photo carries no face worth protecting, and SSIM has no window


@dataclass(frozen=True)
class ProtectConfig:
    """Settings of `anti-i2v protect` (defaults: the paper's); recorded in every sidecar."""

    model: str
    images: tuple[str, ...]
    profile: str | None
    out: str
    method: str = "anti-i2v"
    steps: int = 200
    eps: float = 16.0  # in 1/255 units of each space
    alpha: float = 1.0  # in 1/255 units
    # The step's direction, "sign" (PGD, the paper's) or "momentum" (MI-FGSM), and its size's
    # schedule, "constant" or "cosine" (falling on a half cosine): the cost lever
    optimizer: str = "sign"
    alpha_decay: str = "constant"
    space: str | None = None  # default: the method's
    losses: tuple[str, ...] | None = None  # default: the method's
    target: str | None = None  # IRA / latent-pull target image; default: the built-in pattern
    ira_untargeted: bool = False
    frames: int = 4
    timesteps: tuple[int, ...] | None = None  # default: the profile's
    seed: int = 0
    reference_steps: int = 25  # denoising steps of the cached reference video
    early_exit: bool = True
    work_max_side: int = 1024
    device: str = "auto"
    ab_unit: float = 128.0  # a*/b* points per lab unit: 128 (half-range) or 110 (the paper's code)
    eot: tuple[str, ...] = ()  # distortions the model sees the cloak through, in turn (EOT)
    # A lever: weight the change towards the face (`protect.region`), "face" (dlib's box) or a
    # folder of masks; off the region the weight is `region_floor` (before scaling to mean 1)
    region: str | None = None
    region_floor: float = 0.25
    # The model's weights and forward; the perturbation, its spaces and projection stay float32
    dtype: str = "float32"
    checkpointing: bool = (
        False  # recompute block activations in the backward: less memory, same cloak
    )
    offload: str = "none"  # diffusers' CPU offload (OFFLOADS); saves nothing for the backward
    batch_size: int = 1  # photos per optimisation step (equal working sizes only)
    # More models the cloak is optimised against at once (transfer), each "MODEL" or
    # "MODEL=PROFILE.json" (its own layers and timesteps); the objective is the mean over models
    ensemble: tuple[str, ...] = ()
    in_place: bool = False  # --out may be an input folder; originals are kept as NAME.original.EXT
    record_paths: bool = False  # sidecars record full input paths (default: file names only)
    # Where the clean photos' reference videos are cached (default: OUT/.reference); runs that
    # cloak the same photos with other settings (a study's arms and budgets) can share one
    reference_cache: str | None = None

    def __post_init__(self) -> None:
        check_out_given(self.out)
        if self.method not in METHODS:
            raise ToolkitError(f"--method {self.method}: unknown; choose from {', '.join(METHODS)}")
        if not (
            isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and 0 < self.eps <= 255
        ):
            raise ToolkitError(
                f"--eps {self.eps:g}: the budget must be in (0, 255] (1/255 units); the paper uses 16"
            )
        if self.steps < 1:
            raise ToolkitError(
                f"--steps {self.steps}: at least 1 optimisation step (the paper uses 200)"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ToolkitError(f"--optimizer {self.optimizer}: choose from {', '.join(OPTIMIZERS)}")
        if self.alpha_decay not in ALPHA_DECAYS:
            raise ToolkitError(
                f"--alpha-decay {self.alpha_decay}: choose from {', '.join(ALPHA_DECAYS)}"
            )
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ToolkitError(
                f"--alpha {self.alpha:g}: the step size must be above 0 (1/255 units)"
            )
        if self.space is not None and self.space not in SPACES:
            raise ToolkitError(f"--space {self.space}: unknown; choose from {', '.join(SPACES)}")
        if self.losses is not None:
            if not self.losses:
                raise ToolkitError(f"--losses: name at least one of {', '.join(LOSS_TERMS)}")
            for entry in self.losses:
                try:
                    parse_loss(entry)
                except ValueError as exc:
                    raise ToolkitError(str(exc)) from None
        if self.ab_unit not in (128.0, 110.0):
            raise ToolkitError(
                f"--ab-unit {self.ab_unit:g}: choose 128 (a*/b* half-range) or 110 (the paper's code)"
            )
        if not 0 < self.region_floor <= 1:
            raise ToolkitError(
                f"--region-floor {self.region_floor:g}: the weight off the face, in (0, 1] "
                "(1: no weighting)"
            )
        if self.frames < 1:
            raise ToolkitError(
                f"--frames {self.frames}: the losses need at least 1 video frame (the paper uses 4)"
            )
        if self.timesteps is not None:
            check_timesteps(self.timesteps)
        if self.batch_size < 1:
            raise ToolkitError(f"--batch-size {self.batch_size}: at least 1 photo per step")
        if self.offload not in OFFLOADS:
            raise ToolkitError(f"--offload {self.offload}: choose from {', '.join(OFFLOADS)}")
        if self.dtype not in MODEL_DTYPES:
            raise ToolkitError(f"--dtype {self.dtype}: choose from {', '.join(MODEL_DTYPES)}")
        check_distortions("--eot", self.eot)
        members = [m for m, _ in self.ensemble_members()]
        if (
            any(not m for m in members)
            or len(set(members)) != len(members)
            or self.model in members
        ):
            raise ToolkitError(
                f"--ensemble {','.join(self.ensemble)}: name each further model once, as MODEL or "
                f"MODEL=PROFILE.json, and not the main model {self.model}"
            )
        if members and not METHODS[self.method].optimises:
            raise ToolkitError(
                f"--ensemble: {self.method} does not optimise against a model; leave --ensemble out"
            )
        if self.in_place and is_url(self.out):
            raise ToolkitError(
                f"--in-place --out {self.out}: in place keeps each original beside its cloak on "
                "this disk; give a local --out, or leave --in-place out"
            )
        if self.reference_steps < 1 or self.work_max_side < MIN_SIDE:
            raise ToolkitError("reference_steps must be >= 1 and work_max_side >= 16")

    def ensemble_members(self) -> list[tuple[str, str | None]]:
        """`--ensemble` as (model, profile path or None) pairs."""
        return [
            (m.partition("=")[0].strip(), m.partition("=")[2].strip() or None)
            for m in self.ensemble
        ]


# ProtectConfig fields that say where and how fast, not what: they are left out of the settings a
# sidecar records (checkpointing gives the same cloak with less memory), and a run that differs
# only in them is the same work.
NOT_SETTINGS = (
    "images",
    "out",
    "device",
    "in_place",
    "record_paths",
    "reference_cache",
    "checkpointing",
    "offload",
    "batch_size",
)


def is_distortion(name: str) -> bool:
    """Whether `distort` knows `name` (checked before any video is generated)."""
    return name in ("none", "vae", "blur", "noise", "platform") or bool(
        re.fullmatch(r"jpeg(\d+)", name)
        and 1 <= int(name[4:]) <= 100
        or re.fullmatch(r"resize(\d+)", name)
        and 1 <= int(name[6:]) <= 100
        or re.fullmatch(r"h264crf(\d+)", name)
        and 1 <= int(name[7:]) <= 51
    )


def _has_pyav() -> bool:
    from diffusers.utils import is_av_available  # diffusers only when H.264 is asked for

    return is_av_available()


def check_distortions(flag: str, names: tuple[str, ...]) -> None:
    """Refuse, in one line, the names `distort` does not know, and H.264 where PyAV is missing.

    Raises:
        ToolkitError: naming `flag`, the bad names, and the fix.
    """
    unknown = [d for d in names if not is_distortion(d)]
    if unknown:
        raise ToolkitError(
            f"{flag} {','.join(unknown)}: unknown distortion; choose from none, "
            f"{', '.join(DISTORTIONS)}, jpegQ, resizeP or h264crfN (N in 1-51)"
        )
    codec = [d for d in names if d.startswith("h264crf")]
    if codec and not _has_pyav():
        raise ToolkitError(
            f"{flag} {','.join(codec)}: H.264 needs PyAV: `pip install anti-i2v[ltx2]` (or "
            "`pip install av`), then run the same command"
        )


@dataclass(frozen=True)
class EvaluateConfig:
    """Settings of `anti-i2v evaluate`; written into summary.json."""

    model: str
    clean: str
    protected: tuple[str, ...]
    out: str
    seeds: int = 1
    distortions: tuple[str, ...] = DISTORTIONS  # the CLI's default too: API and CLI agree
    models: tuple[str, ...] = ()
    # Identity judges, every one in every table; the first is the headline (see protect.evaluate.identity)
    identity: tuple[str, ...] = ("mini-identity", "mini-identity-v1")
    reference: str | None = None  # a transformers vision encoder (DINO, CLIP): hub id or folder
    steps: int = 25
    device: str = "auto"
    dtype: str = "float32"  # the eval models' weights and forward (MODEL_DTYPES)
    offload: str = "none"  # diffusers' CPU offload for eval models larger than the GPU (OFFLOADS)
    # The equal-visibility frontier: each method re-cloaked at these budgets (1/255 units)
    budgets: tuple[float, ...] = ()
    # The profiles the cloaks were made with (main and --ensemble models), to re-cloak at other
    # budgets; each cloak set finds its own by hash
    profiles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_out_given(self.out)
        check_distortions("--distortions", self.distortions)
        if self.dtype not in MODEL_DTYPES:
            raise ToolkitError(f"--dtype {self.dtype}: choose from {', '.join(MODEL_DTYPES)}")
        if self.offload not in OFFLOADS:
            raise ToolkitError(f"--offload {self.offload}: choose from {', '.join(OFFLOADS)}")
        if self.seeds < 1 or self.steps < 1:
            raise ToolkitError(
                f"--seeds {self.seeds} --steps {self.steps}: each must be at least 1"
            )
        if not self.protected:
            raise ToolkitError("pass at least one --protected folder")
        if not self.identity or len(set(self.identity)) != len(self.identity):
            raise ToolkitError(
                f"--identity {','.join(self.identity)}: name at least one judge, each once"
            )
        bad = [b for b in self.budgets if not (math.isfinite(b) and 0 < b <= 255)]
        if bad or len(set(self.budgets)) != len(self.budgets) or len(self.budgets) == 1:
            raise ToolkitError(
                f"--budgets {','.join(f'{b:g}' for b in self.budgets)}: give two or more distinct "
                "budgets in (0, 255] (1/255 units), e.g. 4,8,12,16"
            )
