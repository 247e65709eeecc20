"""`anti-i2v` commands of the probe stage: models, probe, generate, world."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from anti_i2v.core.common import ToolkitError, cli_command, parse_ints
from anti_i2v.core.distributed import Ranks
from anti_i2v.models.registry import MINI_JUDGES
from anti_i2v.probe.config import MODEL_DTYPES, STORAGE_CODECS, STORAGE_DTYPES
from anti_i2v.probe.config import AttentionConfig as A
from anti_i2v.probe.config import LensConfig as L
from anti_i2v.probe.config import ProbeConfig as P

console = Console(stderr=True)


OFFLOAD_HELP = (
    "none, model or sequential: keep the weights in host memory and move each component (or "
    "each leaf module) to the GPU as it runs; for models larger than the GPU"
)


def _csv(values: tuple[int, ...]) -> str:
    return ",".join(map(str, values))


world_app = typer.Typer(
    help="The mini world: render portraits, train and describe the mini models.",
    no_args_is_help=True,
)


def models(
    check: str = typer.Option(
        None,
        "--check",
        help="run the adapter contract on a family (`wan`), every family (`all`), or your own "
        "adapter module (`my_pkg.my_adapter` or `path/to/adapter.py`; docs/adding-a-family.md)",
    ),
) -> None:
    """List the built-in models and the supported families, or check adapters against the contract."""
    if check is not None:
        _check_adapters(check)
        return
    # The registry alone: listing models imports no model library
    from anti_i2v.models.registry import (
        BUILTINS,
        FAMILY_PIPELINES,
        MINI_MODELS,
        MINI_WORLD,
        real_configs,
        source_hub,
        train_hint,
    )

    table = Table(title="built-in models")
    table.add_column("name")
    table.add_column("what it is")
    for name, what in BUILTINS.items():
        if name in MINI_MODELS and not (MINI_MODELS[name] / "model_index.json").is_file():
            what += f" (not in this checkout: `{train_hint(MINI_WORLD[name])}`)"
        table.add_row(name, what)
    for name, folder in real_configs().items():
        table.add_row(
            name, f"{source_hub(folder)}: published configs, no weights (`anti-i2v plan`)"
        )
    Console().print(table)
    fams = Table(title="families (auto-detected from model_index.json, or --family)")
    fams.add_column("family")
    fams.add_column("pipeline")
    for fam, pipeline in FAMILY_PIPELINES.items():
        fams.add_row(fam, pipeline)
    Console().print(fams)


def _check_adapters(spec: str) -> None:
    """`models --check SPEC`: the contract's six checks on each adapter, one table row a check.

    Exit 0 when every check passed, 1 when one failed (its row says how); a SPEC that names no
    family and no importable adapter module is refused with exit 2 before any model is built.
    """
    from anti_i2v.contract import CHECKS, load_adapter_module, run_contract
    from anti_i2v.models.backbones import FAMILIES, load_backbone

    if spec == "all":
        families = sorted(FAMILIES)
    elif spec in FAMILIES:
        families = [spec]
    else:
        families = [load_adapter_module(spec)]
    failed = 0
    for family in families:
        backbone = load_backbone(f"tiny:{family}")
        table = Table(title=f"adapter contract: {family} (tiny:{family}, {len(CHECKS)} checks)")
        for column in ("check", "result", "what it saw"):
            table.add_column(column)
        for outcome in run_contract(backbone):
            failed += not outcome.passed
            mark = "[green]pass[/]" if outcome.passed else "[red]FAIL[/]"
            table.add_row(outcome.check, mark, escape(outcome.detail))
        Console(soft_wrap=True).print(table)
    if failed:
        Console(stderr=True).print(f"{failed} check(s) failed: see the rows marked FAIL")
        raise typer.Exit(1)


def probe(
    model: str = typer.Argument(
        ..., help="tiny:<family>, mini-cogvideox, a pipeline folder or a hub id"
    ),
    images: list[Path] = typer.Argument(..., help="image files or folders"),
    out: str = typer.Option(
        ..., "--out", help="zarr store to write (resumed if it exists): a path or fsspec URL"
    ),
    timesteps: str = typer.Option(_csv(P.timesteps), help="timesteps on the 0..1000 scale"),
    seeds: str = typer.Option(_csv(P.seeds), help="noise seeds"),
    frames: int = typer.Option(None, help="latent frames to keep (evenly spaced); default all"),
    video_frames: int = typer.Option(None, help="video frames the model runs at; default its own"),
    pool: int = typer.Option(P.pool, help="spatial average pooling factor"),
    dtype: str = typer.Option(P.dtype, help=f"storage dtype: {' or '.join(STORAGE_DTYPES)}"),
    codec: str = typer.Option(
        P.codec, help=f"chunk compressor: {', '.join(STORAGE_CODECS)} (zstd: smallest)"
    ),
    batch_size: int = typer.Option(P.batch_size, help="images per denoiser call"),
    family: str = typer.Option(None, help="override the family detected from model_index.json"),
    model_dtype: str = typer.Option(
        P.model_dtype, help=f"weights dtype: {', '.join(MODEL_DTYPES)}"
    ),
    offload: str = typer.Option(
        P.offload,
        help=OFFLOAD_HELP,
    ),
    repair: bool = typer.Option(
        False,
        "--repair",
        help="re-write completed cells whose chunks are missing or "
        "damaged (read every chunk first)",
    ),
    vae: bool = typer.Option(
        False, "--vae", help="the VAE encoder's blocks too (vae.encoder.*), for IRA on the VAE"
    ),
    device: str = typer.Option(P.device, help="auto, cpu or cuda"),
) -> None:
    """Capture every block of a video denoiser into a zarr store."""
    from anti_i2v.core.common import check_out_given

    check_out_given(out)  # an empty or memory:// store would vanish with this process

    cfg = P(
        model=model,
        images=tuple(map(str, images)),
        out=str(out),
        timesteps=parse_ints(timesteps, "--timesteps"),
        seeds=parse_ints(seeds, "--seeds"),
        frames=frames,
        video_frames=video_frames,
        pool=pool,
        dtype=dtype,
        codec=codec,
        batch_size=batch_size,
        family=family,
        model_dtype=model_dtype,
        offload=offload,
        device=device,
        repair=repair,
        vae=vae,
    )
    from anti_i2v.probe.run import run_probe, summary_table  # torch and diffusers: after the checks

    result = run_probe(cfg)
    if not Ranks.from_env().is_main:  # under torchrun, rank 0 speaks for the run
        return
    Console().print(summary_table(result))
    if result.repaired:
        console.print(f"repaired {len(result.repaired)} damaged cell(s)")
    for path, why in result.skipped:
        console.print(f"[yellow]skipped[/] {path}: {why}")


def generate(
    model: str = typer.Argument(
        ..., help="tiny:<family>, mini-cogvideox, a pipeline folder or a hub id"
    ),
    image: Path = typer.Argument(..., help="the photo to animate"),
    out: Path = typer.Option(..., "--out", help="video file: .gif or .mp4"),
    frames: int = typer.Option(None, help="video frames; default the model's own"),
    steps: int = typer.Option(25, help="denoising steps"),
    seed: int = typer.Option(0, help="sampling seed"),
    strip: bool = typer.Option(False, "--strip", help="also write a PNG strip of the frames"),
    family: str = typer.Option(None, help="override the detected family"),
    dtype: str = typer.Option("float32", help=f"weights and forward: {', '.join(MODEL_DTYPES)}"),
    offload: str = typer.Option("none", help=OFFLOAD_HELP),
    vae_tiling: bool = typer.Option(
        False, "--vae-tiling", help="decode the video in overlapping tiles (less memory)"
    ),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    """Generate a video from one photo with the model's own pipeline."""
    from anti_i2v.probe.config import OFFLOADS

    if dtype not in MODEL_DTYPES:
        raise ToolkitError(f"--dtype {dtype}: choose from {', '.join(MODEL_DTYPES)}")
    if offload not in OFFLOADS:
        raise ToolkitError(f"--offload {offload}: choose from {', '.join(OFFLOADS)}")
    if steps < 1:
        raise ToolkitError(f"--steps {steps}: at least 1 denoising step (25 is a good start)")
    if frames is not None and frames < 1:
        raise ToolkitError(
            f"--frames {frames}: at least 1 video frame (leave it out for the model's own)"
        )
    if out.is_dir():
        raise ToolkitError(
            f"--out {out} is a folder; give the video's file name, e.g. {out}/video.gif"
        )
    if out.suffix.lower() not in (".gif", ".mp4"):
        raise ToolkitError(
            f"--out {out}: unsupported video format {out.suffix!r}; use .gif or .mp4"
        )
    from anti_i2v.core.common import check_writable_dir
    from anti_i2v.core.images import load_photo

    check_writable_dir(out.parent)
    load_photo(image)  # readable, or one line before the model loads
    from anti_i2v.core.common import pick_device
    from anti_i2v.core.video import write_strip, write_video
    from anti_i2v.models.backbones import check_generates, load_backbone, resolve_model

    resolve_model(model)
    check_generates(model, family)

    backbone = load_backbone(model, family, dtype, pick_device(device), offload=offload)
    if vae_tiling:
        try:  # diffusers' VAE mixin has the method and raises where a VAE cannot tile
            backbone.pipe.vae.enable_tiling()
        except (AttributeError, NotImplementedError):
            raise ToolkitError(
                f"--vae-tiling: {backbone.name}'s VAE ({type(backbone.pipe.vae).__name__}) "
                "cannot tile; drop the flag"
            ) from None
    photo = load_photo(image, max_side=2 * max(backbone.resolution))
    video = backbone.generate(photo.pixels, frames=frames, steps=steps, seed=seed)
    write_video(video, out)
    if strip:
        write_strip(video, out.with_suffix(".png"))
    console.print(f"wrote {out} ({video.shape[0]} frames, {video.shape[2]}x{video.shape[3]})")


def world_render(
    out: Path = typer.Option(..., "--out", help="folder to write samples into"),
    count: int = typer.Option(8, help="number of portraits"),
    seed: int = typer.Option(0, help="which identities (same seed, same bytes)"),
    split: str = typer.Option("heldout", help="heldout (never trained on) or train"),
    frames: int = typer.Option(9, help="frames per video"),
    photos: Path = typer.Option(None, help="also copy each first frame here as <sample>.png"),
    world: str = typer.Option(
        "v1", help="v1 (64x64, flat colours) or v2 (96x96, photo-like; identity in shape)"
    ),
) -> None:
    """Render portrait videos with part masks and identity.json."""
    from anti_i2v.core.common import check_writable_dir
    from anti_i2v.world.dataset import WORLDS, check_render_fits, render_dataset

    if count < 1 or frames < 1:
        raise ToolkitError(
            f"--count {count} --frames {frames}: render at least 1 portrait of at least 1 frame"
        )
    if seed < 0:
        raise ToolkitError(f"--seed {seed}: give a seed of 0 or more")
    if split not in ("heldout", "train"):
        raise ToolkitError(f"--split {split}: choose heldout or train")
    if world not in WORLDS:
        raise ToolkitError(f"--world {world}: choose {' or '.join(WORLDS)}")
    check_writable_dir(out)
    if photos is not None:
        check_writable_dir(photos, "--photos")
    check_render_fits(out, count, frames, world, photos is not None)

    paths = render_dataset(out, count, seed, split, frames, photos, world)
    console.print(f"rendered {len(paths)} {split} {world} portraits into {out}")


def world_train(
    out: Path = typer.Option(
        ..., "--out", help="folder for mini-cogvideox-i2v/, mini-identity/, mini-svd-i2v/"
    ),
    seed: int = typer.Option(0, help="training seed"),
    models: str = typer.Option(
        "cogvideox,identity,svd", help="which models to train (present ones are kept)"
    ),
    quick: bool = typer.Option(False, "--quick", help="a few steps of each stage (smoke test)"),
    world: str = typer.Option(
        "v1", help="v1 (the shipped models) or v2 (96x96 photo-like world, larger models)"
    ),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    """Train the mini models: CogVideoX VAE and transformer, identity encoder, mini-svd (reproduces artifacts/models).

    Every stage checkpoints as it goes (OUT/.checkpoints/): after Ctrl-C or any interruption the
    same command resumes where it stopped and ends with the same weights.
    """
    from anti_i2v.core.common import pick_device
    from anti_i2v.world.dataset import WORLDS
    from anti_i2v.world.train import MODELS, train_all
    from anti_i2v.world.training import QUICK, V2, TrainConfig

    chosen = tuple(m.strip() for m in models.split(",") if m.strip())
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown:
        raise ToolkitError(
            f"unknown model(s) to train: {', '.join(unknown)}; choose from {', '.join(MODELS)}"
        )
    if world not in WORLDS:
        raise ToolkitError(f"--world {world}: choose {' or '.join(WORLDS)}")
    base = V2 if world == "v2" else TrainConfig()
    # --quick keeps the world's stored dtype, so that the smoke test saves what the world ships
    cfg = (
        replace(QUICK, world=world, dit_store_dtype=base.dit_store_dtype)
        if quick
        else replace(base, seed=seed)
    )
    timings = train_all(out, cfg, pick_device(device), chosen)
    console.print(f"trained into {out}: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))


def world_card(
    model: str = typer.Option("mini-cogvideox", help="the mini model to measure"),
    identity: Path = typer.Option(None, help="identity judge folder; default the world's judge"),
    count: int = typer.Option(32, help="held-out portraits to measure on"),
    out: Path = typer.Option(None, help="model card path; default the model folder's README.md"),
    profile: Path = typer.Option(
        None,
        help="a profile from `adapt MODEL PHOTOS --masks WORLD` on held-out portraits: adds the "
        "layer gates (mask-probe spread, CKA to the first block)",
    ),
) -> None:
    """Measure the mini model on held-out portraits and regenerate its model card and gates."""
    from anti_i2v.models.registry import MINI_MODELS
    from anti_i2v.world.card import layer_measures, write_card

    if model not in MINI_MODELS:
        raise ToolkitError(f"--model {model}: model cards are for {', '.join(MINI_MODELS)}")
    if count < 2:
        raise ToolkitError(f"--count {count}: at least 2 portraits (identities are compared)")
    layers = None
    if profile is not None:
        # The card reads a profile (analyses' output) only here, at the command's edge.
        from anti_i2v.analyses.profile import load_profile
        from anti_i2v.models.backbones import load_backbone

        prof = load_profile(profile)
        backbone = load_backbone(model)
        prof.check_model(backbone.name, backbone.block_names(), backbone.config_sha256())
        if not prof.masks:
            raise ToolkitError(
                f"{profile} was made without masks; run `anti-i2v adapt {model} PHOTOS --masks "
                "WORLD --out DIR` on rendered portraits of this model's world"
            )
        # The profile's folder and name (every profile is profile.json), never a user's path.
        name = f"{profile.parent.name}/{profile.name}"
        layers = {**layer_measures(prof.scores, prof.layers), "profile": name}
    path, m = write_card(model, identity, count, out, layers)
    console.print(
        f"wrote {path}: "
        + "; ".join(
            f"{k} {g['value']:.3f} ({'pass' if g['passed'] else 'fail'})"
            for k, g in m["gates"].items()
        )
    )


def world_identity_card(
    identity: str = typer.Option(
        "mini-identity", help=f"{', '.join(MINI_JUDGES)} or a judge folder"
    ),
    count: int = typer.Option(32, help="held-out portraits to measure on"),
) -> None:
    """Measure an identity judge against the face-recogniser gate and write its card (README.md)."""
    from anti_i2v.world.identity_card import summary, write_judge_card

    folder = MINI_JUDGES.get(identity, Path(identity))
    if not (folder / "identity_encoder.safetensors").is_file():
        raise ToolkitError(
            f"no identity judge in {folder}; train one with `anti-i2v world train --models identity`"
        )
    if count < 2:
        raise ToolkitError(
            f"--count {count}: at least 2 portraits (different identities are compared)"
        )
    path, measures = write_judge_card(folder, count)
    console.print(f"wrote {path}: " + summary(measures))


world_app.command("render")(cli_command(world_render))
world_app.command("identity-card")(cli_command(world_identity_card))
world_app.command("train")(cli_command(world_train))
world_app.command("card")(cli_command(world_card))


def plan(
    model: str = typer.Argument(..., help="model: name (`anti-i2v models`), folder or hub id"),
    task: str = typer.Option(
        "protect",
        help="protect, probe, generate, lens or attention: an optimisation step, a probe cell, "
        "a sampling step, one timestep of `lens` (every block and its decode) or of `attention`",
    ),
    resolution: str = typer.Option(None, help="HxW in pixels, e.g. 480x720 (default: the model's)"),
    frames: int = typer.Option(
        None, help="probe, generate, lens, attention: video frames (default: the model's)"
    ),
    clip_frames: int = typer.Option(
        None, help="protect: first video frames the losses see (default: protect's --frames)"
    ),
    batch_size: int = typer.Option(1, help="photos per step (protect) or samples per cell (probe)"),
    dtype: str = typer.Option("bfloat16", help=f"weights and forward: {', '.join(MODEL_DTYPES)}"),
    checkpointing: bool = typer.Option(False, "--checkpointing", help="activation checkpointing"),
    offload: str = typer.Option("none", help="none, model or sequential: diffusers' CPU offload"),
    pool: int = typer.Option(P.pool, help="probe: spatial pooling of stored blocks"),
    gpu: str = typer.Option(
        None, help="also find the fewest levers that fit this GPU, e.g. a100-40gb"
    ),
    json_out: bool = typer.Option(False, "--json", help="print the plan as JSON"),
) -> None:
    """Plan peak accelerator memory and FLOPs of one step of a task (no GPU needed)."""
    import json

    from anti_i2v.plan import UTILISATION, PlanRequest
    from anti_i2v.plan import plan as make_plan

    size = None
    if resolution:
        try:
            h, w = (int(v) for v in resolution.lower().split("x"))
        except ValueError:
            raise ToolkitError(f"--resolution {resolution}: expected HxW, e.g. 480x720") from None
        size = (h, w)
    req = PlanRequest(
        model=model,
        task=task,
        resolution=size,
        frames=frames,
        clip_frames=clip_frames,
        batch_size=batch_size,
        dtype=dtype,
        checkpointing=checkpointing,
        offload=offload,
        pool=pool,
    )
    p = make_plan(req, gpu=gpu)
    if json_out:
        typer.echo(json.dumps(p.to_json(), indent=2))
        return
    gib = 1024**3
    levers = [f"offload {offload}"] * (offload != "none") + ["checkpointing"] * checkpointing
    head = (
        f"{task} on {model}: {p.resolution[0]}x{p.resolution[1]}, {p.frames} frames, batch "
        f"{batch_size}, {dtype}{''.join(', ' + lever for lever in levers)}\n"
        f"parameters {p.params / 1e9:.3f} B, weights {p.weights_bytes / gib:.2f} GiB "
        f"({p.resident_weights_bytes / gib:.2f} GiB on the GPU), peak {p.peak_bytes / gib:.3f} GiB, "
        f"{p.flops_per_step / 1e12:.3f} TFLOPs per step"
    )
    if p.store_bytes_per_sample is not None:
        head += f", store {p.store_bytes_per_sample / 2**20:.2f} MiB per sample and timestep"
    if p.experts > 1:
        resident = "both experts" if offload == "none" else "one expert at a time"
        head += (
            f"\n{p.experts} experts share the timesteps and a step runs one: {resident} on the "
            "GPU (--offload model keeps one resident; none keeps both)"
        )
    Console().print(head)
    table = Table(title=f"per GPU (seconds at {UTILISATION:.0%} of dense bf16 peak, an assumption)")
    for col in ("gpu", "memory", "fits", "s / step", "fewest levers that fit"):
        table.add_column(col)
    for name, g in p.gpus.items():
        table.add_row(
            name,
            f"{g['memory_gib']} GiB",
            "yes" if g["fits"] else "[red]no[/]",
            f"{g['seconds_per_step']:.3g}",
            lever_text(g["levers"]),
            style="bold" if name == gpu else None,
        )
    Console().print(table)
    if gpu is not None and p.fit is None:
        Console().print(
            f"{gpu}: does not fit with any of checkpointing and offload; lower --resolution, "
            "--frames/--clip-frames or --batch-size, or shard the model over GPUs"
        )


def lever_text(levers: dict | None) -> str:
    """`--checkpointing --offload model (20.96 GiB)`, `none needed (...)` or `does not fit`."""
    if levers is None:
        return "does not fit"
    found = [f"--offload {levers['offload']}"] * (levers["offload"] != "none")
    found += ["--checkpointing"] * levers["checkpointing"]
    return f"{' '.join(found) or 'none needed'} ({levers['peak_bytes'] / 1024**3:.1f} GiB)"


def attention(
    model: str = typer.Argument(
        ..., help="tiny:<family>, mini-cogvideox, a pipeline folder or a hub id"
    ),
    images: list[Path] = typer.Argument(..., help="image files or folders"),
    out: Path = typer.Option(..., "--out", help="folder: attention.json and attention.png"),
    timesteps: str = typer.Option(_csv(A.timesteps), help="timesteps on the 0..1000 scale"),
    queries: int = typer.Option(
        A.queries, help="query rows kept per attention call (seeded subset)"
    ),
    maps: int = typer.Option(
        A.maps, help="also keep N queries' whole attention maps (first photo) for the explorer"
    ),
    seed: int = typer.Option(A.seed, help="seed of the noise and of the query subset"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    """How much each block's later frames attend to the photo's frame, per timestep."""
    from anti_i2v.probe.attention import run_attention

    cfg = A(
        model=model,
        images=tuple(str(p) for p in images),
        out=str(out),
        timesteps=parse_ints(timesteps, "--timesteps"),
        queries=queries,
        maps=maps,
        seed=seed,
        device=device,
    )
    result = run_attention(cfg)
    _block_table(f"{result.model}: later frames' attention on frame 0", result, result.frame0)
    Console().print(f"attention: {out / 'attention.json'}, {out / 'attention.png'}")


def _block_table(title: str, result, values: dict[str, list[float]]) -> None:
    """One row a block, one column a timestep (`-` where the block did not run)."""
    table = Table(title=title)
    table.add_column("block")
    for t in result.timesteps:
        table.add_column(f"t={t}", justify="right")
    for layer in result.layers:
        table.add_row(escape(layer), *[("-" if v != v else f"{v:.3f}") for v in values[layer]])
    Console().print(table)


def lens(
    model: str = typer.Argument(
        ..., help="tiny:<family>, mini-cogvideox, a pipeline folder or a hub id (a DiT family)"
    ),
    image: Path = typer.Argument(..., help="one photo"),
    out: Path = typer.Option(..., "--out", help="folder: lens.json and lens-t<t>.png"),
    timesteps: str = typer.Option(_csv(L.timesteps), help="timesteps on the 0..1000 scale"),
    seed: int = typer.Option(L.seed, help="seed of the noise"),
    frames: int = typer.Option(L.shown_frames, "--frames", help="decoded frames shown per block"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    """The video each block would generate if it were the last: its state through the model's own head."""
    from anti_i2v.probe.lens import run_lens

    cfg = L(
        model=model,
        image=str(image),
        out=str(out),
        timesteps=parse_ints(timesteps, "--timesteps"),
        seed=seed,
        shown_frames=frames,
        device=device,
    )
    result = run_lens(cfg)
    title = f"{result.model}: each block's clean estimate, distance to the output"
    _block_table(title, result, result.to_output)
    Console().print(f"lens: {out / 'lens.json'}, " + ", ".join(str(out / s) for s in result.strips))


def register(app: typer.Typer) -> None:
    """Add the probe stage's commands to the toolkit's app."""
    for command in (models, probe, generate, plan, attention, lens):
        app.command()(cli_command(command))
    app.add_typer(world_app, name="world")
