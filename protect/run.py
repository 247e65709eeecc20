"""The protect job: cloak photos with a method, driven by a layer profile; folders in, folders out.

For each photo: decode it upright, optimise at (at most) `work_max_side`, upsample the RGB change
to the original size, write `<name>.png` (lossless, no metadata) and `<name>.json` (every setting,
the profile's hash, losses per step, budget used, PSNR/SSIM, time) plus a loss curve. A photo
whose sidecar already exists with the same settings is skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file

from analyses.profile import check_profile, load_profile, profile_sha256
from probe.backbones import Backbone, load_backbone
from probe.common import TOOLKIT_VERSION, ToolkitError, pick_device
from probe.images import Photo, gather_images, load_photo
from protect.evaluate.metrics import psnr, ssim
from protect.loop import DivergedError, perturb_iterative
from protect.methods import METHODS, method_weights
from protect.objective import ModelObjective, ObjectiveSpec, clip_frames_for
from protect.output import to_uint8, write_png
from protect.perceptual import load_lpips
from protect.spaces import Space, budget_used

console = Console(stderr=True)


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


@dataclass
class PhotoResult:
    name: str
    status: str  # "done", "skipped", "failed"
    detail: str = ""
    sidecar: dict = field(default_factory=dict)


def default_target(size: tuple[int, int]) -> torch.Tensor:
    """The built-in IRA target: a high-contrast checkerboard of saturated colours (Mist-like texture)."""
    h, w = size
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cell = max(2, min(h, w) // 8)
    checker = ((yy // cell + xx // cell) % 2).float()
    colours = torch.tensor([[1.0, 0.1, 0.6], [0.1, 0.9, 0.2]])
    return (colours[0].view(3, 1, 1) * checker + colours[1].view(3, 1, 1) * (1 - checker)).clamp(0, 1)


def reference_latent(backbone: Backbone, photo: torch.Tensor, photo_sha: str, clip: int, cfg: ProtectConfig,
                     cache: Path) -> torch.Tensor:
    """Latent of the clean photo's generated video (first `clip` frames), cached per photo and model."""
    key = f"{backbone.config_sha256()[:16]}-{photo_sha[:16]}-f{clip}-s{cfg.seed}-n{cfg.reference_steps}"
    path = cache / f"{key}.safetensors"
    if path.exists():
        return load_file(str(path))["latent"].to(backbone.device, backbone.dtype)
    video = backbone.generate(photo, steps=cfg.reference_steps, seed=cfg.seed)[:clip]
    with torch.no_grad():
        latent = backbone.encode_video(backbone.resize(video)[None].to(backbone.device))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"latent": latent.float().cpu().contiguous()}, str(tmp))
    tmp.replace(path)
    return latent


def _work_image(pixels: torch.Tensor, max_side: int) -> torch.Tensor:
    h, w = pixels.shape[-2:]
    scale = min(1.0, max_side / max(h, w))
    if scale == 1.0:
        return pixels
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(pixels[None], size=size, mode="bilinear", antialias=True)[0].clamp(0, 1)


def settings_of(cfg: ProtectConfig, profile: dict | None) -> dict:
    """Every setting that shapes a cloak (the method's defaults filled in), as it reads back from JSON."""
    d = asdict(cfg)
    for key in ("images", "out", "device"):  # where, not how: they do not change the cloak
        d.pop(key)
    _, _, timesteps = picks(cfg, profile)
    d.update(space=cfg.space or METHODS[cfg.method].space, timesteps=timesteps,
             weights=method_weights(cfg.method, list(cfg.losses) if cfg.losses else None))
    return json.loads(json.dumps(d))


def cloak_photo(photo: Photo, backbone: Backbone, profile: dict | None, cfg: ProtectConfig, out: Path,
                target: torch.Tensor | None) -> dict:
    """Cloak one photo; returns the sidecar dict (also written next to the PNG)."""
    started = time.time()
    method = METHODS[cfg.method]
    weights = method_weights(cfg.method, list(cfg.losses) if cfg.losses else None)
    space = Space(cfg.space or method.space, eps=cfg.eps / 255)
    collapse, anchors, timesteps = picks(cfg, profile)
    clip = clip_frames_for(backbone, cfg.frames)
    x_full = photo.pixels
    x = _work_image(x_full, cfg.work_max_side)[None].to(backbone.device)
    lp = load_lpips() if weights.get("lpips") else None
    spec = ObjectiveSpec(
        weights=weights,
        collapse_layers=collapse, anchor_layers=anchors, timesteps=timesteps, clip_frames=clip,
        ira_targeted=not cfg.ira_untargeted, seed=cfg.seed,
        early_exit=cfg.early_exit,
    )
    if method.optimises:
        reference = None
        if weights.get("diffusion"):
            reference = reference_latent(backbone, photo.pixels, photo.sha256, clip, cfg, out / ".reference")
        tgt = target if target is not None else default_target(tuple(x.shape[-2:]))
        tgt = F.interpolate(tgt[None], size=x.shape[-2:], mode="bilinear", antialias=True).clamp(0, 1).to(x)
        objective = ModelObjective(backbone, spec, x, reference, tgt, lp)
        result = perturb_iterative(x, objective, space, cfg.steps, cfg.alpha / 255)
        adv, history, params = result.adv[0].cpu(), result.history, result.params
    else:
        params = space.random_init(x, torch.Generator().manual_seed(cfg.seed))
        adv, history = space.apply(x, params)[0].detach().cpu(), []
    # Back to the original size: the RGB change is upsampled and added to the untouched original.
    delta = adv - x[0].cpu()
    if delta.shape[-2:] != x_full.shape[-2:]:
        delta = F.interpolate(delta[None], size=x_full.shape[-2:], mode="bicubic")[0]
    cloaked = (x_full + delta).clamp(0, 1)
    quantised = torch.from_numpy(to_uint8(cloaked)).permute(2, 0, 1).float() / 255
    sidecar = {
        "photo": str(photo.path), "photo_sha256": photo.sha256, "size": list(photo.size),
        "model": backbone.name, "family": backbone.family, "config_sha256": backbone.config_sha256(),
        "profile_sha256": profile_sha256(profile) if profile else None,
        "settings": settings_of(cfg, profile),
        "clip_frames": clip, "lpips_available": lp is not None,
        "collapse_layers": spec.collapse_layers, "anchor_layers": spec.anchor_layers,
        "budget": budget_used(x.cpu(), adv[None], {k: v.cpu() for k, v in params.items()}),
        "linf_rgb_written": float((quantised - x_full).abs().max()),
        "psnr": psnr(quantised, x_full), "ssim": ssim(quantised, x_full),
        "losses": history, "seconds": time.time() - started, "toolkit_version": TOOLKIT_VERSION,
    }
    write_png(cloaked, out / f"{photo.name}.png")
    _loss_curve(history, out / f"{photo.name}.loss.png")
    tmp = out / f"{photo.name}.json.tmp"
    tmp.write_text(json.dumps(sidecar, indent=1))
    tmp.replace(out / f"{photo.name}.json")  # the sidecar is written last: its presence means done
    return sidecar


def _loss_curve(history: list[dict], path: Path) -> None:
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2.6))
    for key in [k for k in history[0] if k != "step"]:
        ax.plot([h[key] for h in history], label=key, lw=1)
    ax.set_xlabel("step")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)


def run_protect(cfg: ProtectConfig) -> list[PhotoResult]:
    """Cloak every photo; a failing photo is reported and the others go on."""
    if cfg.method not in METHODS:
        raise ToolkitError(f"unknown method {cfg.method!r}; choose from {', '.join(METHODS)}")
    backbone = load_backbone(cfg.model, None, "float32", pick_device(cfg.device))
    weights = method_weights(cfg.method, list(cfg.losses) if cfg.losses else None)
    profile = None
    if cfg.profile:
        profile = load_profile(Path(cfg.profile))
        check_profile(profile, backbone.name, backbone.block_names(), backbone.config_sha256())
    elif any(weights.get(k) for k in ("irc", "ira")):
        raise ToolkitError(f"method {cfg.method} needs a layer profile; make one with "
                           f"`anti-i2v adapt {cfg.model} PHOTOS --out DIR` and pass --profile DIR/profile.json")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    target = load_photo(Path(cfg.target)).pixels if cfg.target else None
    paths = gather_images([Path(p) for p in cfg.images])
    results: list[PhotoResult] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as progress:
        task = progress.add_task(f"{cfg.method} on {backbone.name}", total=len(paths))
        for path in paths:
            results.append(_one(path, backbone, profile, cfg, out, target))
            progress.advance(task)
    return results


def picks(cfg: ProtectConfig, profile: dict | None) -> tuple[list[str], list[str], list[int]]:
    """The collapse layers, anchor layers and timesteps a cloak with these settings uses."""
    weights = method_weights(cfg.method, list(cfg.losses) if cfg.losses else None)
    needs_profile = any(weights.get(k) for k in ("irc", "ira"))
    collapse = list(profile["collapse_layers"]) if needs_profile else []
    anchors = list(profile["anchor_layers"]) if needs_profile else []
    return collapse, anchors, list(cfg.timesteps or (profile["timesteps"] if profile else [500]))


def _one(path: Path, backbone: Backbone, profile: dict | None, cfg: ProtectConfig, out: Path, target) -> PhotoResult:
    try:
        photo = load_photo(path)
    except ToolkitError as exc:
        return PhotoResult(path.stem, "failed", str(exc))
    sidecar_path = out / f"{photo.name}.json"
    if sidecar_path.exists() and (out / f"{photo.name}.png").exists():
        old = json.loads(sidecar_path.read_text())
        # Same photo, every setting and the same layers: the same work, already done.
        collapse, anchors, _ = picks(cfg, profile)
        if old.get("photo_sha256") == photo.sha256 and old.get("settings") == settings_of(cfg, profile) \
                and (old.get("collapse_layers"), old.get("anchor_layers")) == (collapse, anchors):
            return PhotoResult(photo.name, "skipped", "already cloaked with these settings", old)
    try:
        return PhotoResult(photo.name, "done", sidecar=cloak_photo(photo, backbone, profile, cfg, out, target))
    except DivergedError as exc:
        return PhotoResult(photo.name, "failed", f"{exc}; try a smaller --alpha or fewer loss terms")
