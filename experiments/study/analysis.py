"""From a study's videos to its answer: per-arm curves, the pre-registered comparisons, the rank.

`analyse(rows, protocol)` reads evaluate's typed rows (one per video, every cloak labelled
`ARM@BUDGET#CLOAKSEED`) and returns a `StudyReport`: what report.json holds and the README
renders. Nothing here reads a file or a model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from anti_i2v.evaluate.results import EvalRow, row_value
from anti_i2v.experiments.study.config import FAST_ARM
from anti_i2v.experiments.study.protocol import POOLED_RANDOM, QUESTION
from anti_i2v.experiments.study.stats import (
    Estimate,
    Rank,
    holm,
    mean_curve_read_off,
    nanmean,
    profile_rank,
    read_off,
)
from anti_i2v.experiments.study.stats import estimate as nested_estimate

SEED = 0  # of every bootstrap resample
SPAN = (
    2.0,
    6.0,
)  # mean ΔE2000 every arm's budgets should reach, from "hardly seen" to plainly seen


def cloak_label(arm: str, budget: float, cloak_seed: int) -> str:
    """The evaluate label of one cloak set (`ARM@BUDGET#SEED`), parsed back by `parse_label`."""
    return f"{arm}@{budget:g}#{cloak_seed}"


def parse_label(label: str) -> tuple[str, float, int]:
    arm, _, rest = label.rpartition("@")
    budget, _, seed = rest.partition("#")
    return arm, float(budget), int(seed)


@dataclass
class Measured:
    """One arm's measurements, as arrays over portraits P, cloak seeds C, generation seeds G, budgets B."""

    delta_e: np.ndarray  # (P, C, B) mean CIEDE2000 of each cloak
    delta_e_p95: np.ndarray  # (P, C, B)
    ssim: np.ndarray  # (P, C, B)
    drop: np.ndarray  # (P, C, G, B) relative ISM drop of each video


def measured(rows: list[EvalRow], protocol: dict) -> tuple[list[str], dict[str, Measured]]:
    """The photos (sorted) and each arm's arrays (NaN where a video is missing)."""
    budgets = protocol["budgets"]
    c_n, g_n = len(protocol["cloak_seeds"]), len(protocol["generation_seeds"])
    rows = [r for r in rows if r.distortion == "none" and r.method != "clean"]
    photos = sorted({r.photo for r in rows})
    arms = [a["name"] for a in protocol["arms"]]
    shape = (len(photos), c_n, len(budgets))
    out = {
        a: Measured(
            np.full(shape, np.nan),
            np.full(shape, np.nan),
            np.full(shape, np.nan),
            np.full((len(photos), c_n, g_n, len(budgets)), np.nan),
        )
        for a in arms
    }
    p_index = {p: i for i, p in enumerate(photos)}
    b_index = {float(b): i for i, b in enumerate(budgets)}
    for r in rows:
        arm, budget, c = parse_label(r.method)
        if arm not in out or budget not in b_index:
            continue
        m, p, b = out[arm], p_index[r.photo], b_index[budget]
        m.delta_e[p, c, b] = r.cloak_delta_e
        m.delta_e_p95[p, c, b] = r.cloak_delta_e_p95
        m.ssim[p, c, b] = r.cloak_ssim
        m.drop[p, c, r.seed, b] = row_value(r, "ism_drop")
    return photos, out


def _est(e: Estimate) -> dict:
    return asdict(e) | {"ci95": list(e.ci95) if e.ci95 else None}


@dataclass(frozen=True)
class ComparisonResult:
    """One comparison at one visibility: a minus b, with its nested interval and p-values."""

    a: str
    b: str
    why: str
    delta_e: float
    mean: float | None
    ci95: list[float] | None
    n: int
    p: float | None
    p_holm: float | None  # None for the secondary visibilities (not corrected, not tested)
    significant: bool | None

    @property
    def name(self) -> str:
        return f"{self.a} - {self.b}"


@dataclass(frozen=True)
class StudyReport:
    """report.json: the question, the protocol's hash, every arm's numbers and the verdicts."""

    question: str
    model: str
    judge: str
    protocol_sha256: str
    photos: int  # evaluation portraits
    selection: int
    alpha: float
    headline_delta_e: float
    delta_e: list[float]
    budgets: list[float]
    layers: dict[str, dict]  # configuration -> {"collapse": [...], "anchors": [...]}
    arms: dict[str, dict]  # arm -> {"visibility": [...], "at_delta_e": {...}, "mean_curve": {...}}
    primary: list[ComparisonResult]  # at the headline ΔE, Holm-corrected
    secondary: list[ComparisonResult]  # the other visibilities, uncorrected
    rank: Rank | None
    verdicts: list[str] = field(default_factory=list)
    command: str = ""  # the command that reruns the study (folder names, not paths)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> StudyReport:
        kw = dict(data)
        kw["primary"] = [ComparisonResult(**c) for c in data["primary"]]
        kw["secondary"] = [ComparisonResult(**c) for c in data["secondary"]]
        kw["rank"] = Rank(**data["rank"]) if data["rank"] else None
        return cls(**kw)


def protocol_sha256(protocol: dict) -> str:
    return hashlib.sha256(json.dumps(protocol, sort_keys=True).encode()).hexdigest()


def analyse(rows: list[EvalRow], protocol: dict, layers: dict[str, dict]) -> StudyReport:
    """Everything the study reports, from evaluate's rows (see the module docstring)."""
    analysis = protocol["analysis"]
    at = tuple(analysis["read_at_delta_e"])
    headline = float(analysis["headline_delta_e"])
    reps = int(analysis["reps"])
    photos, data = measured(rows, protocol)
    read = {a: read_off(m.delta_e, m.drop, at) for a, m in data.items()}  # (P, C, G, T)
    draws = [a for a in read if a.startswith("random-layers-")]
    if draws:  # the K draws as one arm: each portrait's read-off averaged over the draws
        read[POOLED_RANDOM] = nanmean(np.stack([read[a] for a in draws]), axis=0)
    arms = {a: arm_summary(read[a], at, reps, m, protocol["budgets"]) for a, m in data.items()}
    if draws:
        arms[POOLED_RANDOM] = arm_summary(read[POOLED_RANDOM], at, reps)
    primary, secondary = compare(
        read, analysis["comparisons"], at, headline, reps, analysis["alpha"]
    )
    h = f"{headline:g}"
    scores = {
        a: arms[a]["at_delta_e"][h]["mean"]
        for a in ("profile-layers", *draws, "pilot-layers", "attention-layers")
        if a in arms and arms[a]["at_delta_e"][h]["mean"] is not None
    }
    rank = profile_rank(scores, "profile-layers", draws)
    report = StudyReport(
        question=QUESTION,
        model=protocol["model"],
        judge=protocol["judge"],
        protocol_sha256=protocol_sha256(protocol),
        photos=len(photos),
        selection=len(protocol["split"]["selection"]),
        alpha=float(analysis["alpha"]),
        headline_delta_e=headline,
        delta_e=list(at),
        budgets=[float(b) for b in protocol["budgets"]],
        layers=layers,
        arms=arms,
        primary=primary,
        secondary=secondary,
        rank=rank,
    )
    return replace(report, verdicts=verdicts(report))


def arm_summary(
    read: np.ndarray,
    at: tuple[float, ...],
    reps: int,
    m: Measured | None = None,
    budgets: list[float] | None = None,
) -> dict:
    """One arm's entry in report.json: its drop at each visibility (per-portrait read-offs
    `read` `(P, C, G, T)`, nested intervals) and, from its measurements `m`, its visibility per
    budget and the mean-curve reading (none for the pooled random draws)."""
    entry = {
        "visibility": [],
        "at_delta_e": {
            f"{t:g}": _est(nested_estimate(read[..., k], reps, SEED)) for k, t in enumerate(at)
        },
        "mean_curve": {},
    }
    if m is not None and budgets is not None:
        entry["visibility"] = [
            {
                "budget": float(b),
                "delta_e_mean": _mean(m.delta_e[:, :, j]),
                "delta_e_p95": _mean(m.delta_e_p95[:, :, j]),
                "ssim": _mean(m.ssim[:, :, j]),
            }
            for j, b in enumerate(budgets)
        ]
        readings = mean_curve_read_off(m.delta_e, m.drop, at)
        entry["mean_curve"] = {f"{t:g}": v for t, v in zip(at, readings, strict=True)}
    return entry


def compare(
    read: dict[str, np.ndarray],
    comparisons: list[dict],
    at: tuple[float, ...],
    headline: float,
    reps: int,
    alpha: float,
) -> tuple[list[ComparisonResult], list[ComparisonResult]]:
    """Every pre-registered comparison at every visibility, paired per portrait and seed:
    Holm-corrected at the headline visibility (primary), uncorrected elsewhere (secondary)."""
    primary, secondary = [], []
    for k, t in enumerate(at):
        found = [
            (c, nested_estimate(read[c["a"]][..., k] - read[c["b"]][..., k], reps, SEED, test=True))
            for c in comparisons
        ]
        is_headline = abs(t - headline) < 1e-9
        adjusted = holm([e.p for _, e in found]) if is_headline else [None] * len(found)
        for (c, e), ph in zip(found, adjusted, strict=True):
            result = ComparisonResult(
                a=c["a"],
                b=c["b"],
                why=c["why"],
                delta_e=float(t),
                mean=e.mean,
                ci95=list(e.ci95) if e.ci95 else None,
                n=e.n,
                p=e.p,
                p_holm=ph,
                significant=None if ph is None else bool(ph < alpha),
            )
            (primary if is_headline else secondary).append(result)
    return primary, secondary


def _mean(values: np.ndarray) -> float | None:
    v = float(nanmean(values, axis=None))
    return v if np.isfinite(v) else None


def _signed(e: ComparisonResult) -> str:
    ci = f" [{e.ci95[0]:+.4f}, {e.ci95[1]:+.4f}]" if e.ci95 else ""
    p = f", Holm p = {e.p_holm:.3g}" if e.p_holm is not None else ""
    return f"{e.mean:+.4f}{ci}{p}, {e.n} portraits"


# Registered comparisons each stated in a sentence of its own, in this order, after the rank
STATED = {
    ("profile-layers", POOLED_RANDOM): "Profile layers minus random layers (pooled draws)",
    ("attention-target", "colour-space"): (
        "The attention term on top of the colour space (attention-target minus colour-space)"
    ),
    ("unrolled", "colour-space"): "Two sampler steps instead of one (unrolled minus colour-space)",
    ("face-region", "anti-i2v"): "The change moved towards the face (face-region minus anti-i2v)",
    ("attention-layers", POOLED_RANDOM): (
        "Anchors by the attention share minus random layers (pooled draws)"
    ),
    ("attention-layers", "profile-layers"): "Anchors by the attention share minus the profile's",
}


def verdicts(report: StudyReport) -> list[str]:
    """The answer in sentences, generated from the numbers (the README's top)."""
    h = f"ΔE {report.headline_delta_e:g}"
    out = []
    against = [c for c in report.primary if c.b == "rgb-pgd" and c.mean is not None]
    wins = [c for c in against if c.significant and c.mean > 0]
    losses = [c for c in against if c.significant and c.mean < 0]
    m, tested = len(report.primary), sum(c.p is not None for c in report.primary)
    untested = f", {m - tested} of them untestable: too few curves reach it" if tested < m else ""
    if wins:
        out += [
            f"At {h}, {c.a} removes more identity than RGB PGD after Holm correction: {_signed(c)}."
            for c in wins
        ]
    else:
        out.append(
            f"At {h}, no arm removes more identity than RGB PGD after Holm correction "
            f"({m} pre-registered comparisons{untested}; family-wise α {report.alpha:g})."
        )
    out += [f"RGB PGD removes more identity than {c.a} at {h}: {_signed(c)}." for c in losses]
    colour = next((c for c in against if c.a == "colour-space"), None)
    if colour is not None and colour not in losses:  # a loss already said it
        out.append(
            "The colour space alone (dual space, diffusion loss only) minus RGB PGD: "
            f"{_signed(colour)}."
        )
    r = report.rank
    if r is not None:
        chance = "better than chance" if r.p < report.alpha else "no better than chance"
        out.append(
            f"The profile's layers rank {r.rank} of {r.of} layer configurations tried at {h} "
            f"(permutation p = {r.p:.3g} against {len([k for k in r.scores if k.startswith('random-layers-')])} "
            f"random draws): {chance}."
        )
    primary = {(c.a, c.b): c for c in report.primary}
    for (a, b), lead in STATED.items():
        c = primary.get((a, b))
        if c is not None and c.mean is not None:
            out.append(f"{lead}: {_signed(c)}.")
    fast = primary.get((FAST_ARM, "anti-i2v"))
    if fast is not None and fast.mean is not None and fast.ci95:
        lo, hi = fast.ci95
        reached = (
            "falls short of the full-step cloak"
            if hi < 0
            else "does better than the full-step cloak"
            if lo > 0
            else "no shortfall against the full-step cloak is shown (the interval contains 0)"
        )
        out.append(f"The fast lever ({FAST_ARM}) minus full Anti-I2V: {_signed(fast)}: {reached}.")
    short = [
        a
        for a, d in report.arms.items()
        if d["at_delta_e"].get(f"{report.headline_delta_e:g}", {}).get("n", 0) < report.photos
    ]
    span = (min(report.delta_e), max(report.delta_e))  # where the curves are read
    narrow = {
        a: (min(v), max(v))
        for a, d in report.arms.items()
        if (v := [b["delta_e_mean"] for b in d["visibility"] if b["delta_e_mean"] is not None])
        and (min(v) > span[0] or max(v) < span[1])
    }
    if narrow:
        out.append(
            f"On average the budgets did not span ΔE {span[0]:g}-{span[1]:g} for "
            + ", ".join(f"{a} ({lo:.1f}-{hi:.1f})" for a, (lo, hi) in narrow.items())
            + "; a denser or wider --budgets would."
        )
    if short:
        out.append(
            f"Not every portrait's curve reaches {h} for {', '.join(short)}; those portraits are "
            "left out of that arm's numbers (the n beside each)."
        )
    return out
