"""The evaluate job: videos from clean and protected photos, metrics, robustness, transfer, report.

For every photo (matched by name between `--clean` and each `--protected` folder), every eval
model and seed, the model generates a video from the clean photo and from the protected photo
(after each distortion on the main model; the `--models` transfer models see the undistorted
cloak, which keeps a transfer run to one video per photo and method); identity similarity (ISM)
is measured against the clean photo by every identity judge. Generated videos are cached under
`OUT/.videos/`, so a re-run is cheap. The rows and their statistics are in `results`, the
equal-visibility frontier (`--budgets`) in `frontier`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import fsspec
import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from anti_i2v.analyses.reference import VisionEncoder, load_vision_encoder
from anti_i2v.core.common import (
    ToolkitError,
    cached_tensors,
    check_writable_dir,
    file_sha256,
    is_url,
    pick_device,
    to_uint8,
    write_text_atomic,
)
from anti_i2v.core.distributed import Ranks, process_group
from anti_i2v.core.images import check_file_name, gather_images, load_photo
from anti_i2v.core.video import strip
from anti_i2v.evaluate.frontier import (
    FrontierPlan,
    frontier_summary,
    write_frontier_figures,
)
from anti_i2v.evaluate.identity import IdentityModel, load_identity
from anti_i2v.evaluate.results import (
    DEFAULT_EPS,
    CloakMeasures,
    CloakSet,
    EvalRow,
    VideoMeasures,
    json_num,
    method_label,
    protected_spec,
    summarise,
    write_csv,
)
from anti_i2v.models.backbones import (
    Backbone,
    check_generates,
    check_offload,
    load_backbone,
    resolve_model,
)
from anti_i2v.models.registry import judge_name
from anti_i2v.probe.store import check_location
from anti_i2v.protect.config import EvaluateConfig
from anti_i2v.protect.distortions import distort
from anti_i2v.protect.metrics import (
    DELTA_E_PERCENTILE,
    delta_e_map,
    identity_similarity,
    psnr,
    ssim,
    ssim_video,
    temporal_coherence,
)
from anti_i2v.protect.output import OutputFolder
from anti_i2v.protect.perceptual import load_lpips
from anti_i2v.protect.sidecar import Sidecar

console = Console(stderr=True)


@dataclass
class Judges:
    """The models that judge videos and cloaks: identity (one or more), reference encoder and LPIPS (optional)."""

    identities: dict[str, IdentityModel]  # judge name -> frames (N, 3, H, W) in [0, 1] -> (N, D)
    reference: VisionEncoder | None
    lpips: torch.nn.Module | None

    @classmethod
    def load(cls, cfg: EvaluateConfig) -> Judges:
        return cls(
            {judge_name(spec): load_identity(spec) for spec in cfg.identity},
            load_vision_encoder(cfg.reference, "reference similarity") if cfg.reference else None,
            load_lpips(purpose="cloak_lpips is left empty"),
        )

    def require_faces(self, photos: list[Path]) -> None:
        """A face judge needs a face in every clean photo: one line naming the first without."""
        for judge in self.identities.values():
            if getattr(judge, "needs_face", False):
                for path in photos:
                    judge.require_face(load_photo(path).pixels, str(path))

    def ism(self, frames: torch.Tensor, photo: torch.Tensor) -> dict[str, float]:
        """Judge -> mean identity similarity of `frames` `(N, 3, H, W)` to `photo` `(3, H, W)`."""
        return {n: identity_similarity(j, frames, photo) for n, j in self.identities.items()}

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
        colour = delta_e_map(protected, photo)
        return CloakMeasures(
            cloak_psnr=psnr(protected, photo),
            cloak_ssim=ssim(protected, photo),
            cloak_delta_e=float(colour.mean()),
            cloak_delta_e_p95=float(np.percentile(colour, DELTA_E_PERCENTILE)),
            cloak_lpips=self.lpips_distance(protected, photo),
            cloak_ism=self.ism(protected[None], photo),
        )

    def video(
        self, video: torch.Tensor, clean_video: torch.Tensor, photo: torch.Tensor
    ) -> VideoMeasures:
        """Measures of a video `(F, 3, H, W)`; frame 0 is skipped for identity (it is the input)."""
        return VideoMeasures(
            ism=self.ism(video[1:], photo),
            psnr_video=psnr(video, clean_video),
            ssim_video=ssim_video(video, clean_video),
            temporal=temporal_coherence(video),
            ref=self.reference_similarity(video[1:], photo),
        )


def _read_set(spec: str, main_model: str) -> CloakSet:
    """A `--protected` argument, `DIR` or `NAME=DIR`: its cloaks, label and provenance from a sidecar."""
    name, folder = protected_spec(spec)
    if not folder.is_dir():
        raise ToolkitError(f"--protected {spec}: no such folder (pass DIR or NAME=DIR)")
    files = {p.stem: p for p in gather_images([folder]) if not p.name.endswith(".loss.png")}
    # Another JSON file, or a damaged sidecar, is passed over; an edited one names no recipe
    # (its cloak is left out later, `cloak_problem`).
    sidecars = {
        p.stem: s for p in sorted(folder.glob("*.json")) if (s := Sidecar.read(p)) is not None
    }
    untouched = {n: s for n, s in sidecars.items() if not s.tampered()}
    check_one_recipe(spec, untouched)
    recipe = next(iter(untouched.values()), None)
    if recipe is None:
        label, model, budget = folder.name, "unknown", math.nan
    else:
        label, model = method_label(recipe.settings), recipe.model
        budget = float(recipe.settings.get("eps", DEFAULT_EPS))
    if name is not None:
        label = name
    elif model not in (main_model, "unknown"):
        # Cloaks made on another model than the main one are a transfer row of their own.
        label = f"{label} (made on {model})"
    return CloakSet(label, files, model, budget, recipe, named=name is not None, sidecars=sidecars)


def _recipe_of(side: Sidecar) -> tuple:
    """What makes cloaks one row: the model, the settings, the layers (not the photo)."""
    settings = json.dumps(side.settings, sort_keys=True)
    return side.model, settings, tuple(side.collapse_layers), tuple(side.anchor_layers)


def check_one_recipe(spec: str, sidecars: dict[str, Sidecar]) -> None:
    """Refuse a folder whose cloaks were made with different models or settings, naming the
    odd ones out: one row is one recipe, and a row labelled by its first sidecar would
    otherwise mix them."""
    groups: dict[tuple, list[str]] = {}
    for name, side in sidecars.items():
        groups.setdefault(_recipe_of(side), []).append(name)
    if len(groups) < 2:
        return
    ranked = sorted(groups.values(), key=len, reverse=True)
    odd = sorted(n for g in ranked[1:] for n in g)
    first = sidecars[ranked[0][0]]
    shown = ", ".join(odd[:5]) + (f" and {len(odd) - 5} more" if len(odd) > 5 else "")
    raise ToolkitError(
        f"--protected {spec} mixes cloaks made with different models or settings: most are "
        f"{method_label(first.settings)} on {first.model}, but not {shown}; put each recipe in "
        "a folder of its own"
    )


class _VideoCache:
    """Videos one backbone generates from images at one seed, cached on disk by the image's bytes."""

    def __init__(self, backbone: Backbone, seed: int, steps: int, root: Path):
        self.backbone, self.seed, self.steps = backbone, seed, steps
        self.folder = root / backbone.model_key()

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """`(3, H, W)` in [0, 1] -> `(F, 3, H, W)` in [0, 1]."""

        def generate() -> dict[str, torch.Tensor]:
            return {"video": self.backbone.generate(image, steps=self.steps, seed=self.seed)}

        key = f"{_sha(image)}-s{self.seed}-n{self.steps}"
        return cached_tensors(self.folder / f"{key}.safetensors", generate)["video"]


def _sha(t: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(to_uint8(t).tobytes()).hexdigest()[:16]


class _Measurer:
    """Generates and judges videos for cloak sets on one backbone; cloak measures are cached per cloak."""

    def __init__(self, cfg: EvaluateConfig, judges: Judges, out: Path):
        self.cfg, self.judges, self.out = cfg, judges, out
        self.cloaks: dict[tuple[str, str, float], CloakMeasures] = {}  # same for every model, seed

    def rows(
        self,
        backbone: Backbone,
        clean: dict[str, Path],
        sets: list[CloakSet],
        distortions: list[str],
        advance: Callable[[], None],
        strips: dict[str, np.ndarray] | None = None,
    ) -> list[EvalRow]:
        """Rows of the clean photo and of every set's cloak under every distortion, per photo and seed."""
        rows: list[EvalRow] = []
        for name, photo_path in clean.items():
            photo = load_photo(photo_path).pixels
            # By position: a frontier's sets share one label across budgets
            pixels = [_cloak_of(s.files[name], photo) for s in sets]
            for s, px in zip(sets, pixels, strict=True):
                if (name, s.label, s.budget) not in self.cloaks:
                    self.cloaks[name, s.label, s.budget] = self.judges.cloak(px, photo)
            for seed in range(self.cfg.seeds):
                generate = _VideoCache(backbone, seed, self.cfg.steps, self.out / ".videos")
                clean_video = generate(photo)
                clean_m = self.judges.video(clean_video, clean_video, photo)
                key = dict(photo=name, eval_model=backbone.name, seed=seed)
                rows += EvalRow.rows(
                    {**key, "method": "clean", "made_on": "", "budget": 0.0, "distortion": "none"},
                    clean_m,
                    clean_m,
                    self.judges.cloak(photo, photo),
                )
                advance()
                for s, px in zip(sets, pixels, strict=True):
                    for dist in distortions:
                        video = generate(distort(px, dist, seed, backbone))
                        row_key = {**key, "method": s.label, "made_on": s.made_on}
                        rows += EvalRow.rows(
                            {**row_key, "budget": s.budget, "distortion": dist},
                            clean_m,
                            self.judges.video(video, clean_video, photo),
                            self.cloaks[name, s.label, s.budget],
                        )
                        if (
                            strips is not None
                            and (dist, seed) == ("none", 0)
                            and len(strips) < 3 * len(sets)
                        ):
                            strips[f"{name}__{s.label}"] = np.concatenate(
                                [strip(clean_video), strip(video)], 0
                            )
                        advance()
        return rows


def evaluate(cfg: EvaluateConfig) -> Path:
    """Run the evaluation; writes results.csv, summary.json, index.html and strips into `out`.

    With `cfg.budgets`, also the equal-visibility frontier: every main-model method re-cloaked at
    each budget through protect (cached under `out/.cloaks/`), in frontier.csv, the summary's
    `frontier` and a figure per judge.

    Under torchrun each rank generates and judges the videos of its shard of the photos (every
    method, seed, distortion and eval model of a photo on one rank, so its clean video is made
    once); rank 0 gathers the rows in the single-process order and alone writes the tables,
    figures and report.
    """
    ranks = Ranks.from_env()
    device = ranks.device(pick_device(cfg.device))
    with process_group(ranks, device):
        return _evaluate(cfg, ranks, device)


def check_not_an_input(out: Path, cfg: EvaluateConfig) -> None:
    """Refuse an `--out` that is, or lies inside, the clean or a protected folder: the report's
    files (index.html, results.csv, ...) would land among, and could replace, the user's own."""
    out_r = out.resolve()
    inputs = [("--clean", cfg.clean)] + [
        ("--protected", protected_spec(p)[1]) for p in cfg.protected if not is_url(p)
    ]
    for flag, folder in inputs:
        f = Path(folder).resolve()
        if out_r == f or f in out_r.parents:
            raise ToolkitError(
                f"--out {out} is inside the {flag} folder {folder}: the report would be written "
                "among its photos; choose another --out"
            )


def evaluate_cache(url: str) -> Path:
    """Where evaluate keeps a URL report's caches (generated videos, frontier cloaks) and stages
    its files on this machine, so a re-run resumes: ANTI_I2V_CACHE or ~/.cache/anti-i2v, then
    evaluate/<hash of the URL>."""
    root = Path(os.environ.get("ANTI_I2V_CACHE", Path.home() / ".cache" / "anti-i2v"))
    return root / "evaluate" / hashlib.sha256(url.encode()).hexdigest()[:16]


def mirror_protected(cfg: EvaluateConfig, rank: int = 0) -> EvaluateConfig:
    """`cfg` with every `--protected` URL (`s3://bucket/cloaks`, or NAME=URL) replaced by a local
    copy of its files: cloaks and sidecars are small, and every later step reads folders.

    The copy lives in the evaluate cache under the URL's own folder name, so the report names
    it as it would a local folder; each rank copies into its own folder (no two processes write
    one file). A URL that cannot be reached, or holds no files, is one line.
    """
    specs = []
    for spec in cfg.protected:
        name, sep, where = spec.partition("=")
        url = where if sep and is_url(where) else spec if is_url(spec) else None
        if url is None:
            specs.append(spec)
            continue
        check_location(url, "--protected")
        fs, root = fsspec.core.url_to_fs(url)
        root = root.rstrip("/")
        files = [f for f in fs.find(root) if f.rsplit("/", 1)[0] == root]  # the folder itself
        if not files:
            raise ToolkitError(f"--protected {url}: no files there (pass the folder of cloaks)")
        local = evaluate_cache(url) / "protected" / f"rank{rank}" / root.rsplit("/", 1)[-1]
        local.mkdir(parents=True, exist_ok=True)
        for f in files:
            fs.get_file(f, str(local / f.rsplit("/", 1)[-1]))
        specs.append(f"{name}={local}" if sep else str(local))
    return replace(cfg, protected=tuple(specs))


def _evaluate(cfg: EvaluateConfig, ranks: Ranks, device: str) -> Path:
    # At a URL the report is staged on this machine and uploaded once written (rank 0).
    if is_url(cfg.out):
        check_location(cfg.out)  # the file system is installed and the bucket reachable
        dest = OutputFolder(cfg.out, evaluate_cache(cfg.out))
    else:
        dest = OutputFolder(cfg.out)
        check_not_an_input(dest.local, cfg)
        check_writable_dir(dest.local)
    out = dest.local
    cfg = mirror_protected(cfg, ranks.rank)
    for model in [cfg.model, *cfg.models]:  # an unknown model is one line now, not after an hour
        resolve_model(model)
        check_generates(model)
    check_offload(cfg.offload, device)
    clean, sets = match_photos(cfg)
    plan = FrontierPlan.make(cfg, clean, sets, out) if cfg.budgets else None  # checked up front
    out.mkdir(parents=True, exist_ok=True)
    judges = Judges.load(cfg)
    judges.require_faces(list(clean.values()))
    frontier_sets = plan.cloak() if plan else []  # protect shards these over the ranks itself
    mine = {name: clean[name] for name in ranks.shard(list(clean))}
    distortions = ["none", *[d for d in cfg.distortions if d != "none"]]
    n = len(mine) * cfg.seeds
    total = n * (1 + len(sets) * len(distortions)) + n * len(cfg.models) * (1 + len(sets))
    total += n * (1 + len(frontier_sets)) if plan else 0
    rows: list[EvalRow] = []
    frontier_rows: list[EvalRow] = []
    strips: dict[str, np.ndarray] = {}
    measure = _Measurer(cfg, judges, out)
    ran: list[str] = []  # the eval models' names, in the order their rows were made
    with Progress(console=console, disable=not ranks.is_main) as progress:
        task = progress.add_task("evaluate", total=total)

        def advance() -> None:
            progress.advance(task)

        for model in [cfg.model, *cfg.models]:
            backbone = load_backbone(model, None, cfg.dtype, device, offload=cfg.offload)
            ran.append(backbone.name)
            # Transfer models see the undistorted cloaks: one video per photo and method.
            model_distortions = distortions if model == cfg.model else ["none"]
            rows += measure.rows(
                backbone,
                mine,
                sets,
                model_distortions,
                advance,
                strips if model == cfg.model else None,
            )
            if plan and model == cfg.model:
                frontier_rows = measure.rows(
                    backbone, _complete(mine, frontier_sets), frontier_sets, ["none"], advance
                )
    order = list(clean)
    rows = _in_order(ranks.gather(rows), order, ran)
    frontier_rows = _in_order(ranks.gather(frontier_rows), order, ran)
    shown = set(order[:3])  # the report's strips are the first photos': only theirs travel
    strips = ranks.gather_items(
        {k: v for k, v in strips.items() if any(k.startswith(f"{p}__") for p in shown)}
    )
    strips = _first_strips([strips], order, 3 * len(sets))
    if not ranks.is_main:
        return out
    write_csv(rows, out / "results.csv")
    summary = summarise(rows, cfg)
    if plan:
        write_csv(frontier_rows, out / "frontier.csv")
        summary["frontier"] = frontier_summary(frontier_rows, cfg.budgets)
        write_frontier_figures(frontier_rows, summary["frontier"], out)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=json_num))
    from anti_i2v.evaluate.report import write_report

    write_report(out, summary, strips)
    dest.publish(dest.shared_files())  # the report, not the hidden caches
    return out


def _in_order(parts: list[list[EvalRow]], photos: list[str], models: list[str]) -> list[EvalRow]:
    """Every rank's rows in the single-process order: by eval model (`models`, the backbones'
    names in the order they ran), then photo.

    Within one (model, photo) the rows come from one rank in the order it made them, and a
    stable sort keeps that order.
    """
    photo_at = {p: i for i, p in enumerate(photos)}
    model_at = {m: i for i, m in enumerate(models)}
    rows = [r for part in parts for r in part]
    return sorted(rows, key=lambda r: (model_at[r.eval_model], photo_at[r.photo]))


def _first_strips(
    parts: list[dict[str, np.ndarray]], photos: list[str], limit: int
) -> dict[str, np.ndarray]:
    """The strips of the first photos, as one process keeps them (`limit` in all)."""
    merged = {k: v for part in parts for k, v in part.items()}  # keys: "<photo>__<set label>"

    def photo_index(key: str) -> int:
        return next(i for i, p in enumerate(photos) if key.startswith(f"{p}__"))

    keys = sorted(merged, key=photo_index)  # stable: each photo's sets stay in set order
    return {k: merged[k] for k in keys[:limit]}


def match_photos(cfg: EvaluateConfig) -> tuple[dict[str, Path], list[CloakSet]]:
    """Clean photos that have a cloak in every protected folder, and each folder's cloak set.

    Returns:
        (name -> clean photo path, one CloakSet per `--protected`, in order)
    """
    clean = {}
    for p in gather_images([Path(cfg.clean)]):
        try:
            check_file_name(p)  # a name the CSV cannot hold fails here, not after every video
        except ToolkitError as exc:
            console.print(f"[yellow]left out:[/] {exc}")
            continue
        clean[p.stem] = p
    sets: list[CloakSet] = []
    for spec in cfg.protected:
        s = _read_set(spec, cfg.model)
        if any(s.label == other.label for other in sets):
            raise ToolkitError(
                f"two protected folders hold {s.label} cloaks; pass each method once, "
                "or name each row with NAME=DIR"
            )
        sets.append(s)
    names = sorted(n for n in clean if all(n in s.files for s in sets))
    excluded = {}
    checked = [s for s in sets if s.sidecars]  # folders of other tools' cloaks have no records
    for name in names if checked else ():
        clean_sha = file_sha256(clean[name])  # once per photo, whatever the number of sets
        for s in checked:
            why = cloak_problem(s, name, clean[name], clean_sha)
            if why is not None and name not in excluded:
                excluded[name] = f"{s.files[name]}: {why}"
    for why in excluded.values():
        console.print(f"[yellow]left out:[/] {why}")
    names = [n for n in names if n not in excluded]
    if not names:
        raise ToolkitError(
            f"no photo of {cfg.clean} has a protected version in {', '.join(cfg.protected)} "
            "(photos are matched by file name)"
        )
    unmatched = sum(len(set(s.files) - set(clean)) for s in sets)
    if unmatched:
        console.print(
            f"[yellow]note:[/] {unmatched} cloak(s) have no clean photo of the same name in "
            f"{cfg.clean} and are left out"
        )
    return {n: clean[n] for n in names}, sets


def cloak_problem(cloaks: CloakSet, name: str, clean: Path, clean_sha: str) -> str | None:
    """Why the cloak of `name` in a set must not be scored against `clean`, or None.

    A set with sidecars (made by protect) is checked cloak by cloak against its own sidecar:
    the sidecar unedited (its content hash), the PNG the one protect wrote (its sha256; for
    sidecars from before it was recorded, the PSNR to the clean photo within 0.5 dB of the
    recorded one), and the clean photo the one it was made from (`clean_sha`, its sha256). A
    folder without sidecars (another tool's cloaks) has nothing to check against.
    """
    if not cloaks.sidecars:
        return None
    side = cloaks.sidecars.get(name)
    if side is None:
        return "no readable sidecar beside it, so nothing says how it was made; cloak it again"
    if side.tampered():
        return "its sidecar was edited after protect wrote it (its content hash differs); cloak it again"
    if side.photo_sha256 != clean_sha:
        return (
            f"it was made from another photo than {clean.name} (the sha256 in its sidecar "
            "differs): compare a photo with its own cloak"
        )
    if side.cloak_sha256 is not None:
        if side.cloak_sha256 != file_sha256(cloaks.files[name]):
            return "it is not the PNG protect wrote (its sha256 differs from the sidecar's); cloak it again"
    elif _recorded_psnr_differs(cloaks.files[name], clean, side.psnr):
        return (
            "it is not the PNG protect wrote (its PSNR differs from the sidecar's); cloak it again"
        )
    return None


def _recorded_psnr_differs(cloak: Path, clean: Path, recorded: float) -> bool:
    a, b = load_photo(cloak).pixels, load_photo(clean).pixels
    if a.shape != b.shape:
        return True
    measured = psnr(a, b)
    if math.isinf(measured) or math.isinf(recorded):
        return measured != recorded
    return abs(measured - recorded) > 0.5


def _complete(clean: dict[str, Path], sets: list[CloakSet]) -> dict[str, Path]:
    """The photos with a cloak in every set (a photo protect failed on is left out, with a note)."""
    kept = {n: p for n, p in clean.items() if all(n in s.files for s in sets)}
    if len(kept) < len(clean):
        console.print(
            f"[yellow]note:[/] {len(clean) - len(kept)} photo(s) lack a cloak at some budget "
            "and are left out of the frontier"
        )
    return kept


def _cloak_of(path: Path, photo: torch.Tensor) -> torch.Tensor:
    protected = load_photo(path).pixels
    if protected.shape != photo.shape:
        raise ToolkitError(
            f"{path} is {tuple(protected.shape[1:])}, the clean photo {tuple(photo.shape[1:])}: "
            "compare a photo with its own cloak"
        )
    return protected
