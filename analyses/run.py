"""The analyse job (store -> profile, figures, report) and adapt (probe + analyse)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from anti_i2v.analyses.analyse import Analysis, AnalysisConfig, analyse_store, load_masks
from anti_i2v.analyses.attention import attention_scores, read_attention
from anti_i2v.analyses.choose import ATTENTION_MEASURE, ChoiceRule, choose
from anti_i2v.analyses.explore import (
    ExploreConfig,
    attention_view,
    build_explorer,
    check_explorer_out,
    lens_view,
)
from anti_i2v.analyses.figures import mask_overlays, pca_grid, score_curves
from anti_i2v.analyses.profile import Profile, load_profile, save_profile
from anti_i2v.analyses.reference import reference_features
from anti_i2v.analyses.report import write_index
from anti_i2v.core.common import TOOLKIT_VERSION, ToolkitError, check_writable_dir
from anti_i2v.core.distributed import Ranks
from anti_i2v.core.images import gather_images, load_photo
from anti_i2v.models.layers import split_vae_layers
from anti_i2v.probe.run import ProbeConfig, run_probe
from anti_i2v.probe.store import open_store


def _photos_of(store) -> list:
    """Re-open the store's photos (for a reference encoder) by name, checking their hashes."""
    wanted = {s["name"]: s["sha256"] for s in store.attrs.samples}
    photos = []
    for p in gather_images([Path(x) for x in store.attrs.config["images"]]):
        if p.stem in wanted:
            photo = load_photo(p, max_side=512)
            if photo.sha256 == wanted[p.stem]:
                photos.append(photo)
    return photos


def score_store(
    store_path: str | Path,
    masks: Path | None = None,
    reference: str | None = None,
    rule: ChoiceRule = ChoiceRule(),
    cfg: AnalysisConfig = AnalysisConfig(),
    client=None,
    attention: Path | None = None,
) -> tuple[Profile, Analysis, dict]:
    """Score a store and choose layers: the profile, the analysis behind it, and the rule's picks.

    `client`: a dask.distributed client to score on (`dask_client`); None scores here.
    `attention`: an attention.json (`anti-i2v attention`) whose frame-0 share joins the scores.
    """
    store = open_store(store_path)
    shares = read_attention(attention) if attention is not None else None
    blocks = split_vae_layers(store.attrs.layers)[0]
    if shares is not None:
        attention_scores(shares, blocks, list(store.attrs.timesteps))  # one line before scoring
    elif ATTENTION_MEASURE in rule.measures:
        raise ToolkitError(
            f"--measures {ATTENTION_MEASURE}: give the shares with --attention attention.json "
            "(`anti-i2v attention`)"
        )
    names = [s["name"] for s in store.attrs.samples]
    mask_arrays = load_masks(Path(masks), names) if masks else None
    ref = reference_features(reference, _photos_of(store)) if reference else None
    analysis = analyse_store(store, cfg, mask_arrays, ref, client)
    if shares is not None:
        analysis.scores |= attention_scores(shares, blocks, analysis.timesteps)
    picks = choose(analysis.scores, analysis.layers, analysis.timesteps, rule)
    attrs = store.attrs
    blocks, vae = split_vae_layers(analysis.layers)
    profile = Profile(
        model=attrs.model,
        family=attrs.family,
        config_sha256=attrs.config_sha256,
        layers=blocks,
        vae_layers=vae,
        timesteps_probed=analysis.timesteps,
        collapse_layers=picks["collapse_layers"],
        anchor_layers=picks["anchor_layers"],
        vae_anchor_layers=picks["vae_anchor_layers"],
        timesteps=picks["timesteps"],
        semantic=picks["semantic"],
        low_level=picks["low_level"],
        scores=analysis.scores,
        rule=rule.to_dict(),
        analysis=asdict(cfg),
        store=store.name,
        samples=len(names),
        masks=mask_arrays is not None,
        reference=reference if ref is not None else None,
        toolkit_version=TOOLKIT_VERSION,
    )
    return profile, analysis, picks


def check_analyse_outputs(out: Path, figures: Path | None) -> None:
    """One line, before any scoring, when the profile or the figures cannot be written there."""
    if out.is_dir():
        raise ToolkitError(
            f"--out {out} is a folder; give the profile's file name, e.g. {out}/profile.json"
        )
    check_writable_dir(out.parent)
    if figures is not None:
        if figures.exists() and not figures.is_dir():
            raise ToolkitError(f"--figures {figures} is a file; give a folder for the figures")
        check_writable_dir(figures, "--figures")


def analyse(
    store_path: str | Path,
    out: Path,
    figures: Path | None = None,
    masks: Path | None = None,
    reference: str | None = None,
    rule: ChoiceRule = ChoiceRule(),
    cfg: AnalysisConfig = AnalysisConfig(),
    client=None,
    attention: Path | None = None,
) -> Profile:
    """Score a store, choose layers, write the profile (and figures + index.html when asked).

    `attention`: an attention.json whose frame-0 share joins the scores (`score_store`).
    """
    check_analyse_outputs(Path(out), figures)
    profile, analysis, picks = score_store(
        store_path, masks, reference, rule, cfg, client, attention
    )
    save_profile(profile, out)
    if figures is not None:
        figs = {
            "PCA maps": pca_grid(analysis, figures / "pca_grid.png", picks),
            "Scores versus depth": score_curves(analysis, figures / "scores.png", picks),
            "Part masks and PCA maps": mask_overlays(
                analysis, figures / "mask_overlays.png", picks
            ),
        }
        write_index(figures.parent if figures.name == "figures" else figures, profile, figs)
    return profile


# adapt picks the timesteps too, so it probes more of them than a plain `probe` (100, 500, 900).
ADAPT_TIMESTEPS = (100, 300, 500, 700, 900)


def adapt(
    model: str,
    images: list[Path],
    out: Path,
    masks: Path | None = None,
    reference: str | None = None,
    probe_overrides: dict | None = None,
    rule: ChoiceRule = ChoiceRule(),
    attention: bool = False,
    lens: bool = False,
) -> Profile | None:
    """Probe a model on photos and analyse it: DIR/activations.zarr, profile.json, figures/,
    index.html and explorer/. Under torchrun, rank 0 returns the profile and the others None.

    `attention`: also measure the attention share on the same photos and timesteps
    (DIR/attention/), a score beside the others (`ChoiceRule.measures` may rank by it), with
    the first photo's attention maps for the explorer's attention view.
    `lens`: also look at the first photo through every block at the same timesteps (DIR/lens/),
    the explorer's lens strip (a DiT family's).
    """
    out.mkdir(parents=True, exist_ok=True)
    cfg = ProbeConfig(
        model=model,
        images=tuple(map(str, images)),
        out=str(out / "activations.zarr"),
        **{"timesteps": ADAPT_TIMESTEPS, **(probe_overrides or {})},
    )
    run_probe(cfg)  # under torchrun: every rank probes its shard, then the ranks part
    if not Ranks.from_env().is_main:
        return None  # rank 0 alone writes the profile, figures and explorer
    shares = None
    if attention or ATTENTION_MEASURE in rule.measures:
        shares = measure_attention(model, images, out / "attention", cfg.timesteps, cfg.device)
    if lens:
        from anti_i2v.probe.config import LensConfig
        from anti_i2v.probe.lens import run_lens

        first = sorted(gather_images(list(images)), key=lambda p: p.name)[0]
        run_lens(LensConfig(model, str(first), str(out / "lens"), cfg.timesteps, device=cfg.device))
    profile = analyse(
        out / "activations.zarr",
        out / "profile.json",
        out / "figures",
        masks,
        reference,
        rule,
        attention=shares,
    )
    explore(
        out / "activations.zarr",
        out / "explorer",
        out / "profile.json",
        masks,
        lens=out / "lens" if lens else None,
        attention=shares.parent if shares is not None else None,
    )
    return profile


def measure_attention(
    model: str, images: list[Path], out: Path, timesteps: tuple[int, ...], device: str = "auto"
) -> Path:
    """The attention share on `images` at `timesteps` (`anti-i2v attention`); returns the
    attention.json, measured once (a resumed run keeps one of the same photos and timesteps)."""
    from anti_i2v.probe.attention import run_attention
    from anti_i2v.probe.config import AttentionConfig

    path = out / "attention.json"
    if path.is_file():
        done = read_attention(path)
        names = sorted(p.stem for p in gather_images(list(images)))
        same = done.get("timesteps") == list(timesteps) and sorted(done.get("photos", [])) == names
        if same and (out / "attention-maps.json").is_file():
            return path
    run_attention(
        AttentionConfig(
            model=model,
            images=tuple(map(str, images)),
            out=str(out),
            timesteps=tuple(timesteps),
            maps=MAPS,
            device=device,
        )
    )
    return path


MAPS = 8  # attention maps kept per block and timestep for adapt's explorer


def explore(
    store_path: str | Path,
    out: Path,
    profile_path: Path | None = None,
    masks: Path | None = None,
    cfg: ExploreConfig = ExploreConfig(),
    lens: Path | None = None,
    attention: Path | None = None,
) -> Path:
    """Write the layer explorer for a store (`analyses.explore`); returns `out/index.html`.

    `lens`, `attention`: the folders of `anti-i2v lens` and `anti-i2v attention --maps`, shown
    as the page's lens strip and attention view.

    Without a profile, the store is analysed here with the default rule, as `anti-i2v analyse`
    would. Either way the folder holds the profile it shows (`out/profile.json`). Every input
    is checked before the first layer is read.
    """
    check_explorer_out(out)
    store = open_store(store_path)
    layers = split_vae_layers(store.attrs.layers)[0]
    views = {}
    if lens is not None:
        views["lens"] = lens_view(Path(lens), layers, store.attrs.model)
    if attention is not None:
        views["attention"] = attention_view(Path(attention), layers, store.attrs.model)
    names = [s["name"] for s in store.attrs.samples]
    mask_arrays = load_masks(Path(masks), names) if masks else None
    if profile_path is not None:
        profile, source = load_profile(profile_path), str(profile_path)
    else:
        profile, source = score_store(store_path, masks)[0], "the profile"
    photos = {p.name: p for p in _photos_of(store)}
    return build_explorer(store, profile, out, photos, mask_arrays, cfg, source, views)


@contextlib.contextmanager
def dask_client(
    workers: int | None = None, scheduler: str | None = None
) -> Iterator[object | None]:
    """A dask.distributed client for `analyse`: a LocalCluster of `workers` processes, or the
    cluster at `scheduler`; None (score in this process) when neither is given.

    Each local worker is one process with one thread (torch's too), so N workers use N cores.
    """
    if workers is not None and scheduler is not None:
        raise ToolkitError("give --workers or --scheduler, not both")
    if workers is not None and workers < 1:
        raise ToolkitError(f"--workers {workers}: give at least 1")
    if workers is None and scheduler is None:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise ToolkitError(
                f"--scheduler {scheduler}: cannot connect ({exc}); is `dask scheduler` running there?"
            ) from None
        with client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(_one_thread)
        yield client


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)
