"""`anti-i2v` commands of the analyses stage: analyse and adapt."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from anti_i2v.analyses.choose import ChoiceRule as R
from anti_i2v.analyses.config import ExploreConfig as X
from anti_i2v.core.common import ToolkitError, cli_command, parse_ints
from anti_i2v.probe.config import ProbeConfig as P

console = Console(stderr=True)


def _rule(
    n_anchors: int,
    n_collapse: int,
    n_timesteps: int,
    min_timestep: int,
    n_vae_anchors: int,
    measures: str | None = None,
):
    from anti_i2v.analyses.choose import ChoiceRule

    return ChoiceRule(
        n_anchors=n_anchors,
        n_collapse=n_collapse,
        n_timesteps=n_timesteps,
        min_timestep=min_timestep,
        n_vae_anchors=n_vae_anchors,
        **({"measures": tuple(m.strip() for m in measures.split(","))} if measures else {}),
    )


MEASURES_HELP = (
    "scores the rule ranks blocks by (default: "
    + ",".join(R.measures)
    + "); attention_frame0 ranks by the attention share"
)


VAE_ANCHORS_HELP = "VAE encoder anchor layers, when the store holds them (`probe --vae`); 0: none"


MIN_TIMESTEP_HELP = (
    "recommend only timesteps at or above this (the noisier half, where a cloak has leverage)"
)


def _report(profile, out: Path) -> None:
    Console().print(
        f"[bold]{profile.model}[/] ({profile.family}): collapse {profile.collapse_layers}, "
        f"anchors {profile.anchor_layers}"
        + (f", VAE anchors {profile.vae_anchor_layers}" if profile.vae_anchor_layers else "")
        + f", timesteps {profile.timesteps} -> {out}"
    )


def analyse(
    store: str = typer.Argument(
        ..., help="activation store written by `anti-i2v probe` (a path or fsspec URL)"
    ),
    out: Path = typer.Option(..., "--out", help="profile JSON to write"),
    figures: Path = typer.Option(None, help="folder for PNG figures and index.html"),
    masks: Path = typer.Option(
        None, help="part masks: <dir>/<sample>/masks/000.png or <dir>/<sample>.png"
    ),
    reference: str = typer.Option(None, help="vision encoder (hub id or folder) for reference_cka"),
    anchors: int = typer.Option(R.n_anchors, help="number of anchor layers"),
    collapse: int = typer.Option(R.n_collapse, help="number of collapse layers"),
    timesteps: int = typer.Option(R.n_timesteps, help="number of recommended timesteps"),
    min_timestep: int = typer.Option(R.min_timestep, help=MIN_TIMESTEP_HELP),
    vae_anchors: int = typer.Option(R.n_vae_anchors, help=VAE_ANCHORS_HELP),
    measures: str = typer.Option(None, help=MEASURES_HELP),
    attention: Path = typer.Option(
        None, help="attention.json (`anti-i2v attention`): its share joins the scores"
    ),
    workers: int = typer.Option(
        None,
        help="score on a local Dask cluster of N worker processes (one task per layer and timestep)",
    ),
    scheduler: str = typer.Option(
        None, help="score on an existing Dask cluster, e.g. tcp://HOST:8786"
    ),
) -> None:
    """Score every layer of a store and choose collapse/anchor layers: a layer profile."""
    rule = _rule(
        anchors, collapse, timesteps, min_timestep, vae_anchors, measures
    )  # before imports
    from anti_i2v.analyses.run import analyse as run
    from anti_i2v.analyses.run import dask_client

    with dask_client(workers, scheduler) as client:
        profile = run(
            store, out, figures, masks, reference, rule, client=client, attention=attention
        )
    _report(profile, out)


def adapt(
    model: str = typer.Argument(
        ..., help="tiny:<family>, mini-cogvideox, a pipeline folder or a hub id"
    ),
    images: list[Path] = typer.Argument(..., help="image files or folders"),
    out: Path = typer.Option(
        ..., "--out", help="folder: activations.zarr, profile.json, figures/, index.html"
    ),
    masks: Path = typer.Option(
        None, help="part masks (optional): <dir>/<sample>/masks/000.png or <dir>/<sample>.png"
    ),
    reference: str = typer.Option(None, help="vision encoder (hub id or folder) for reference_cka"),
    timesteps: str = typer.Option(None, help="timesteps to probe (default: 100,300,500,700,900)"),
    pool: int = typer.Option(P.pool, help="spatial pooling of stored activations"),
    frames: int = typer.Option(None, help="latent frames to keep"),
    anchors: int = typer.Option(R.n_anchors, help="number of anchor layers"),
    min_timestep: int = typer.Option(R.min_timestep, help=MIN_TIMESTEP_HELP),
    vae: bool = typer.Option(
        False, "--vae", help="probe the VAE encoder's blocks too, so IRA anchors them as well"
    ),
    vae_anchors: int = typer.Option(R.n_vae_anchors, help=VAE_ANCHORS_HELP),
    measures: str = typer.Option(None, help=MEASURES_HELP),
    attention: bool = typer.Option(
        False, "--attention", help="measure the attention share too (DIR/attention/), a score"
    ),
    lens: bool = typer.Option(
        False, "--lens", help="look through every block too (DIR/lens/), for the explorer"
    ),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    """Probe a model on photos and analyse it in one go (a profile for a model never seen before)."""
    overrides = {"pool": pool, "frames": frames, "device": device, "vae": vae}
    if timesteps:
        overrides["timesteps"] = parse_ints(timesteps, "--timesteps")
    rule = _rule(anchors, 1, 2, min_timestep, vae_anchors, measures)
    # Every setting checked before the stage (and torch) is imported
    P(model=model, images=tuple(map(str, images)), out=str(out / "activations.zarr"), **overrides)
    if lens:
        from anti_i2v.models.backbones import FAMILIES, model_family

        refusal = FAMILIES[model_family(model)].lens_refusal
        if refusal is not None:
            raise ToolkitError(f"--lens: {model} has no lens: {refusal}; leave out --lens")
    from anti_i2v.analyses.run import adapt as run

    profile = run(model, images, out, masks, reference, overrides, rule, attention, lens)
    if profile is None:  # a torchrun rank other than 0: rank 0 reports
        return
    _report(profile, out / "profile.json")
    console.print(f"report: {out / 'index.html'}")


def explore(
    store: str = typer.Argument(
        ..., help="activation store written by `anti-i2v probe` (a path or fsspec URL)"
    ),
    out: Path = typer.Option(..., "--out", help="folder to write: index.html and data/"),
    profile: Path = typer.Option(
        None, help="the store's profile (default: score the store here with the default rule)"
    ),
    masks: Path = typer.Option(
        None, help="part masks for the overlay: <dir>/<sample>/masks/000.png or <dir>/<sample>.png"
    ),
    dims: int = typer.Option(X.dims, help="PCA components kept per token (float16)"),
    samples: int = typer.Option(X.samples, help="the store's first N samples"),
    frames: int = typer.Option(X.frames, help="latent frames kept per sample, evenly spaced"),
    lens: Path = typer.Option(None, help="`anti-i2v lens`'s folder: the lens strip per block"),
    attention: Path = typer.Option(
        None, help="`anti-i2v attention --maps K`'s folder: where a clicked token attends"
    ),
    serve: int = typer.Option(
        None, help="after writing, serve the folder on 127.0.0.1:PORT until Ctrl-C"
    ),
) -> None:
    """Write an interactive layer explorer (opens from file://): maps, token similarity, scores."""
    cfg = X(dims=dims, samples=samples, frames=frames)
    if serve is not None and not 0 < serve < 65536:
        raise ToolkitError(f"--serve {serve}: give a TCP port in 1..65535")
    from anti_i2v.analyses.explore import serve_folder
    from anti_i2v.analyses.run import explore as run

    index = run(store, out, profile, masks, cfg, lens=lens, attention=attention)
    Console().print(f"explorer: {index} (open it in a browser; no server needed)")
    if serve is not None:
        serve_folder(out, serve)


def register(app: typer.Typer) -> None:
    """Add the analyses stage's commands to the toolkit's app."""
    for command in (analyse, adapt, explore):
        app.command()(cli_command(command))
