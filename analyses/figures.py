"""Figures of an analysis: PCA grid, score-versus-depth curves, mask overlays (matplotlib's object API: no pyplot, no global backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from anti_i2v.analyses.analyse import Analysis
from anti_i2v.core.common import atomic_path
from anti_i2v.models.layers import is_vae_layer

PART_COLOURS = (
    np.array(
        [
            [0, 0, 0],
            [230, 180, 140],
            [120, 70, 30],
            [40, 120, 255],
            [220, 30, 60],
            [250, 220, 0],
            [90, 200, 90],
            [255, 255, 255],
        ],
        dtype=np.float32,
    )
    / 255
)


def _subplots(*grid: int, figsize: tuple[float, float], **kwargs) -> tuple[Figure, object]:
    """A figure and its axes without pyplot, so drawing never touches matplotlib's global state."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kwargs)


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        # No version stamp: same input, same bytes
        fig.savefig(tmp, dpi=110, metadata={"Software": None})
    return path


def pca_grid(analysis: Analysis, path: Path, picks: dict, sample: int = 0) -> Path:
    """Rows: layers (collapse in blue, anchors in red); columns: timesteps x kept frames."""
    layers, ts = analysis.layers, analysis.timesteps
    frames = next(iter(analysis.pca_maps.values())).shape[1]
    cols = len(ts) * frames
    row_h = 0.55 if len(layers) > 24 else 0.9
    # Room on the left for the longest block name (7 pt text, about 0.6 em a character), so
    # names like `temporal_blocks.27` are not cut at the figure's edge.
    label_in = max(len(layer) for layer in layers) * 7 * 0.6 / 72 + 0.15
    width = max(4, cols * row_h * 1.2) + label_in
    fig, axes = _subplots(
        len(layers),
        cols,
        figsize=(width, len(layers) * row_h + 0.8),
        squeeze=False,
        gridspec_kw={"wspace": 0.04, "hspace": 0.08, "left": label_in / width, "right": 0.98},
    )
    for r, layer in enumerate(layers):
        for ti, t in enumerate(ts):
            maps = analysis.pca_maps.get((layer, ti))
            for f in range(frames):
                ax = axes[r, ti * frames + f]
                ax.set_xticks([])
                ax.set_yticks([])
                if maps is not None and sample < len(maps):
                    ax.imshow(maps[sample, f], interpolation="nearest")
                if r == 0:
                    ax.set_title(f"t={t}" + (f" f{f}" if frames > 1 else ""), fontsize=7)
        colour = (
            "tab:blue"
            if layer in picks["collapse_layers"]
            else "tab:red"
            if layer in picks["anchor_layers"] + picks.get("vae_anchor_layers", [])
            else "black"
        )
        axes[r, 0].set_ylabel(layer, rotation=0, ha="right", va="center", fontsize=7, color=colour)
    fig.suptitle(
        "PCA of block features (first 3 components as RGB); blue: collapse, red: anchors",
        fontsize=9,
    )
    return _save(fig, path)


def score_curves(analysis: Analysis, path: Path, picks: dict) -> Path:
    """Every score against depth (mean over timesteps), with the picks marked."""
    layers = analysis.layers
    x = np.arange(len(layers))
    fig, ax = _subplots(figsize=(max(6, len(layers) * 0.25), 4))
    for name, per_layer in sorted(analysis.scores.items()):
        ax.plot(x, [np.mean(per_layer[layer]) for layer in layers], marker="o", ms=3, label=name)
    ax.plot(x, [picks["semantic"][layer] for layer in layers], "k--", lw=2, label="semantic (rule)")
    for layer in picks["collapse_layers"]:
        ax.axvline(layers.index(layer), color="tab:blue", alpha=0.5, lw=6)
    for layer in picks["anchor_layers"] + picks.get("vae_anchor_layers", []):
        ax.axvline(layers.index(layer), color="tab:red", alpha=0.4, lw=6)
    vae = [i for i, layer in enumerate(layers) if is_vae_layer(layer)]
    if vae:  # the VAE's blocks follow the denoiser's; their semantic score is normalised apart
        ax.axvspan(vae[0] - 0.5, vae[-1] + 0.5, color="tab:purple", alpha=0.08, label="VAE encoder")
    ax.set_xticks(x, layers, rotation=90, fontsize=6)
    ax.set_ylabel("score")
    ax.set_title("scores vs depth (blue: collapse, red: anchors)", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def mask_overlays(analysis: Analysis, path: Path, picks: dict, ti: int = 0) -> Path | None:
    """For a few samples: the part mask, then PCA maps of collapse and anchor layers with mask edges."""
    names = list(analysis.mask_grids)[:2]
    if not names:
        return None
    shown = picks["collapse_layers"][:1] + picks["anchor_layers"]
    fig, axes = _subplots(
        len(names),
        1 + len(shown),
        figsize=(2.2 * (1 + len(shown)), 2.3 * len(names)),
        squeeze=False,
    )
    for r, name in enumerate(names):
        mask = analysis.mask_grids[name]
        axes[r, 0].imshow(
            PART_COLOURS[np.clip(mask, 0, len(PART_COLOURS) - 1)], interpolation="nearest"
        )
        axes[r, 0].set_title(f"{name} parts", fontsize=7)
        for c, layer in enumerate(shown, start=1):
            maps = analysis.pca_maps.get((layer, ti))
            if maps is not None and r < len(maps):
                h, w = mask.shape
                axes[r, c].imshow(maps[r, 0], extent=(0, w, h, 0), interpolation="nearest")
                axes[r, c].contour(
                    mask, levels=np.arange(0.5, mask.max() + 0.5), colors="white", linewidths=0.5
                )
            role = "collapse" if layer in picks["collapse_layers"] else "anchor"
            axes[r, c].set_title(f"{layer} ({role})", fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return _save(fig, path)
