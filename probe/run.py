"""The probe job: every block of a video denoiser, for every image, timestep and seed, into zarr.

One nnsight trace of the bare denoiser per (image batch, timestep, seed), conditional branch
only. The clean latent is the still video of the image (see `Conditioning`), noised at each
timestep with noise drawn from (seed, sample) so batch size never changes a value.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from anti_i2v.core.common import TOOLKIT_VERSION, ToolkitError, pick_device, progress_bar
from anti_i2v.core.distributed import Ranks, process_group
from anti_i2v.core.images import Photo, gather_images, load_photo
from anti_i2v.models.backbones import Backbone, load_backbone
from anti_i2v.models.capture import (
    block_order,
    capture_vae,
    frame_indices,
    pool_spatial,
    to_grid,
    trace_blocks,
)
from anti_i2v.models.layers import split_vae_layers
from anti_i2v.probe.config import ProbeConfig
from anti_i2v.probe.store import (
    ActivationStore,
    CellWriter,
    StoreAttrs,
    check_location,
    create_or_resume,
    ensure_layer,
    finish,
    mark_done,
)

console = Console(stderr=True)


@dataclass
class ProbeResult:
    """What a probe run did: the store, the images it skipped and why, timings."""

    store: ActivationStore
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # (timestep index, sample) re-written
    repaired: list[tuple[int, int]] = field(default_factory=list)
    seconds: float = 0.0
    cells_written: int = 0


def load_photos(paths: list[Path], max_side: int) -> tuple[list[Photo], list[tuple[str, str]]]:
    """Decode every image; a bad one is skipped with its reason instead of stopping the run."""
    good, bad = [], []
    for p in paths:
        try:
            good.append(load_photo(p, max_side=max_side))
        except ToolkitError as exc:
            bad.append((str(p), str(exc)))
    return good, bad


def sample_noise(shape: tuple[int, ...], seed: int, sample: int) -> torch.Tensor:
    """Noise for one sample, from (seed, sample) alone."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + sample))


def probe_cells(
    backbone: Backbone,
    pixels: torch.Tensor,
    t: float,
    seeds_and_ids: list[tuple[int, int]],
    layers: list[str],
    frames: int | None,
    pool: int,
    video_frames: int | None,
) -> dict[str, torch.Tensor]:
    """Block activations `(B, F', H', W', C)` for an image batch at one timestep.

    `layers` may end with VAE encoder blocks (`is_vae_layer`). The VAE encodes the photo once, so
    its features are stored as a still video over the kept frames, area-averaged to the first
    denoiser block's token grid: every layer then shares the frame axis and compares position by
    position with the denoiser's (the VAE's own resolution is what IRA uses in protect).
    """
    blocks, vae_blocks = split_vae_layers(layers)
    with torch.no_grad():
        with capture_vae(backbone, vae_blocks) as vae:
            cond = backbone.condition(pixels.to(backbone.device), video_frames)
        noise = torch.stack(
            [sample_noise(tuple(cond.clean.shape[1:]), s, i) for s, i in seeds_and_ids]
        )
        noisy = backbone.add_noise(cond.clean, noise.to(cond.clean), t)
        hidden = trace_blocks(backbone, backbone.denoiser_kwargs(noisy, cond, t), blocks)
        out = {}
        for name, h in hidden.items():
            x = backbone.layout(h, cond)
            out[name] = x[:, frame_indices(x.shape[1], frames)].float()
        first = out[blocks[0]]
        for name, x in vae.items():
            x = to_grid(x[:, :1].float().flatten(0, 1), tuple(first.shape[2:4]))
            out[name] = x[:, None].expand(-1, first.shape[1], -1, -1, -1)
        return {name: pool_spatial(out[name], pool).cpu() for name in layers}


def run_probe(cfg: ProbeConfig) -> ProbeResult:
    """Run (or resume) a probe; returns the store and what was skipped.

    Under torchrun every rank probes its shard of the pending (timestep, sample) cells; rank 0
    creates the store and its arrays first and consolidates it last (`anti_i2v.core.distributed`).
    """
    ranks = Ranks.from_env()
    device = ranks.device(pick_device(cfg.device))
    with process_group(ranks, device):
        return _run_probe(cfg, ranks, device)


def _run_probe(cfg: ProbeConfig, ranks: Ranks, device: str) -> ProbeResult:
    started = time.time()
    check_location(cfg.out)  # a missing bucket or unwritable folder: one line, no model loaded
    backbone = load_backbone(cfg.model, cfg.family, cfg.model_dtype, device, offload=cfg.offload)
    photos, skipped = load_photos(
        gather_images([Path(p) for p in cfg.images]), 2 * max(backbone.resolution)
    )
    if not photos:
        raise ToolkitError(
            "none of the images could be read: " + "; ".join(why for _, why in skipped)
        )
    pixels = torch.cat([backbone.resize(p.pixels[None]) for p in photos])
    # Sample axis: image-major, seed-minor.
    cells = [(i, seed) for i in range(len(photos)) for seed in cfg.seeds]
    names = _unique_names([p.name for p in photos])
    samples = [
        {
            "name": names[i],
            "sha256": photos[i].sha256,
            "size": list(photos[i].size),
            "seed": seed,
            "image": i,
        }
        for i, seed in cells
    ]

    with torch.no_grad():  # plain forwards record block order (one per band of timesteps)
        cond = backbone.condition(pixels[:1].to(device), cfg.video_frames)
        layers = block_order(
            backbone, lambda t: backbone.denoiser_kwargs(cond.clean, cond, t), cfg.timesteps
        )
        kept = frame_indices(cond.clean.shape[1], cfg.frames)  # the store's frame coordinate
    unprobed = [name for name in backbone.block_names() if name not in layers]
    if unprobed:  # a model of experts, and no timestep in one expert's band
        raise ToolkitError(
            f"--timesteps {','.join(map(str, cfg.timesteps))} never run {len(unprobed)} of "
            f"{backbone.name}'s blocks ({unprobed[0]}, ...): add a timestep its expert "
            f"denoises (each expert owns a band of timesteps)"
        )
    # which timestep indices each block does not run at (a model of experts: the other band's)
    runs_at = {ti: set(backbone.active_blocks(t)) for ti, t in enumerate(cfg.timesteps)}
    inactive = {
        name: [ti for ti in runs_at if name not in runs_at[ti]]
        for name in layers
        if any(name not in active for active in runs_at.values())
    }
    if (
        cfg.vae
    ):  # after the denoiser's blocks: depth and the first and last block stay the denoiser's
        layers += backbone.vae_block_names()
    attrs = StoreAttrs(
        model=backbone.name,
        family=backbone.family,
        config_sha256=backbone.config_sha256(),
        weights_sha256=backbone.weights_sha256,
        layers=layers,
        timesteps=list(cfg.timesteps),
        seeds=list(cfg.seeds),
        samples=samples,
        frames=cfg.frames,
        pool=cfg.pool,
        dtype=cfg.dtype,
        resolution=list(backbone.resolution),
        video_frames=cfg.video_frames or backbone.default_frames,
        toolkit_version=TOOLKIT_VERSION,
        config={k: v for k, v in asdict(cfg).items() if k != "repair"},
        inactive=inactive,
    )
    probe = functools.partial(
        probe_cells,
        backbone,
        layers=layers,
        frames=cfg.frames,
        pool=cfg.pool,
        video_frames=cfg.video_frames,
    )

    def at(ti: int) -> list[str]:
        """The layers stored at timestep index ti: every one that runs there."""
        return [name for name in layers if ti not in inactive.get(name, ())]

    def first_cell() -> dict[str, torch.Tensor]:
        """One cell of every layer (shapes for the arrays): a timestep of each band."""
        out: dict[str, torch.Tensor] = {}
        for ti, t in enumerate(cfg.timesteps):
            if any(name not in out for name in at(ti)):
                sample = [(cells[0][1], cells[0][0])]
                out |= probe(pixels[:1], float(t), sample, layers=at(ti))
        return out

    store, repaired, todo = _shared_store(cfg, attrs, ranks, first_cell, kept, len(cells))
    result = ProbeResult(store=store, skipped=skipped, repaired=repaired)
    mine = ranks.shard(todo)
    with (
        progress_bar(console, ranks.is_main) as progress,
        CellWriter(store, cfg.dtype, frames=kept, codec=cfg.codec) as writer,
    ):
        task = progress.add_task(f"probe {backbone.name}", total=len(mine))
        for ti, t in enumerate(cfg.timesteps):
            pending = [j for tj, j in mine if tj == ti]
            for k in range(0, len(pending), cfg.batch_size):
                batch = pending[k : k + cfg.batch_size]
                acts = probe(
                    pixels[[cells[j][0] for j in batch]],
                    float(t),
                    [(cells[j][1], cells[j][0]) for j in batch],
                    layers=at(ti),
                )
                for b, j in enumerate(batch):
                    writer.put(ti, j, {name: acts[name][b].numpy() for name in at(ti)})
                    result.cells_written += 1
                progress.advance(task, len(batch))
    ranks.barrier()  # every rank's cells are written before rank 0 consolidates the store
    if ranks.is_main:
        finish(store)
    result.cells_written = sum(ranks.gather(result.cells_written))
    result.seconds = time.time() - started
    return result


def _shared_store(
    cfg: ProbeConfig,
    attrs: StoreAttrs,
    ranks: Ranks,
    first_cell: Callable[[], dict[str, torch.Tensor]],
    kept: list[int],
    n_samples: int,
) -> tuple[ActivationStore, list[tuple[int, int]], list[tuple[int, int]]]:
    """The store every rank writes into, the cells repaired, and the pending cells in order.

    Rank 0 creates (or resumes) the store, marks damaged cells for repair, creates every layer
    array under torchrun (from `first_cell`'s shapes; no other rank creates arrays), and reads the
    pending list before any rank writes; the list is broadcast, then the others open the store.
    """
    repaired: list[tuple[int, int]] = []
    todo: list[tuple[int, int]] = []
    if ranks.is_main:
        store = create_or_resume(cfg.out, attrs)
        if cfg.repair:  # a damaged cell is written again, exactly as a never-written one
            for t, s in store.damaged_cells():
                mark_done(store, t, s, done=False)
                repaired.append((t, s))
        if ranks.distributed and any(name not in store.group for name in attrs.layers):
            acts = first_cell()
            for name in attrs.layers:
                ensure_layer(store, name, tuple(acts[name].shape[1:]), cfg.dtype, kept, cfg.codec)
        done = store.completed()
        todo = [
            (ti, j) for ti in range(len(cfg.timesteps)) for j in range(n_samples) if not done[ti, j]
        ]
    # Read before any rank writes: reading it on every rank would race with rank 0's first cells.
    todo = ranks.broadcast(todo)
    if not ranks.is_main:
        store = create_or_resume(cfg.out, attrs)  # rank 0's store, its settings checked
    return store, repaired, todo


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


def summary_table(result: ProbeResult) -> Table:
    """The one-screen summary printed after a probe."""
    store = result.store
    attrs = store.attrs
    table = Table(title=f"{attrs.model} ({attrs.family}) -> {store.path}", show_lines=False)
    table.add_column("layer")
    table.add_column("shape (t, sample, f, h, w, c)")
    table.add_column("stored", justify="right")
    total = 0
    for name in store.layers:
        arr = store.array(name)
        nbytes = store.stored_bytes(name)
        total += nbytes
        table.add_row(name, str(tuple(arr.shape)), _human(nbytes))
    table.caption = (
        f"{len(store.layers)} layers, {len(attrs.samples)} samples x {len(attrs.timesteps)} timesteps, "
        f"{_human(total)} on disk, {result.cells_written} cells written in {result.seconds:.1f}s"
        + (f"; skipped {len(result.skipped)} image(s)" if result.skipped else "")
    )
    return table


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
