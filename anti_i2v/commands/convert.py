"""`anti-i2v convert`: official checkpoints of Open-Sora 1.2 and DynamiCrafter -> pipeline folders."""

from __future__ import annotations

from pathlib import Path

import typer

from anti_i2v.core.common import cli_command


def convert(
    model: str = typer.Argument(..., help="opensora-1.2 or dynamicrafter"),
    source: Path = typer.Argument(
        ...,
        help="opensora-1.2: the folder holding the OpenSora-STDiT-v3 and OpenSora-VAE-v1.2 "
        "downloads; dynamicrafter: its model.ckpt",
    ),
    out: Path = typer.Option(..., "--out", help="the pipeline folder to write (must not exist)"),
    size: int = typer.Option(512, help="dynamicrafter: 512 or 1024 (sets resolution, fs, rescale)"),
    configs: Path = typer.Option(
        None, help="build into this pipeline folder's configs (default: the shipped real config)"
    ),
) -> None:
    """Write an official checkpoint as a pipeline folder (safetensors) that every command loads."""
    from anti_i2v.models.convert import convert as run

    done = run(model, source, out, size=size, configs=configs)
    parts = ", ".join(f"{name} {n} tensors" for name, n in done.tensors.items())
    typer.echo(f"converted {model}: {parts}")
    if done.dropped:
        left = ", ".join(f"{k} {n}" for k, n in sorted(done.dropped.items()))
        typer.echo(f"left out (never loaded: text tower, schedule buffers): {left}")
    for line in done.checks:
        typer.echo(f"check: {line}")
    typer.echo(
        f"pipeline: {done.folder} (load it as any model: `anti-i2v probe {done.folder} ...`)"
    )


def register(app: typer.Typer) -> None:
    """Add the convert command to the toolkit's app."""
    app.command()(cli_command(convert))
