"""The evaluation's results: typed rows, the cloak sets they come from, and their summary statistics.

`EvalRow` is one line of results.csv (and of frontier.csv); `summarise` turns rows into
summary.json's table (means with bootstrap intervals per method, distortion, eval model and
judge), its paired differences and the amplification.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from anti_i2v.core.common import TOOLKIT_VERSION, atomic_write
from anti_i2v.models.registry import judge_name
from anti_i2v.protect.config import EvaluateConfig, ProtectConfig
from anti_i2v.protect.methods import METHODS
from anti_i2v.protect.metrics import PSNR_CAP, bootstrap_ci
from anti_i2v.protect.sidecar import Sidecar

DEFAULT_EPS, DEFAULT_AB_UNIT = ProtectConfig.eps, ProtectConfig.ab_unit


@dataclass(frozen=True)
class CloakMeasures:
    """How visible a cloak is, and how much identity it already removes (the `cloak_*` columns)."""

    cloak_psnr: float  # dB against the photo (inf when identical)
    cloak_ssim: float
    cloak_delta_e: float  # mean CIEDE2000
    cloak_delta_e_p95: float  # its 95th percentile over pixels
    cloak_lpips: float  # NaN without LPIPS weights
    cloak_ism: dict[str, float]  # judge -> the cloak photo's own identity similarity to the photo


@dataclass(frozen=True)
class VideoMeasures:
    """One generated video judged against the clean photo and the clean photo's video."""

    ism: dict[str, float]  # judge -> mean identity similarity of frames 1.. to the clean photo
    psnr_video: float  # dB against the clean photo's video (same seed)
    ssim_video: float
    temporal: float  # mean SSIM of consecutive frames
    ref: float  # reference-encoder similarity (NaN without an encoder)


@dataclass(frozen=True)
class EvalRow:
    """One line of results.csv: a (photo, method, budget, distortion, eval model, seed) video, as one judge sees it."""

    photo: str
    method: str
    made_on: str
    budget: float  # the cloak's eps in 1/255 units of its method's space (0 for the clean photo)
    distortion: str
    eval_model: str
    seed: int
    judge: str  # the identity judge behind ism_* and cloak_ism
    ism_clean: float
    ism_protected: float
    psnr_video: float
    ssim_video: float
    temporal: float
    cloak_psnr: float
    cloak_ssim: float
    cloak_delta_e: float
    cloak_ism: float
    cloak_lpips: float
    ref_clean: float
    ref_protected: float
    # Added after the first shipped results: a CSV without the column reads it as NaN.
    cloak_delta_e_p95: float = math.nan

    @classmethod
    def rows(
        cls, key: dict, clean: VideoMeasures, video: VideoMeasures, cloak: CloakMeasures
    ) -> list[EvalRow]:
        """One row per judge from a key (photo, method, made_on, budget, distortion, eval_model, seed)."""
        return [
            cls(
                **key,
                judge=judge,
                ism_clean=clean.ism[judge],
                ism_protected=video.ism[judge],
                psnr_video=video.psnr_video,
                ssim_video=video.ssim_video,
                temporal=video.temporal,
                cloak_psnr=cloak.cloak_psnr,
                cloak_ssim=cloak.cloak_ssim,
                cloak_delta_e=cloak.cloak_delta_e,
                cloak_delta_e_p95=cloak.cloak_delta_e_p95,
                cloak_ism=cloak.cloak_ism[judge],
                cloak_lpips=cloak.cloak_lpips,
                ref_clean=clean.ref,
                ref_protected=video.ref,
            )
            for judge in video.ism
        ]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def read_csv(cls, path: Path) -> list[EvalRow]:
        """The rows of a results.csv (`write_csv`'s format), typed as they were written."""
        kinds = {f.name: f.type for f in fields(cls)}
        with Path(path).open(newline="") as f:
            reader = csv.DictReader(f)
            missing = set(kinds) - set(reader.fieldnames or ()) - set(LATER_COLUMNS)
            if missing:
                raise ValueError(f"{path} lacks the columns {', '.join(sorted(missing))}")
            return [
                cls(**{k: _parse(kinds[k], v) for k, v in row.items() if k in kinds})
                for row in reader
            ]


LATER_COLUMNS = ("cloak_delta_e_p95",)  # columns older results.csv files lack (read as NaN)


def _parse(kind: str, text: str):
    return int(text) if kind == "int" else float(text) if kind == "float" else text


COLUMNS = [f.name for f in fields(EvalRow)]
# Measures whose model may be absent (no weights offline): NaN in the CSV, null in the summary.
OPTIONAL = ("cloak_lpips", "ref_clean", "ref_protected")


@dataclass(frozen=True)
class CloakSet:
    """One `--protected` folder: its row label, cloaks by photo name, and how they were made."""

    label: str
    files: dict[str, Path]  # photo name -> cloak
    made_on: str  # the model the cloaks were made on ("unknown" without a sidecar)
    budget: float  # eps in 1/255 units of the method's space (NaN without a sidecar)
    recipe: Sidecar | None = None  # one of its sidecars: what `--budgets` re-cloaks with
    named: bool = False  # the label is the user's (NAME=DIR), kept for its frontier curve too
    # photo name -> its readable sidecar (edited ones too: `cloak_problem` names them)
    sidecars: dict[str, Sidecar] = field(default_factory=dict)


def method_label(settings: dict, with_eps: bool = True) -> str:
    """A cloak's row label: its method, plus its space, budget and a*/b* unit where not the defaults.

    E.g. `anti-i2v (lab)`, `rgb-pgd (eps 20/255)` or `anti-i2v (+ mini-svd)` (an ensemble): each
    variant gets a row of its own. Without `with_eps` the label names the recipe a frontier
    sweeps over budgets.
    """
    method, space = settings["method"], settings.get("space")
    eps, ab_unit = settings.get("eps", DEFAULT_EPS), settings.get("ab_unit", DEFAULT_AB_UNIT)
    default_space = METHODS[method].space if method in METHODS else space
    qualifiers = (
        ([space] if space != default_space else [])
        + ([f"eps {eps:g}/255"] if with_eps and eps != DEFAULT_EPS else [])
        + ([f"a*b*/{ab_unit:g}"] if ab_unit != DEFAULT_AB_UNIT else [])
        + ([f"eot {'+'.join(settings['eot'])}"] if settings.get("eot") else [])
        + ([settings["optimizer"]] if settings.get("optimizer", "sign") != "sign" else [])
        + (
            [f"{settings['alpha_decay']} alpha"]
            if settings.get("alpha_decay", "constant") != "constant"
            else []
        )
        + (
            [f"+ {'+'.join(m['model'] for m in settings['ensemble'])}"]
            if settings.get("ensemble")
            else []
        )
    )
    return f"{method} ({', '.join(qualifiers)})" if qualifiers else method


def json_num(x):
    return None if isinstance(x, float) and not math.isfinite(x) else x


def write_csv(rows: list[EvalRow], path: Path) -> None:
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.to_json().items()}
            )


# The measures the summary averages per group, and those the paired differences compare.
SUMMARISED = (
    "ism_clean",
    "ism_protected",
    "ism_drop",
    "psnr_video",
    "ssim_video",
    "temporal",
    "cloak_psnr",
    "cloak_ssim",
    "cloak_delta_e",
    "cloak_ism",
    *OPTIONAL,
)
PAIRED = ("ism_drop", "psnr_video", "ssim_video")


def row_value(r: EvalRow, key: str) -> float:
    """One row's value of a summarised measure: the relative ISM drop is derived, PSNRs are capped."""
    if key == "ism_drop":
        return (r.ism_clean - r.ism_protected) / max(r.ism_clean, 1e-6)
    value = getattr(r, key)
    # Identical pairs: inf
    return min(value, PSNR_CAP) if key in ("psnr_video", "cloak_psnr") else value


# Below this mean cloak ISM drop the amplification is not given: the ratio would divide by the
# judge's own jitter (random noise at 8/255 drops a cloak's ISM by 0.0003 and read -1.4).
AMPLIFICATION_FLOOR = 0.01


def amplification(rows: list[EvalRow]) -> float | None:
    """The video's identity drop over the cloak photo's own: mean(ism_clean - ism_protected) / mean(1 - cloak_ism).

    Above 1, generation loses more identity than the cloak already took from the photo (the
    effect the paper claims); below 1, the model repairs part of the cloak's change. A ratio of
    means, so photos with a near-zero cloak drop do not dominate. None when the cloaks' own mean
    drop is under `AMPLIFICATION_FLOOR`: there is nothing for the video to amplify.
    """
    cloak_drop = float(np.mean([1 - r.cloak_ism for r in rows]))
    if cloak_drop < AMPLIFICATION_FLOOR:
        return None
    return float(np.mean([r.ism_clean - r.ism_protected for r in rows])) / cloak_drop


def protected_spec(spec: str) -> tuple[str | None, Path]:
    """A `--protected` argument, `DIR` or `NAME=DIR`: (the user's row name or None, the folder).

    A folder whose own name holds `=` is taken whole when it exists.
    """
    name, sep, folder = spec.partition("=")
    if sep and not Path(spec).exists():
        return name, Path(folder)
    return None, Path(spec)


def shareable_config(cfg: EvaluateConfig) -> dict:
    """The settings as summary.json records them: folder and file names, never a user's paths."""

    def name(spec: str) -> str:
        label, folder = protected_spec(spec)
        return folder.name if label is None else f"{label}={folder.name}"

    d = asdict(cfg)
    d.pop("out")
    d["clean"] = Path(cfg.clean).name
    d["protected"] = [name(p) for p in cfg.protected]
    d["identity"] = [judge_name(j) for j in cfg.identity]
    # Profiles are usually all named profile.json, so their folder tells them apart.
    d["profiles"] = [f"{Path(p).parent.name}/{Path(p).name}" for p in cfg.profiles]
    return d


def summarise(rows: list[EvalRow], cfg: EvaluateConfig) -> dict:
    """Means and bootstrap intervals per (method, distortion, eval model, judge), robustness and amplification."""
    groups: dict[tuple[str, str, str, str], list[EvalRow]] = {}
    for r in rows:
        groups.setdefault((r.method, r.distortion, r.eval_model, r.judge), []).append(r)
    table = []
    for (method, dist, model, judge), rs in groups.items():
        entry = {
            "method": method,
            "distortion": dist,
            "eval_model": model,
            "judge": judge,
            "n": len(rs),
        }
        for k in SUMMARISED:
            v = np.array([row_value(r, k) for r in rs], dtype=np.float64)
            if np.isnan(v).all():  # an optional measure without its model
                entry[k], entry[f"{k}_ci95"] = None, None
                continue
            entry[k] = float(v.mean())
            entry[f"{k}_ci95"] = bootstrap_ci(v)
        entry["amplification"] = amplification(rs) if method != "clean" else None
        table.append(entry)
    base = {
        (e["method"], e["eval_model"], e["judge"]): e["ism_drop"]
        for e in table
        if e["distortion"] == "none"
    }
    for e in table:
        b = base.get((e["method"], e["eval_model"], e["judge"]))
        # The share of the undistorted drop that survives a distortion; over a drop under
        # the amplification floor it is a ratio of noise ("-6011%"), so there is none.
        e["ism_drop_surviving"] = (
            e["ism_drop"] / b
            if b is not None and b >= AMPLIFICATION_FLOOR and e["method"] != "clean"
            else None
        )
    return {
        "config": shareable_config(cfg),
        "judges": [judge_name(j) for j in cfg.identity],  # the first is the headline judge
        "rows": len(rows),
        "table": table,
        "paired": paired_differences(rows),
        "toolkit_version": TOOLKIT_VERSION,
        "psnr_cap_db": PSNR_CAP,
    }


def per_photo(
    rows: list[EvalRow], key: str = "ism_drop", distortion: str = "none"
) -> dict[tuple[str, str], dict[str, float]]:
    """(judge, method) -> photo -> `key` (a summarised measure, `row_value`), averaged over the
    generation seeds, for one distortion; the clean rows are left out."""
    acc: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in rows:
        if r.distortion == distortion and r.method != "clean":
            acc.setdefault((r.judge, r.method), {}).setdefault(r.photo, []).append(
                row_value(r, key)
            )
    return {k: {p: float(np.mean(v)) for p, v in d.items()} for k, d in acc.items()}


def paired_difference(a: dict[str, float], b: dict[str, float]) -> dict:
    """`a` minus `b` over `a`'s photos (photo -> value): the mean, its 95% bootstrap interval
    over photos, and the photos where `a` is ahead."""
    diff = np.array([a[p] - b[p] for p in sorted(a)])
    return {"diff": float(diff.mean()), "ci95": bootstrap_ci(diff), "wins": int((diff > 0).sum())}


def paired_differences(rows: list[EvalRow]) -> list[dict]:
    """Method A minus method B on the same photos and seeds (undistorted), per judge, with bootstrap intervals.

    Two methods' marginal intervals can overlap while one beats the other on nearly every photo;
    the paired difference is the comparison that answers "does A protect better than B".
    """
    by: dict[tuple[str, str, str], dict[tuple[str, int], EvalRow]] = {}
    for r in rows:
        if r.distortion == "none" and r.method != "clean":
            by.setdefault((r.eval_model, r.judge, r.method), {})[(r.photo, r.seed)] = r
    out = []
    for (model, judge, a), ra in sorted(by.items()):
        for (model_b, judge_b, b), rb in sorted(by.items()):
            keys = sorted(ra.keys() & rb.keys())
            # Each unordered pair once, on one model and under one judge
            if (model_b, judge_b) != (model, judge) or a >= b or not keys:
                continue
            entry = {"eval_model": model, "judge": judge, "a": a, "b": b, "n": len(keys)}
            wins = 0
            for name in PAIRED:
                d = paired_difference(
                    {k: row_value(ra[k], name) for k in keys},
                    {k: row_value(rb[k], name) for k in keys},
                )
                entry[f"{name}_diff"], entry[f"{name}_diff_ci95"] = d["diff"], d["ci95"]
                wins = d["wins"] if name == "ism_drop" else wins
            entry["ism_drop_wins"] = wins
            out.append(entry)
    return out
