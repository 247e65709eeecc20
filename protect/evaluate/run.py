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
from dataclasses import asdict, dataclass
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

console = Console(stderr=True)
COLUMNS = [
    "photo",
    "method",
    "made_on",
    "distortion",
    "eval_model",
    "seed",
    "ism_clean",
    "ism_protected",
    "psnr_video",
    "ssim_video",
    "temporal",
    "cloak_psnr",
    "cloak_ssim",
    "cloak_delta_e",
    "cloak_ism",
    "cloak_lpips",
    "ref_clean",
    "ref_protected",
]
DEFAULT_EPS = ProtectConfig.eps
# Measures whose model may be absent (no weights offline): NaN in the CSV, null in the summary.
OPTIONAL = ("cloak_lpips", "ref_clean", "ref_protected")


def _method_of(folder: Path) -> tuple[str, str]:
    """A protected folder's method label and the model its cloaks were made on, read from any sidecar.

    The label is the method, plus its space and budget where they are not the method's defaults,
    e.g. `anti-i2v (lab)` or `rgb-pgd (eps 20/255)`: each variant gets a row of its own.
    """
    for side in sorted(folder.glob("*.json")):
        try:
            d = json.loads(side.read_text())
            settings = d["settings"]
            method, space, eps = (
                settings["method"],
                settings.get("space"),
                settings.get("eps", DEFAULT_EPS),
            )
        except (KeyError, json.JSONDecodeError):
            continue
        default_space = METHODS[method].space if method in METHODS else space
        qualifiers = ([space] if space != default_space else []) + (
            [f"eps {eps:g}/255"] if eps != DEFAULT_EPS else []
        )
        return (f"{method} ({', '.join(qualifiers)})" if qualifiers else method), d["model"]
    return folder.name, "unknown"


def _video(
    backbone: Backbone, image: torch.Tensor, seed: int, steps: int, cache: Path, key: str
) -> torch.Tensor:
    def generate() -> dict[str, torch.Tensor]:
        return {"video": backbone.generate(image, steps=steps, seed=seed)}

    return cached_tensors(cache / f"{key}.safetensors", generate)["video"]


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
    out.mkdir(parents=True, exist_ok=True)
    encoder = load_identity(cfg.identity)
    extra = Extras(
        load_vision_encoder(cfg.reference, "reference similarity") if cfg.reference else None,
        load_lpips(purpose="cloak_lpips is left empty"),
    )
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
    distortions = ["none", *[d for d in cfg.distortions if d != "none"]]
    rows: list[dict] = []
    strips: dict[str, np.ndarray] = {}
    cloaks: dict[tuple[str, str], dict[str, float]] = {}
    eval_models = [cfg.model, *cfg.models]
    total = (
        len(names)
        * cfg.seeds
        * ((1 + len(methods) * len(distortions)) + len(cfg.models) * (1 + len(methods)))
    )
    with Progress(console=console) as progress:
        task = progress.add_task("evaluate", total=total)
        for model in eval_models:
            bb = load_backbone(model, None, "float32", pick_device(cfg.device))
            cache = out / ".videos" / bb.config_sha256()[:16]
            for name in names:
                photo = load_photo(clean[name]).pixels
                for seed in range(cfg.seeds):
                    clean_video = _video(
                        bb, photo, seed, cfg.steps, cache, f"{_sha(photo)}-s{seed}-n{cfg.steps}"
                    )
                    ism_clean = identity_similarity(encoder, clean_video[1:], photo)
                    ref_clean = extra.reference_similarity(clean_video[1:], photo)
                    rows.append(
                        _row(
                            name,
                            "clean",
                            "",
                            "none",
                            bb.name,
                            seed,
                            ism_clean,
                            ism_clean,
                            clean_video,
                            clean_video,
                            ref_clean,
                            ref_clean,
                            cloak_measures(photo, photo, encoder, extra),
                        )
                    )
                    progress.advance(task)
                    for method, files in methods.items():
                        protected = load_photo(files[name]).pixels
                        if protected.shape != photo.shape:
                            raise ToolkitError(
                                f"{files[name]} is {tuple(protected.shape[1:])}, the clean photo "
                                f"{tuple(photo.shape[1:])}: compare a photo with its own cloak"
                            )
                        # The cloak against the photo: the same for every distortion, seed and eval model.
                        if (name, method) not in cloaks:
                            cloaks[name, method] = cloak_measures(protected, photo, encoder, extra)
                        for dist in distortions if model == cfg.model else ["none"]:
                            attacked = distort(protected, dist, seed, bb)
                            video = _video(
                                bb,
                                attacked,
                                seed,
                                cfg.steps,
                                cache,
                                f"{_sha(attacked)}-s{seed}-n{cfg.steps}",
                            )
                            ism = identity_similarity(encoder, video[1:], photo)
                            rows.append(
                                _row(
                                    name,
                                    method,
                                    made_on[method],
                                    dist,
                                    bb.name,
                                    seed,
                                    ism_clean,
                                    ism,
                                    video,
                                    clean_video,
                                    ref_clean,
                                    extra.reference_similarity(video[1:], photo),
                                    cloaks[name, method],
                                )
                            )
                            if (
                                dist == "none"
                                and seed == 0
                                and model == cfg.model
                                and len(strips) < 3 * len(methods)
                            ):
                                strips[f"{name}__{method}"] = np.concatenate(
                                    [strip(clean_video), strip(video)], 0
                                )
                            progress.advance(task)
    _write_csv(rows, out / "results.csv")
    summary = summarise(rows, cfg)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=_json_num))
    from protect.evaluate.report import write_report

    write_report(out, summary, strips)
    return out


@dataclass
class Extras:
    """The optional measures' models: a reference vision encoder and LPIPS, each None when absent."""

    reference: VisionEncoder | None
    lpips: torch.nn.Module | None

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


def cloak_measures(
    protected: torch.Tensor, photo: torch.Tensor, encoder, extra: Extras
) -> dict[str, float]:
    """How visible a cloak is, and how much identity it already removes: the `cloak_*` columns."""
    return {
        "cloak_psnr": psnr(protected, photo),
        "cloak_ssim": ssim(protected, photo),
        "cloak_delta_e": delta_e(protected, photo),
        # The cloak's own identity similarity: how much of the video's drop the photo already carries.
        "cloak_ism": identity_similarity(encoder, protected[None], photo),
        "cloak_lpips": extra.lpips_distance(protected, photo),
    }


def _row(
    name,
    method,
    made_on,
    dist,
    model,
    seed,
    ism_clean,
    ism_prot,
    video,
    clean_video,
    ref_clean: float,
    ref_prot: float,
    cloak: dict[str, float],
) -> dict:
    return {
        "photo": name,
        "method": method,
        "made_on": made_on,
        "distortion": dist,
        "eval_model": model,
        "seed": seed,
        "ism_clean": ism_clean,
        "ism_protected": ism_prot,
        "psnr_video": psnr(video, clean_video),
        "ssim_video": ssim_video(video, clean_video),
        "temporal": temporal_coherence(video),
        **cloak,
        "ref_clean": ref_clean,
        "ref_protected": ref_prot,
    }


def _json_num(x):
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _write_csv(rows: list[dict], path: Path) -> None:
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


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


def row_value(r: dict, key: str) -> float:
    """One row's value of a summarised measure: the relative ISM drop is derived, PSNRs are capped."""
    if key == "ism_drop":
        return (r["ism_clean"] - r["ism_protected"]) / max(r["ism_clean"], 1e-6)
    return (
        min(r[key], PSNR_CAP) if key in ("psnr_video", "cloak_psnr") else r[key]
    )  # identical pairs: inf


def summarise(rows: list[dict], cfg: EvaluateConfig) -> dict:
    """Means and bootstrap intervals per (method, distortion, eval model), plus robustness."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["distortion"], r["eval_model"]), []).append(r)
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


def paired_differences(rows: list[dict]) -> list[dict]:
    """Method A minus method B on the same photos and seeds (undistorted), with bootstrap intervals.

    Two methods' marginal intervals can overlap while one beats the other on nearly every photo;
    the paired difference is the comparison that answers "does A protect better than B".
    """
    by: dict[tuple[str, str], dict[tuple[str, int], dict]] = {}
    for r in rows:
        if r["distortion"] == "none" and r["method"] != "clean":
            by.setdefault((r["eval_model"], r["method"]), {})[(r["photo"], r["seed"])] = r
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
