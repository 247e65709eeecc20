"""`anti-i2v study`: one pre-registered efficacy study on any model."""

from __future__ import annotations

from pathlib import Path

import typer

from anti_i2v.core.common import cli_command, parse_floats
from anti_i2v.experiments.study.config import ARMS
from anti_i2v.experiments.study.config import StudyConfig as D


def study(
    model: str = typer.Argument(..., help="the model to study (as for probe)"),
    photos: Path = typer.Argument(
        ..., help="a folder of photos: split into selection and evaluation"
    ),
    out: str = typer.Option(
        ..., "--out", help="the study's folder (protocol.json, README.md, ...)"
    ),
    judge: str = typer.Option(
        None, help="identity judge (default: the mini world's for mini models, dlib otherwise)"
    ),
    masks: Path = typer.Option(None, help="part masks for adapt (the world render's --out)"),
    profile: Path = typer.Option(
        None, help="use this profile instead of adapting on the selection photos"
    ),
    selection: int = typer.Option(D.selection, help="photos that choose the layers"),
    evaluation: int = typer.Option(None, help="photos evaluated (default: all the others)"),
    split_seed: int = typer.Option(D.split_seed, help="seed of the selection/evaluation split"),
    arms: str = typer.Option(",".join(D.arms), help=f"comma-separated, from {', '.join(ARMS)}"),
    random_layers: int = typer.Option(D.random_layers, help="random layer draws (K)"),
    budgets: str = typer.Option(
        ",".join(f"{b:g}" for b in D.budgets), help="budgets in 1/255 units, every arm"
    ),
    cloak_seeds: int = typer.Option(D.cloak_seeds, help="cloaks per photo, arm and budget"),
    generation_seeds: int = typer.Option(D.generation_seeds, help="videos per cloak"),
    steps: int = typer.Option(D.steps, help="optimisation steps of a cloak"),
    pilot_steps: int = typer.Option(D.pilot_steps, help="steps of a pilot cloak"),
    eval_steps: int = typer.Option(D.eval_steps, help="denoising steps of a video"),
    eot: str = typer.Option(
        "", help="a lever arm: full Anti-I2V through these distortions (e.g. jpeg75)"
    ),
    fast_steps: int = typer.Option(
        None, help="add the cost lever arm anti-i2v-fast: full Anti-I2V in this many steps"
    ),
    fast_optimizer: str = typer.Option(
        D.fast_optimizer, help="its step direction: sign or momentum"
    ),
    fast_alpha: float = typer.Option(D.fast_alpha, help="its step size (1/255 units)"),
    fast_alpha_decay: str = typer.Option(
        D.fast_alpha_decay, help="its schedule: constant or cosine"
    ),
    region_floor: float = typer.Option(
        D.region_floor,
        help="the face-region arm's weight off the face (protect --region-floor)",
    ),
    delta_e: str = typer.Option(
        ",".join(f"{t:g}" for t in D.delta_e), help="visibilities (mean CIEDE2000) to read at"
    ),
    headline_delta_e: float = typer.Option(
        D.headline_delta_e,
        help="the visibility of the pre-registered comparisons (one of --delta-e)",
    ),
    reps: int = typer.Option(D.reps, help="bootstrap resamples"),
    alpha: float = typer.Option(D.alpha, help="family-wise error rate (Holm)"),
    budget_hours: float = typer.Option(
        None, help="refuse when the predicted time is over this many hours"
    ),
    device: str = typer.Option(D.device, help="cpu, cuda, cuda:N or auto"),
) -> None:
    """Does the cloak protect, and do the probed layers matter? One pre-registered study.

    Splits PHOTOS into selection photos (which choose the layers) and evaluation photos, writes
    the protocol, then cloaks every arm at every budget and seed, animates each cloak and
    compares the arms at equal visibility: DIR/README.md answers, DIR/report.json holds every
    number. Rerun the same command to resume.
    """
    cfg = D(
        model=model,
        photos=str(photos),
        out=out,
        judge=judge,
        masks=str(masks) if masks else None,
        profile=str(profile) if profile else None,
        selection=selection,
        evaluation=evaluation,
        split_seed=split_seed,
        arms=tuple(a.strip() for a in arms.split(",") if a.strip()),
        random_layers=random_layers,
        budgets=parse_floats(budgets, "--budgets"),
        cloak_seeds=cloak_seeds,
        generation_seeds=generation_seeds,
        steps=steps,
        pilot_steps=pilot_steps,
        eval_steps=eval_steps,
        eot=tuple(d.strip() for d in eot.split(",") if d.strip()),
        fast_steps=fast_steps,
        fast_optimizer=fast_optimizer,
        fast_alpha=fast_alpha,
        fast_alpha_decay=fast_alpha_decay,
        region_floor=region_floor,
        delta_e=parse_floats(delta_e, "--delta-e"),
        headline_delta_e=headline_delta_e,
        reps=reps,
        alpha=alpha,
        budget_hours=budget_hours,
        device=device,
    )
    from anti_i2v.experiments.study.run import run_study

    path = run_study(cfg)
    typer.echo(f"study: {path.parent / 'README.md'}")


def register(app: typer.Typer) -> None:
    """Add the study command to the toolkit's app."""
    app.command()(cli_command(study))
