"""The protect job: cloak photos with a method, driven by a layer profile; folders in, folders out.

For each photo: decode it upright (kept as uint8), optimise at (at most) `work_max_side`,
upsample the RGB change to the original size in bands of rows, write `<name>.png` (lossless, no
metadata) and `<name>.json` (a `Sidecar`: every setting, the profile's hash, losses per step,
budget used, PSNR/SSIM, time) plus a loss curve. A photo whose sidecar already exists with the
same settings is skipped, so an interrupted run resumes; a damaged sidecar means the photo is
redone. Everything a run could refuse is checked before the model loads (`ProtectConfig`,
`protect.inputs.plan_jobs`, the profile against the model).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from anti_i2v.analyses.profile import Profile, load_profile
from anti_i2v.core.common import (
    TOOLKIT_VERSION,
    ToolkitError,
    atomic_path,
    cached_tensors,
    check_writable_dir,
    file_sha256,
    is_url,
    pick_device,
    progress_bar,
    to_uint8,
    write_text_atomic,
)
from anti_i2v.core.distributed import Ranks, process_group
from anti_i2v.core.images import Photo, load_photo, to_chw_float
from anti_i2v.models.backbones import Backbone, load_backbone, weights_sha256
from anti_i2v.probe.store import check_location
from anti_i2v.protect.config import MIN_SIDE, NOT_SETTINGS, ProtectConfig
from anti_i2v.protect.in_place import recover, with_original, write_in_place
from anti_i2v.protect.inputs import Job, foreign_output, pending_path, photo_lock, plan_jobs
from anti_i2v.protect.loop import DivergedError, perturb_iterative
from anti_i2v.protect.methods import METHODS, PROFILE_TERMS, method_weights
from anti_i2v.protect.metrics import ssim
from anti_i2v.protect.objective import (
    EnsembleObjective,
    ModelObjective,
    ObjectiveSpec,
    clip_frames_for,
)
from anti_i2v.protect.output import OutputFolder, write_png_uint8
from anti_i2v.protect.perceptual import load_lpips
from anti_i2v.protect.region import FACE, Region
from anti_i2v.protect.sidecar import Sidecar
from anti_i2v.protect.spaces import Space, budget_used

console = Console(stderr=True)
BAND_ROWS = 256  # rows of the full-size photo upsampled at a time: memory flat in photo size


@dataclass
class PhotoResult:
    name: str
    status: str  # "done", "skipped", "failed"
    detail: str = ""
    sidecar: Sidecar | None = None
    bad_input: bool = False  # the photo itself cannot be cloaked (unreadable, too small, ...)


@dataclass(frozen=True)
class Run:
    """A protect run resolved once: the method's weights and space, the profile's picks, the settings."""

    cfg: ProtectConfig
    weights: dict[str, float]
    space: str
    profile: Profile | None
    collapse_layers: list[str]
    anchor_layers: list[str]
    timesteps: list[int]
    vae_anchor_layers: list[str] = field(default_factory=list)  # a profile from `adapt --vae`
    members: tuple[Run, ...] = ()  # --ensemble: each further model's own run (layers, timesteps)

    @classmethod
    def resolve(cls, cfg: ProtectConfig, profile: Profile | None) -> Run:
        weights = method_weights(cfg.method, list(cfg.losses) if cfg.losses else None)
        needs_profile = any(weights.get(k) for k in PROFILE_TERMS)
        if needs_profile and profile is None:
            raise ToolkitError(
                f"method {cfg.method} needs a layer profile; make one with "
                f"`anti-i2v adapt {cfg.model} PHOTOS --out DIR` and pass --profile DIR/profile.json"
            )
        return cls(
            cfg=cfg,
            weights=weights,
            space=cfg.space or METHODS[cfg.method].space,
            profile=profile,
            collapse_layers=list(profile.collapse_layers) if needs_profile else [],
            anchor_layers=list(profile.anchor_layers) if needs_profile else [],
            vae_anchor_layers=list(profile.vae_anchor_layers) if needs_profile else [],
            timesteps=list(cfg.timesteps or (profile.timesteps if profile else [500])),
        )

    @functools.cached_property
    def region(self) -> Region | None:
        """`--region`, checked (its folder exists, or dlib imports), or None."""
        cfg = self.cfg
        return None if cfg.region is None else Region.check(cfg.region, cfg.region_floor)

    @functools.cached_property  # computed once per run: it hashes the target file
    def settings(self) -> dict:
        """Every setting that shapes a cloak (the method's defaults filled in), as it reads back from JSON."""
        d = asdict(self.cfg)
        for key in NOT_SETTINGS:
            d.pop(key)
        d.update(space=self.space, timesteps=self.timesteps, weights=self.weights)
        # Files by content, not path: a sidecar travels with its cloak, and a moved profile or
        # target is still the same work.
        d["profile"] = self.profile.sha256 if self.profile else None
        d["target"] = file_sha256(self.cfg.target) if self.cfg.target else None
        # A retrained model keeps its name and config: its cloaks are other work
        d["weights_sha256"] = weights_sha256(self.cfg.model)
        d.pop("ensemble")  # only ensemble runs record it: single-model sidecars stay as they were
        for key in ("optimizer", "alpha_decay"):  # levers: recorded only when not the paper's
            if d[key] == ProtectConfig.__dataclass_fields__[key].default:
                d.pop(key)
        if self.region is None:  # the region lever, likewise; its masks by content, per photo
            d.pop("region")
            d.pop("region_floor")
        else:
            d["region"] = FACE if self.region.source == FACE else "masks"
        if self.members:
            d["ensemble"] = [
                {
                    "model": m.cfg.model,
                    "profile": m.profile.sha256 if m.profile else None,
                    "weights_sha256": weights_sha256(m.cfg.model),
                }
                for m in self.members
            ]
        return json.loads(json.dumps(d))

    def with_members(self) -> Run:
        """This run with its `--ensemble` models resolved (their profiles read and checked now).

        A member uses its own profile's layers and timesteps (`--timesteps` overrides all);
        LPIPS is an image-side term, kept by the main run only so that it counts once.
        """
        members = []
        for model, profile_path in self.cfg.ensemble_members():
            cfg = replace(self.cfg, model=model, profile=profile_path, ensemble=())
            member = Run.resolve(cfg, load_profile(Path(profile_path)) if profile_path else None)
            weights = {k: (0.0 if k == "lpips" else w) for k, w in member.weights.items()}
            members.append(replace(member, weights=weights))
        return replace(self, members=tuple(members))

    def matches(self, old: Sidecar, photo: Photo) -> bool:
        """Same photo, every setting and the same layers: the same work, already done."""
        return (
            old.photo_sha256 == photo.sha256
            and old.settings == self.settings
            and old.region_sha256 == (self.region.digest(photo) if self.region else None)
            and (old.collapse_layers, old.anchor_layers, old.vae_anchor_layers)
            == (self.collapse_layers, self.anchor_layers, self.vae_anchor_layers)
        )


def default_target(size: tuple[int, int]) -> torch.Tensor:
    """The built-in IRA target: a high-contrast checkerboard of saturated colours (Mist-like texture)."""
    h, w = size
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cell = max(2, min(h, w) // 8)
    checker = ((yy // cell + xx // cell) % 2).float()
    colours = torch.tensor([[1.0, 0.1, 0.6], [0.1, 0.9, 0.2]])
    return (colours[0].view(3, 1, 1) * checker + colours[1].view(3, 1, 1) * (1 - checker)).clamp(
        0, 1
    )


def reference_latent(
    backbone: Backbone,
    photo: torch.Tensor,
    photo_sha: str,
    clip: int,
    cfg: ProtectConfig,
    cache: Path,
) -> torch.Tensor:
    """Latent of the clean photo's generated video (first `clip` frames), cached per photo and model."""
    key = f"{backbone.model_key()}-{photo_sha[:16]}-f{clip}-s{cfg.seed}-n{cfg.reference_steps}"

    def compute() -> dict[str, torch.Tensor]:
        # At least `clip` frames: a model whose default clip is shorter (tiny:svd makes 2) must
        # still cover the frames the losses use
        frames = max(clip, backbone.default_frames)
        video = backbone.generate(photo, frames, steps=cfg.reference_steps, seed=cfg.seed)[:clip]
        with torch.no_grad():
            return {
                "latent": backbone.encode_video(backbone.resize(video)[None].to(backbone.device))
            }

    return cached_tensors(cache / f"{key}.safetensors", compute)["latent"].to(
        backbone.device, backbone.dtype
    )


def upsample_change(photo: np.ndarray, work: torch.Tensor, adv: torch.Tensor) -> np.ndarray:
    """The cloak at full size: the RGB change made at working size, upsampled and added to the photo.

    Args:
        photo: the original, uint8 or float `(H, W, 3)`.
        work: the photo at working size, float `(3, h, w)` in [0, 1].
        adv: its cloaked version, float `(3, h, w)` in [0, 1].

    Returns:
        uint8 `(H, W, 3)`. The change is upsampled bicubically (grid_sample, whose sampling
        positions depend only on the output row, so bands give the same result as one pass)
        in bands of `BAND_ROWS` rows: peak memory does not grow with the photo beyond its uint8 copies.
    """
    delta = (adv - work)[None].float()  # (1, 3, h, w)
    big_h, big_w = photo.shape[:2]
    if (big_h, big_w) == tuple(delta.shape[-2:]):
        return to_uint8(to_chw_float(photo) + delta[0])
    out = np.empty((big_h, big_w, 3), dtype=np.uint8)
    xs = (
        torch.arange(big_w, dtype=torch.float32) + 0.5
    ) * 2 / big_w - 1  # normalised, align_corners=False
    for r0 in range(0, big_h, BAND_ROWS):
        r1 = min(big_h, r0 + BAND_ROWS)
        ys = (torch.arange(r0, r1, dtype=torch.float32) + 0.5) * 2 / big_h - 1
        # (1, rows, W, 2): x, y
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)[None]
        band_delta = F.grid_sample(
            delta, grid, mode="bicubic", padding_mode="border", align_corners=False
        )[0]
        out[r0:r1] = to_uint8(to_chw_float(photo[r0:r1]) + band_delta)
    return out


def written_fidelity(photo: np.ndarray, cloak: np.ndarray) -> tuple[float, float]:
    """(PSNR in dB, L-inf in [0, 1] units) of the written cloak against the photo, in bands of rows."""
    squared, linf = 0.0, 0.0
    scale = 255.0 if photo.dtype == np.uint8 else 1.0
    for r0 in range(0, photo.shape[0], BAND_ROWS):
        a = photo[r0 : r0 + BAND_ROWS].astype(np.float64) / scale
        b = cloak[r0 : r0 + BAND_ROWS].astype(np.float64) / 255
        squared += float(((a - b) ** 2).sum())
        linf = max(linf, float(np.abs(a - b).max()))
    mse = squared / photo.size
    return (math.inf if mse == 0 else 10 * math.log10(1.0 / mse)), linf


def cloak_photo(
    photo: Photo,
    backbone: Backbone,
    run: Run,
    out: Path,
    target: torch.Tensor | None,
    lpips_model=None,
    members: Sequence[Backbone] = (),
) -> tuple[np.ndarray, Sidecar]:
    """Cloak one photo; returns the full-size uint8 cloak and its sidecar (the caller writes both)."""
    return cloak_photos([photo], backbone, run, out, target, lpips_model, members)[0]


def model_objective(
    backbone: Backbone,
    run: Run,
    photos: list[Photo],
    x: torch.Tensor,
    out: Path,
    target: torch.Tensor | None,
    lpips_model=None,
) -> ModelObjective:
    """One model's objective on the batch `x` `(B, 3, h, w)` (working size) of `photos`.

    Its reference videos (for the diffusion term) are generated once per photo and model and
    cached under `out/.reference/`; `target` `(3, h', w')` is the IRA / latent-pull target
    (default: the built-in pattern), resized to the working size.
    """
    cfg = run.cfg
    clip = clip_frames_for(backbone, cfg.frames)
    spec = ObjectiveSpec(
        weights=run.weights,
        collapse_layers=run.collapse_layers,
        anchor_layers=run.anchor_layers,
        vae_anchor_layers=run.vae_anchor_layers,
        timesteps=run.timesteps,
        clip_frames=clip,
        ira_targeted=not cfg.ira_untargeted,
        seed=cfg.seed,
        early_exit=cfg.early_exit,
        eot=cfg.eot,
    )
    reference = None
    # Keyed by model, photo, clip, seed and steps, so runs may share one folder of them
    reference_cache = Path(cfg.reference_cache) if cfg.reference_cache else out / ".reference"
    if run.weights.get("diffusion"):
        reference = torch.cat(
            [
                reference_latent(backbone, w, p.sha256, clip, cfg, reference_cache)
                for p, w in zip(photos, x, strict=True)
            ]
        )
    pattern = target if target is not None else default_target(tuple(x.shape[-2:]))
    pattern = (
        F.interpolate(pattern[None], size=x.shape[-2:], mode="bilinear", antialias=True)
        .clamp(0, 1)
        .to(x)
        .expand_as(x)
    )
    return ModelObjective(backbone, spec, x, reference, pattern, lpips_model)


def cloak_photos(
    photos: list[Photo],
    backbone: Backbone,
    run: Run,
    out: Path,
    target: torch.Tensor | None,
    lpips_model=None,
    members: Sequence[Backbone] = (),
) -> list[tuple[np.ndarray, Sidecar]]:
    """Cloak photos of one working size together, one optimisation for the batch.

    Every loss is a mean over the batch and the model treats its samples independently, so each
    photo's sign-gradient is the one it has alone; its noise is drawn from its own generator.
    The cloaks match one-at-a-time runs within float error (batched kernels round differently).
    With `members` (the `--ensemble` models, in `run.members` order) the objective is the mean
    of every model's (`EnsembleObjective`).

    Returns:
        Per photo, in order: the full-size uint8 cloak and its sidecar (the caller writes both).
    """
    started = time.time()
    cfg, method = run.cfg, METHODS[run.cfg.method]
    clip = clip_frames_for(backbone, cfg.frames)
    works = [photo.work_pixels(cfg.work_max_side) for photo in photos]
    if len({tuple(w.shape) for w in works}) != 1:
        raise ValueError("a batch holds photos of one working size")
    region = None
    if run.region is not None:
        size = tuple(works[0].shape[-2:])
        region = torch.stack([run.region.weights(p, size) for p in photos]).to(backbone.device)
    space = Space(run.space, eps=cfg.eps / 255, ab_unit=cfg.ab_unit, region=region)
    if len(members) != len(run.members):
        raise ValueError(f"the run has {len(run.members)} ensemble models, {len(members)} given")
    x = torch.stack(works).to(backbone.device)
    if method.optimises:
        objective = model_objective(backbone, run, photos, x, out, target, lpips_model)
        if members:
            objective = EnsembleObjective(
                [(backbone.name, objective)]
                + [
                    (b.name, model_objective(b, m, photos, x.to(b.device), out, target))
                    for b, m in zip(members, run.members, strict=True)
                ]
            )
        objective.prepare()
        result = perturb_iterative(
            x,
            objective,
            space,
            cfg.steps,
            cfg.alpha / 255,
            optimizer=cfg.optimizer,
            alpha_decay=cfg.alpha_decay,
        )
        advs, history, params = result.adv.cpu(), result.history, result.params
    else:  # each photo its own generator, as alone
        parts = [
            space.random_init(x[i : i + 1], torch.Generator().manual_seed(cfg.seed))
            for i in range(len(photos))
        ]
        params = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        advs, history = space.apply(x, params).detach().cpu(), []
    seconds = (time.time() - started) / len(photos)
    done = []
    for i, (photo, work) in enumerate(zip(photos, works, strict=True)):
        adv, mine = advs[i], {k: v[i : i + 1].cpu() for k, v in params.items()}
        cloak = upsample_change(photo.array, work, adv)
        psnr_db, linf = written_fidelity(photo.array, cloak)
        written_work = Photo(photo.path, cloak, "", "RGB").work_pixels(cfg.work_max_side)
        sidecar = Sidecar(
            photo=str(photo.path) if cfg.record_paths else photo.path.name,
            photo_sha256=photo.sha256,
            size=list(photo.size),
            model=backbone.name,
            family=backbone.family,
            config_sha256=backbone.config_sha256(),
            profile_sha256=run.profile.sha256 if run.profile else None,
            settings=run.settings,
            clip_frames=clip,
            lpips_available=lpips_model is not None,
            collapse_layers=run.collapse_layers,
            anchor_layers=run.anchor_layers,
            vae_anchor_layers=run.vae_anchor_layers,
            budget=budget_used(work[None], adv[None], mine),
            units={k: v for k, v in space.units().items() if k in params},
            linf_rgb_written=linf,
            psnr=psnr_db,
            ssim=ssim(written_work, work),
            losses=history,
            seconds=seconds,
            toolkit_version=TOOLKIT_VERSION,
            batch_size=len(photos),
            region_sha256=run.region.digest(photo) if run.region else None,
        )
        done.append((cloak, sidecar))
    return done


def _loss_curve(history: list[dict], path: Path) -> None:
    """A small PNG of every loss term against the step (matplotlib's object API: no global state)."""
    if not history:
        return
    from matplotlib.figure import Figure  # imported here: only runs that optimise draw a curve

    fig = Figure(figsize=(4, 2.6))
    ax = fig.subplots()
    for key in [k for k in history[0] if k != "step"]:
        ax.plot([h[key] for h in history], label=key, lw=1)
    ax.set_xlabel("step")
    ax.legend(fontsize=6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, metadata={"Software": None})


@dataclass
class Cloaker:
    """What cloaking a photo needs besides the photo: the loaded models and the run's inputs."""

    backbone: Backbone
    run: Run
    dest: OutputFolder  # where cloaks go; work files (the reference cache) stay under dest.local
    target: torch.Tensor | None = None  # IRA / latent-pull target at working size
    lpips_model: object = None
    members: Sequence[Backbone] = ()  # the --ensemble models, in `run.members` order

    def cloak(self, photos: list[Photo]) -> list[tuple[np.ndarray, Sidecar]]:
        return cloak_photos(
            photos,
            self.backbone,
            self.run,
            self.dest.local,
            self.target,
            self.lpips_model,
            self.members,
        )


def prepare_run(
    cfg: ProtectConfig, device: str | None = None
) -> tuple[Run, list[Job], list[Backbone]]:
    """Everything checkable before cloaking: inputs, outputs, profiles, target; then the models.

    `device`: where the models go (default: `cfg.device` resolved); each torchrun rank passes its own.

    Returns:
        The run (with its ensemble members), the photos to cloak, and the backbones: the main
        model first, then each `--ensemble` model (none when there is nothing to cloak).

    Raises:
        ToolkitError: with one line, before any photo is touched.
    """
    url = is_url(cfg.out)
    if cfg.in_place and not url and Path(cfg.out).is_dir():
        recover(Path(cfg.out))  # photos an interrupted in-place run left half done
    jobs = plan_jobs([Path(p) for p in cfg.images], None if url else Path(cfg.out), cfg.in_place)
    if url:
        check_location(cfg.out)  # the file system is installed and the bucket reachable
    else:
        check_writable_dir(Path(cfg.out))
    profile = load_profile(Path(cfg.profile)) if cfg.profile else None
    run = Run.resolve(cfg, profile).with_members()
    _ = run.region  # its folder exists, or dlib imports: one line now, before any model loads
    if cfg.target:
        load_photo(Path(cfg.target))  # readable, or one line now
    if not jobs:
        return run, jobs, []
    backbones = []
    for r in (run, *run.members):
        backbone = load_backbone(
            r.cfg.model, None, cfg.dtype, device or pick_device(cfg.device), offload=cfg.offload
        )
        if cfg.checkpointing:
            backbone.enable_checkpointing()
        if r.profile is not None:
            r.profile.check_model(
                backbone.name,
                backbone.block_names(),
                backbone.config_sha256(),
                backbone.vae_block_names(),
            )
        backbones.append(backbone)
    return run, jobs, backbones


def run_protect(
    cfg: ProtectConfig, on_result: Callable[[PhotoResult], None] | None = None
) -> list[PhotoResult]:
    """Cloak every photo; a failing photo is reported (through `on_result`, as it finishes) and the others go on.

    Under torchrun each rank cloaks its shard of the photos (`anti_i2v.core.distributed`): every output is
    one photo's own files, so no two ranks write the same file; the results of every rank are
    returned on each, in the photos' order.
    """
    ranks = Ranks.from_env()
    device = ranks.device(pick_device(cfg.device))
    with process_group(ranks, device):
        run, jobs, backbones = prepare_run(cfg, device)
        if not jobs:
            if ranks.is_main:
                console.print(
                    f"nothing to cloak in {', '.join(cfg.images)}: every image there is a cloak "
                    "or another output of this toolkit"
                )
            return []
        dest = OutputFolder(cfg.out)
        dest.local.mkdir(parents=True, exist_ok=True)
        cloaker = Cloaker(
            backbone=backbones[0],
            run=run,
            dest=dest,
            target=load_photo(Path(cfg.target)).work_pixels(cfg.work_max_side)
            if cfg.target
            else None,
            lpips_model=load_lpips() if run.weights.get("lpips") else None,
            members=backbones[1:],
        )
        # Whole batches go to the ranks, so each batch holds the photos it holds in one process
        # and a photo's cloak (which depends on its batch within float error) is the same bytes.
        batches = ranks.shard(
            [jobs[i : i + cfg.batch_size] for i in range(0, len(jobs), cfg.batch_size)]
        )
        results: list[PhotoResult] = []

        def report(result: PhotoResult) -> None:
            results.append(result)
            if on_result is not None:
                on_result(result)
            progress.advance(task)

        try:
            with progress_bar(console, ranks.is_main) as progress:
                total = sum(map(len, batches))
                task = progress.add_task(f"{cfg.method} on {backbones[0].name}", total=total)
                for batch in batches:
                    _protect_batch(batch, cloaker, report)
        finally:
            dest.close()
        by_name = {r.name: r for part in ranks.gather(results) for r in part}
        return [by_name[job.name] for job in jobs]


def _ready(job: Job, run: Run, dest: OutputFolder) -> Photo | PhotoResult:
    """The job's photo if it is to be cloaked now, else why not (unreadable, too small, done)."""
    try:
        photo = load_photo(job.source)
    except ToolkitError as exc:
        return PhotoResult(job.name, "failed", str(exc), bad_input=True)
    if min(photo.size) < MIN_SIDE:
        return PhotoResult(
            job.name,
            "skipped",
            f"too small to protect ({photo.size[1]}x{photo.size[0]} px; "
            f"at least {MIN_SIDE} px a side)",
            bad_input=True,
        )
    if run.region is not None:
        try:  # a photo without a usable region is refused alone (it is cloaked on its own size)
            run.region.binary(photo, photo.work_size(run.cfg.work_max_side))
        except ToolkitError as exc:
            return PhotoResult(job.name, "failed", str(exc), bad_input=True)
    done = _already_done(job, run, dest, photo)
    if done is not None:
        return done
    if not dest.url:
        clash = foreign_output(job, dest.local, photo.sha256)
        if clash is not None:
            return PhotoResult(job.name, "failed", clash)
    return photo


def _already_done(job: Job, run: Run, dest: OutputFolder, photo: Photo) -> PhotoResult | None:
    if job.keep_original_as is not None and job.keep_original_as.exists():
        # In place, another run on this folder moved the original aside: it cloaks this photo.
        return PhotoResult(job.name, "skipped", "another run cloaked it in place")
    side_path = dest.done_sidecar(job.name)
    old = Sidecar.read(side_path) if side_path is not None else None
    if old is not None and run.matches(old, photo):
        return PhotoResult(job.name, "skipped", "already cloaked with these settings", old)
    return None


def _protect_batch(jobs: list[Job], cloaker: Cloaker, report) -> None:
    """Up to --batch-size photos: skip, refuse, or cloak (photos of one working size together)
    and write; each photo's result goes to `report` as it is known. Never raises for a photo's
    own fault."""
    run, dest = cloaker.run, cloaker.dest
    with contextlib.ExitStack() as locks:
        groups: dict[tuple, list[tuple[Job, Photo]]] = {}
        for job in jobs:
            photo = _ready(job, run, dest)
            if isinstance(photo, PhotoResult):
                report(photo)
                continue
            if not locks.enter_context(photo_lock(dest.local, job.name)):
                report(PhotoResult(job.name, "skipped", "another run is cloaking it now"))
                continue
            # Another run on this folder may have finished the photo while this one read it.
            done = _already_done(job, run, dest, photo)
            if done is not None:
                report(done)
                continue
            groups.setdefault(photo.work_size(run.cfg.work_max_side), []).append((job, photo))
        for group in groups.values():
            done = _cloak_together(group, cloaker)
            if done is None:  # a single photo, or a batch that diverged: each photo alone
                for job, photo in group:
                    _cloak_alone(job, photo, cloaker, report)
                continue
            for (job, _), (cloak, sidecar) in zip(group, done, strict=True):
                report(_write(job, cloak, sidecar, run, dest))


def _cloak_together(group, cloaker: Cloaker) -> list | None:
    """Cloaks and sidecars of a group of two or more photos cloaked as one batch; None for a
    single photo, or when the batch diverged (one photo's divergence must not fail the rest)."""
    if len(group) < 2:
        return None
    try:
        return cloaker.cloak([photo for _, photo in group])
    except DivergedError:
        return None


def _cloak_alone(job, photo, cloaker: Cloaker, report) -> None:
    """One photo on its own; a diverging objective fails it alone, with a hint."""
    try:
        ((cloak, sidecar),) = cloaker.cloak([photo])
    except DivergedError as exc:
        report(PhotoResult(job.name, "failed", f"{exc}; try a smaller --alpha or fewer loss terms"))
        return
    report(_write(job, cloak, sidecar, cloaker.run, cloaker.dest))


def _write(
    job: Job, cloak: np.ndarray, sidecar: Sidecar, run: Run, dest: OutputFolder
) -> PhotoResult:
    """Write one cloak (PNG, loss curve, then the sealed sidecar, whose presence means done).

    In place, the original moves aside before its name is reused, through a journal that makes
    every step resumable (`protect.in_place`).
    """
    out = dest.local

    def loss_curve(s: Sidecar) -> None:
        _loss_curve(s.losses, out / f"{job.name}.loss.png")

    if job.keep_original_as is not None:
        sidecar = with_original(sidecar, job.keep_original_as, run.cfg.record_paths)
        sidecar = write_in_place(
            job.source, job.keep_original_as, job.name, cloak, sidecar, loss_curve
        )
        return PhotoResult(job.name, "done", sidecar=sidecar)
    # The marker says, until the sidecar is there, that the files being written are this
    # photo's: a run killed in between resumes over them (`foreign_output`).
    marker = pending_path(out, job.name)
    write_text_atomic(marker, json.dumps({"photo_sha256": sidecar.photo_sha256}))
    write_png_uint8(cloak, out / f"{job.name}.png")
    sidecar = sidecar.sealed(file_sha256(out / f"{job.name}.png"))
    loss_curve(sidecar)
    # The sidecar is written last: its presence means done.
    write_text_atomic(out / f"{job.name}.json", json.dumps(sidecar.to_json(), indent=1))
    marker.unlink(missing_ok=True)
    dest.publish([f"{job.name}.png", f"{job.name}.loss.png", f"{job.name}.json"])
    return PhotoResult(job.name, "done", sidecar=sidecar)
