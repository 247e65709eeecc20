"""`anti-i2v` commands of the protect stage."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from anti_i2v.core.common import cli_command, is_url, parse_floats, parse_ints
from anti_i2v.probe.config import MODEL_DTYPES
from anti_i2v.protect.config import SPACES
from anti_i2v.protect.config import EvaluateConfig as E
from anti_i2v.protect.config import ProtectConfig as D
from anti_i2v.protect.methods import LOSS_TERMS, METHODS

console = Console(stderr=True)


def protect(
    model: str = typer.Argument(..., help="the model to protect against (as for probe)"),
    images: list[Path] = typer.Argument(..., help="photos or folders of photos"),
    profile: Path = typer.Option(
        None, help="layer profile from `anti-i2v adapt` (needed for irc/ira)"
    ),
    # A string, not a Path: a Path would fold s3://bucket into s3:/bucket.
    out: str = typer.Option(
        ...,
        "--out",
        help="folder or fsspec URL (s3://bucket/cloaks) for cloaked PNGs and sidecars "
        "(not an input folder)",
    ),
    method: str = typer.Option(D.method, help=f"one of {', '.join(METHODS)}"),
    steps: int = typer.Option(D.steps, help="optimisation steps"),
    eps: float = typer.Option(
        D.eps, help="L-inf budget in 1/255 units of the perturbed space, in (0, 255]"
    ),
    alpha: float = typer.Option(D.alpha, help="step size in 1/255 units"),
    optimizer: str = typer.Option(
        D.optimizer, help="step direction: sign (PGD, the paper's) or momentum (MI-FGSM)"
    ),
    alpha_decay: str = typer.Option(
        D.alpha_decay, help="step size: constant, or cosine (falls on a half cosine)"
    ),
    space: str = typer.Option(None, help=f"{', '.join(SPACES)} (default: the method's)"),
    losses: str = typer.Option(
        None, help=f"comma-separated terms: {','.join(LOSS_TERMS)} (default: the method's)"
    ),
    target: Path = typer.Option(
        None, help="target image for IRA / latent pull (default: a built-in pattern)"
    ),
    untargeted: bool = typer.Option(
        False, "--untargeted", help="IRA pushes away from the clean photo instead"
    ),
    frames: int = typer.Option(D.frames, help="first video frames the losses use"),
    timesteps: str = typer.Option(None, help="timesteps (default: the profile's)"),
    seed: int = typer.Option(D.seed, help="seed of every random choice"),
    no_early_exit: bool = typer.Option(
        False, "--no-early-exit", help="always run the whole denoiser"
    ),
    ab_unit: float = typer.Option(
        D.ab_unit,
        help="a*/b* points per lab unit: 128 (half-range) or 110 "
        "(the paper's colour code); eps counts in these units",
    ),
    dtype: str = typer.Option(
        D.dtype,
        help=f"model weights and forward: {', '.join(MODEL_DTYPES)} (the perturbation stays float32)",
    ),
    checkpointing: bool = typer.Option(
        D.checkpointing,
        "--checkpointing",
        help="recompute block activations in the backward (less memory, same cloak)",
    ),
    batch_size: int = typer.Option(
        D.batch_size,
        help="photos per optimisation step (photos of one working size; same cloaks as one at a time)",
    ),
    offload: str = typer.Option(
        D.offload,
        help="none, model or sequential: diffusers' CPU offload (needs a GPU; `anti-i2v plan` "
        "shows it saves no memory for protect, whose backward needs every weight)",
    ),
    eot: str = typer.Option(
        "",
        help="expectation over transformation: the model sees the cloak through these "
        "distortions, one per step in turn (e.g. jpeg75,blur,resize50; straight-through); "
        "h264crf33 is LTX-2's own re-compression of the photo",
    ),
    region: str | None = typer.Option(
        D.region,
        help="a lever: move the change towards the face, `face` (dlib's face box) or a folder "
        "of masks (the mini world's, or white on the region; NAME.png per photo)",
    ),
    region_floor: float = typer.Option(
        D.region_floor,
        help="with --region: the change's weight off the face before the map is scaled to mean "
        "1 (1: no weighting)",
    ),
    ensemble: str = typer.Option(
        "",
        help="more models to optimise against at once, for transfer: comma-separated MODEL or "
        "MODEL=PROFILE.json (each with its own layers; the objective is the mean over models)",
    ),
    in_place: bool = typer.Option(
        False,
        "--in-place",
        help="allow --out to be an input folder: each original "
        "is kept as NAME.original.EXT beside its cloak",
    ),
    record_paths: bool = typer.Option(
        False,
        "--record-paths",
        help="sidecars record full input paths "
        "(default: file names only, as sidecars travel with cloaks)",
    ),
    device: str = typer.Option(D.device, help="auto, cpu or cuda"),
) -> None:
    """Cloak photos against image-to-video generation."""
    cfg = D(
        model=model,
        images=tuple(map(str, images)),
        profile=str(profile) if profile else None,
        out=str(out),
        method=method,
        steps=steps,
        eps=eps,
        alpha=alpha,
        optimizer=optimizer,
        alpha_decay=alpha_decay,
        space=space,
        losses=tuple(x for x in losses.split(",")) if losses is not None else None,
        target=str(target) if target else None,
        ira_untargeted=untargeted,
        frames=frames,
        timesteps=parse_ints(timesteps, "--timesteps") if timesteps else None,
        seed=seed,
        early_exit=not no_early_exit,
        ab_unit=ab_unit,
        eot=tuple(d for d in eot.split(",") if d),
        region=region,
        region_floor=region_floor,
        dtype=dtype,
        checkpointing=checkpointing,
        offload=offload,
        batch_size=batch_size,
        ensemble=tuple(m for m in ensemble.split(",") if m),
        in_place=in_place,
        record_paths=record_paths,
        device=device,
    )

    from anti_i2v.protect.run import run_protect  # torch and diffusers: after the checks

    def report(r) -> None:  # as each photo finishes, so an interrupted run still shows what it did
        if r.status == "done":
            s = r.sidecar
            Console().print(f"{r.name}: PSNR {s.psnr:.1f} dB, SSIM {s.ssim:.3f}, {s.seconds:.1f}s")
        else:
            console.print(
                f"{'[yellow]' if r.status == 'skipped' else '[red]'}{r.status}[/] {r.name}: {r.detail}"
            )

    results = run_protect(cfg, on_result=report)
    # Exit 2 when no photo is, or already was, cloaked: a batch of only bad photos is an error,
    # as probe says it; a photo another run is cloaking counts as handled.
    bad = [r for r in results if r.status == "failed" or r.bad_input]
    if results and len(bad) == len(results):
        console.print(
            f"[red]error:[/] no photo was cloaked: all {len(bad)} failed or were too small "
            "(each is named above); fix them and run again"
        )
        raise typer.Exit(2)


def evaluate(
    model: str = typer.Argument(..., help="the model to generate videos with"),
    clean: Path = typer.Option(..., help="folder of clean photos"),
    protected: list[str] = typer.Option(
        ...,
        help="folder of protected photos, one per method; NAME=DIR names its row "
        "(default: the method, read from its sidecars)",
    ),
    out: str = typer.Option(
        ...,
        "--out",
        help="report folder or fsspec URL (s3://bucket/report): results.csv, summary.json, "
        "index.html",
    ),
    seeds: int = typer.Option(E.seeds, help="generation seeds per photo"),
    distortions: str = typer.Option(
        ",".join(E.distortions),
        help="distortions of the protected photo ('' for none); vae: the eval "
        "model's own VAE encode-decode; h264crfN: one H.264 frame at CRF N, as LTX-2's "
        "pipeline re-compresses every photo (N=33)",
    ),
    models: str = typer.Option(
        "", help="more eval models, comma-separated (transfer; undistorted cloaks)"
    ),
    identity: str = typer.Option(
        ",".join(E.identity),
        help="identity judges, comma-separated, each in every table (the first is the headline): "
        "mini-identity, mini-identity-v1, dlib, an encoder folder, or facenet:PATH.safetensors",
    ),
    reference: str = typer.Option(
        None, help="vision encoder (DINO/CLIP; hub id or folder) for ref similarity"
    ),
    steps: int = typer.Option(E.steps, help="denoising steps per video"),
    budgets: str = typer.Option(
        "",
        help="equal-visibility frontier: re-cloak every method at these budgets (1/255 units, "
        "e.g. 4,8,12,16) and compare methods at equal cloak visibility",
    ),
    profile: list[Path] = typer.Option(
        [],
        help="with --budgets: the profile the cloaks were made with, to re-cloak them (repeat it "
        "for --ensemble cloaks: each model's profile, found by hash)",
    ),
    dtype: str = typer.Option(
        E.dtype, help=f"eval models' weights and forward: {', '.join(MODEL_DTYPES)}"
    ),
    offload: str = typer.Option(
        E.offload, help="none, model or sequential: diffusers' CPU offload (needs a GPU)"
    ),
    device: str = typer.Option(E.device, help="auto, cpu or cuda"),
) -> None:
    """Measure how well cloaks protect: identity, fidelity, coherence, imperceptibility, robustness."""
    cfg = E(
        model=model,
        clean=str(clean),
        protected=tuple(protected),
        out=str(out),
        seeds=seeds,
        distortions=tuple(d for d in distortions.split(",") if d),
        models=tuple(m for m in models.split(",") if m),
        identity=tuple(j for j in identity.split(",") if j),
        reference=reference,
        steps=steps,
        device=device,
        dtype=dtype,
        offload=offload,
        budgets=parse_floats(budgets, "--budgets"),
        profiles=tuple(map(str, profile)),
    )
    from anti_i2v.evaluate.run import evaluate as run  # torch and diffusers: after the checks

    path = run(cfg)
    shown = f"{out.rstrip('/')}/index.html" if is_url(out) else path / "index.html"
    console.print(f"report: {shown}")


def register(app: typer.Typer) -> None:
    """Add the protect stage's commands to the toolkit's app."""
    app.command()(cli_command(protect))
    app.command()(cli_command(evaluate))
