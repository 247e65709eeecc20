"""The evaluate job: videos from clean and protected photos, metrics, robustness, transfer, report.

For every photo (matched by name between `--clean` and each `--protected` folder), every eval
model and seed, the model generates a video from the clean photo and from the protected photo
(after each distortion on the main model; the `--models` transfer models see the undistorted
cloak, which keeps a transfer run to one video per photo and method); identity similarity (ISM)
is measured against the clean photo with the identity encoder. Generated videos are cached under `OUT/.videos/`, so a re-run is cheap.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from analyses.reference import VisionEncoder, load_vision_encoder
from probe.backbones import Backbone, load_backbone, resolve_model
from probe.common import (
    TOOLKIT_VERSION,
    ToolkitError,
    atomic_write,
    cached_tensors,
    check_writable_dir,
    pick_device,
    to_uint8,
    write_text_atomic,
)
from probe.images import gather_images, load_photo
from probe.video import strip
from protect.config import EvaluateConfig, ProtectConfig
from protect.evaluate.distortions import distort
from protect.evaluate.identity import load_identity
from protect.evaluate.metrics import (
    PSNR_CAP,
    bootstrap_ci,
    delta_e,
    identity_similarity,
    psnr,
    ssim,
    ssim_video,
    temporal_coherence,
)
from protect.methods import METHODS
from protect.perceptual import load_lpips
from protect.sidecar import Sidecar

console = Console(stderr=True)
DEFAULT_EPS, DEFAULT_AB_UNIT = ProtectConfig.eps, ProtectConfig.ab_unit


@dataclass(frozen=True)
class CloakMeasures:
    """How visible a cloak is, and how much identity it already removes (the `cloak_*` columns)."""

    cloak_psnr: float  # dB against the photo (inf when identical)
    cloak_ssim: float
    cloak_delta_e: float  # mean CIEDE2000
    cloak_ism: float  # the cloak photo's own identity similarity to the photo
    cloak_lpips: float  # NaN without LPIPS weights


@dataclass(frozen=True)
class VideoMeasures:
    """One generated video judged against the clean photo and the clean photo's video."""

    ism: float  # mean identity similarity of frames 1.. to the clean photo
    psnr_video: float  # dB against the clean photo's video (same seed)
    ssim_video: float
    temporal: float  # mean SSIM of consecutive frames
    ref: float  # reference-encoder similarity (NaN without an encoder)


@dataclass(frozen=True)
class EvalRow:
    """One line of results.csv: a (photo, method, distortion, eval model, seed) video."""

    photo: str
    method: str
    made_on: str
    distortion: str
    eval_model: str
    seed: int
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

    @classmethod
    def of(
        cls, key: dict, clean: VideoMeasures, video: VideoMeasures, cloak: CloakMeasures
    ) -> EvalRow:
        """A row from its key (photo, method, made_on, distortion, eval_model, seed) and measures."""
        return cls(
            **key,
            ism_clean=clean.ism,
            ism_protected=video.ism,
            psnr_video=video.psnr_video,
            ssim_video=video.ssim_video,
            temporal=video.temporal,
            **asdict(cloak),
            ref_clean=clean.ref,
            ref_protected=video.ref,
        )

    def to_json(self) -> dict:
        return asdict(self)


COLUMNS = [f.name for f in fields(EvalRow)]
# Measures whose model may be absent (no weights offline): NaN in the CSV, null in the summary.
OPTIONAL = ("cloak_lpips", "ref_clean", "ref_protected")


@dataclass
class Judges:
    """The models that judge videos and cloaks: identity (always), reference encoder and LPIPS (optional)."""

    identity: object  # frames (N, 3, H, W) in [0, 1] -> unit embeddings (N, D)
    reference: VisionEncoder | None
    lpips: torch.nn.Module | None

    @classmethod
    def load(cls, cfg: EvaluateConfig) -> Judges:
        return cls(
            load_identity(cfg.identity),
            load_vision_encoder(cfg.reference, "reference similarity") if cfg.reference else None,
            load_lpips(purpose="cloak_lpips is left empty"),
        )

    def reference_similarity(self, frames: torch.Tensor, photo: torch.Tensor) -> float:
        """Mean cosine of the frames' reference embeddings with the clean photo's (NaN without an encoder)."""
        if self.reference is None:
            return math.nan
        return float((self.reference.embed(frames) @ self.reference.embed(photo[None])[0]).mean())

    def lpips_distance(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """LPIPS of two images in [0, 1] (NaN without its weights)."""
        if self.lpips is None:
            return math.nan
        with torch.no_grad():
            return float(self.lpips(a[None].float() * 2 - 1, b[None].float() * 2 - 1).mean())

    def cloak(self, protected: torch.Tensor, photo: torch.Tensor) -> CloakMeasures:
        """Measures of a cloak `(3, H, W)` against its photo."""
        return CloakMeasures(
            cloak_psnr=psnr(protected, photo),
            cloak_ssim=ssim(protected, photo),
            cloak_delta_e=delta_e(protected, photo),
            cloak_ism=identity_similarity(self.identity, protected[None], photo),
            cloak_lpips=self.lpips_distance(protected, photo),
        )

    def video(
        self, video: torch.Tensor, clean_video: torch.Tensor, photo: torch.Tensor
    ) -> VideoMeasures:
        """Measures of a video `(F, 3, H, W)`; frame 0 is skipped for identity (it is the input)."""
        return VideoMeasures(
            ism=identity_similarity(self.identity, video[1:], photo),
            psnr_video=psnr(video, clean_video),
            ssim_video=ssim_video(video, clean_video),
            temporal=temporal_coherence(video),
            ref=self.reference_similarity(video[1:], photo),
        )


def _method_of(folder: Path) -> tuple[str, str]:
    """A protected folder's method label and the model its cloaks were made on, read from any sidecar.

    The label is the method, plus its space and budget where they are not the method's defaults,
    e.g. `anti-i2v (lab)` or `rgb-pgd (eps 20/255)`: each variant gets a row of its own.
    """
    for side in sorted(folder.glob("*.json")):
        sidecar = Sidecar.read(side)
        if sidecar is None:  # another JSON file, or a damaged sidecar
            continue
        settings = sidecar.settings
        method, space = settings["method"], settings.get("space")
        eps, ab_unit = settings.get("eps", DEFAULT_EPS), settings.get("ab_unit", DEFAULT_AB_UNIT)
        default_space = METHODS[method].space if method in METHODS else space
        qualifiers = (
            ([space] if space != default_space else [])
            + ([f"eps {eps:g}/255"] if eps != DEFAULT_EPS else [])
            + ([f"a*b*/{ab_unit:g}"] if ab_unit != DEFAULT_AB_UNIT else [])
        )
        return (f"{method} ({', '.join(qualifiers)})" if qualifiers else method), sidecar.model
    return folder.name, "unknown"


class _VideoCache:
    """Videos one backbone generates from images at one seed, cached on disk by the image's bytes."""

    def __init__(self, backbone: Backbone, seed: int, steps: int, root: Path):
        self.backbone, self.seed, self.steps = backbone, seed, steps
        self.folder = root / backbone.config_sha256()[:16]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """`(3, H, W)` in [0, 1] -> `(F, 3, H, W)` in [0, 1]."""

        def generate() -> dict[str, torch.Tensor]:
            return {"video": self.backbone.generate(image, steps=self.steps, seed=self.seed)}

        key = f"{_sha(image)}-s{self.seed}-n{self.steps}"
        return cached_tensors(self.folder / f"{key}.safetensors", generate)["video"]


def _sha(t: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(to_uint8(t).tobytes()).hexdigest()[:16]


def evaluate(cfg: EvaluateConfig) -> Path:
    """Run the evaluation; writes results.csv, summary.json, index.html and strips into `out`."""
    out = Path(cfg.out)
    check_writable_dir(out)
    for model in [
        cfg.model,
        *cfg.models,
    ]:  # an unknown model is one line now, not after an hour of videos
        resolve_model(model)
    clean, methods, made_on = match_photos(cfg)
    out.mkdir(parents=True, exist_ok=True)
    judges = Judges.load(cfg)
    if getattr(
        judges.identity, "needs_face", False
    ):  # a face judge needs a face in every clean photo
        for path in clean.values():
            judges.identity.require_face(load_photo(path).pixels, str(path))
    distortions = ["none", *[d for d in cfg.distortions if d != "none"]]
    n = len(clean) * cfg.seeds
    total = n * (1 + len(methods) * len(distortions)) + n * len(cfg.models) * (1 + len(methods))
    rows: list[EvalRow] = []
    strips: dict[str, np.ndarray] = {}
    cloaks: dict[
        tuple[str, str], CloakMeasures
    ] = {}  # the same for every distortion, seed and model
    with Progress(console=console) as progress:
        task = progress.add_task("evaluate", total=total)
        for model in [cfg.model, *cfg.models]:
            backbone = load_backbone(model, None, "float32", pick_device(cfg.device))
            # Transfer models see the undistorted cloaks: one video per photo and method.
            model_distortions = distortions if model == cfg.model else ["none"]
            for name, photo_path in clean.items():
                photo = load_photo(photo_path).pixels
                cloak_pixels = {m: _cloak_of(files[name], photo) for m, files in methods.items()}
                for m, pixels in cloak_pixels.items():
                    if (name, m) not in cloaks:
                        cloaks[name, m] = judges.cloak(pixels, photo)
                for seed in range(cfg.seeds):
                    generate = _VideoCache(backbone, seed, cfg.steps, out / ".videos")
                    clean_video = generate(photo)
                    clean_m = judges.video(clean_video, clean_video, photo)
                    key = dict(photo=name, eval_model=backbone.name, seed=seed)
                    rows.append(
                        EvalRow.of(
                            {**key, "method": "clean", "made_on": "", "distortion": "none"},
                            clean_m,
                            clean_m,
                            judges.cloak(photo, photo),
                        )
                    )
                    progress.advance(task)
                    for m, pixels in cloak_pixels.items():
                        for dist in model_distortions:
                            video = generate(distort(pixels, dist, seed, backbone))
                            row_key = {
                                **key,
                                "method": m,
                                "made_on": made_on[m],
                                "distortion": dist,
                            }
                            rows.append(
                                EvalRow.of(
                                    row_key,
                                    clean_m,
                                    judges.video(video, clean_video, photo),
                                    cloaks[name, m],
                                )
                            )
                            if (dist, seed, model) == ("none", 0, cfg.model) and len(
                                strips
                            ) < 3 * len(methods):
                                strips[f"{name}__{m}"] = np.concatenate(
                                    [strip(clean_video), strip(video)], 0
                                )
                            progress.advance(task)
    _write_csv(rows, out / "results.csv")
    summary = summarise(rows, cfg)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=_json_num))
    from protect.evaluate.report import write_report

    write_report(out, summary, strips)
    return out


def match_photos(
    cfg: EvaluateConfig,
) -> tuple[dict[str, Path], dict[str, dict[str, Path]], dict[str, str]]:
    """Clean photos that have a cloak in every protected folder, each folder's label and source model.

    Returns:
        (name -> clean photo path, label -> name -> cloak path, label -> model the cloaks were made on)
    """
    clean = {p.stem: p for p in gather_images([Path(cfg.clean)])}
    methods, made_on = {}, {"clean": ""}
    for folder in map(Path, cfg.protected):
        files = {p.stem: p for p in gather_images([folder]) if not p.name.endswith(".loss.png")}
        method, model = _method_of(folder)
        # Cloaks made on another model than the main one are a transfer row of their own.
        label = method if model in (cfg.model, "unknown") else f"{method} (made on {model})"
        if label in methods:
            raise ToolkitError(f"two protected folders hold {label} cloaks; pass each method once")
        methods[label], made_on[label] = files, model
    names = sorted(n for n in clean if all(n in files for files in methods.values()))
    if not names:
        raise ToolkitError(
            f"no photo of {cfg.clean} has a protected version in {', '.join(cfg.protected)} "
            "(photos are matched by file name)"
        )
    unmatched = sum(len(set(files) - set(clean)) for files in methods.values())
    if unmatched:
        console.print(
            f"[yellow]note:[/] {unmatched} cloak(s) have no clean photo of the same name in "
            f"{cfg.clean} and are left out"
        )
    return {n: clean[n] for n in names}, methods, made_on


def _cloak_of(path: Path, photo: torch.Tensor) -> torch.Tensor:
    protected = load_photo(path).pixels
    if protected.shape != photo.shape:
        raise ToolkitError(
            f"{path} is {tuple(protected.shape[1:])}, the clean photo {tuple(photo.shape[1:])}: "
            "compare a photo with its own cloak"
        )
    return protected


def _json_num(x):
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _write_csv(rows: list[EvalRow], path: Path) -> None:
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


def amplification(rows: list[EvalRow]) -> float | None:
    """The video's identity drop over the cloak photo's own: mean(ism_clean - ism_protected) / mean(1 - cloak_ism).

    Above 1, generation loses more identity than the cloak already took from the photo (the
    effect the paper claims); below 1, the model repairs part of the cloak's change. A ratio of
    means, so photos with a near-zero cloak drop do not dominate. None when the cloaks carry no drop.
    """
    cloak_drop = float(np.mean([1 - r.cloak_ism for r in rows]))
    if abs(cloak_drop) < 1e-6:
        return None
    return float(np.mean([r.ism_clean - r.ism_protected for r in rows])) / cloak_drop


def summarise(rows: list[EvalRow], cfg: EvaluateConfig) -> dict:
    """Means and bootstrap intervals per (method, distortion, eval model), robustness and amplification."""
    groups: dict[tuple[str, str, str], list[EvalRow]] = {}
    for r in rows:
        groups.setdefault((r.method, r.distortion, r.eval_model), []).append(r)
    table = []
    for (method, dist, model), rs in groups.items():
        entry = {"method": method, "distortion": dist, "eval_model": model, "n": len(rs)}
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
        (e["method"], e["eval_model"]): e["ism_drop"] for e in table if e["distortion"] == "none"
    }
    for e in table:
        b = base.get((e["method"], e["eval_model"]))
        e["ism_drop_surviving"] = (
            e["ism_drop"] / b if b and abs(b) > 1e-9 and e["method"] != "clean" else None
        )
    return {
        "config": asdict(cfg),
        "rows": len(rows),
        "table": table,
        "paired": paired_differences(rows),
        "toolkit_version": TOOLKIT_VERSION,
        "psnr_cap_db": PSNR_CAP,
    }


def paired_differences(rows: list[EvalRow]) -> list[dict]:
    """Method A minus method B on the same photos and seeds (undistorted), with bootstrap intervals.

    Two methods' marginal intervals can overlap while one beats the other on nearly every photo;
    the paired difference is the comparison that answers "does A protect better than B".
    """
    by: dict[tuple[str, str], dict[tuple[str, int], EvalRow]] = {}
    for r in rows:
        if r.distortion == "none" and r.method != "clean":
            by.setdefault((r.eval_model, r.method), {})[(r.photo, r.seed)] = r
    out = []
    for (model, a), ra in sorted(by.items()):
        for (model_b, b), rb in sorted(by.items()):
            keys = sorted(ra.keys() & rb.keys())
            if model_b != model or a >= b or not keys:  # each unordered pair once
                continue
            entry = {"eval_model": model, "a": a, "b": b, "n": len(keys)}
            for name in PAIRED:
                diff = np.array([row_value(ra[k], name) - row_value(rb[k], name) for k in keys])
                entry[f"{name}_diff"], entry[f"{name}_diff_ci95"] = (
                    float(diff.mean()),
                    bootstrap_ci(diff),
                )
            out.append(entry)
    return out
