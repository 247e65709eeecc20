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


def _nearest(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """`(y, x, 3)` brought to `(h, w, 3)` by nearest-neighbour indexing (maps stay blocky)."""
    rows = np.arange(h) * image.shape[0] // h
    cols = np.arange(w) * image.shape[1] // w
    return image[rows][:, cols]


def pca_grid(analysis: Analysis, path: Path, picks: dict, sample: int = 0) -> Path:
    """Rows: layers (collapse in blue, anchors in red); columns: timesteps x kept frames.

    The cells are drawn as one mosaic image on one axes, every map brought to the largest map's
    size: one matplotlib axes per cell (hundreds at real depth) made this figure the slowest part
    of an analysis.
    """
    layers, ts = analysis.layers, analysis.timesteps
    frames = next(iter(analysis.pca_maps.values())).shape[1]
    cols = len(ts) * frames
    cell_h = max(m.shape[2] for m in analysis.pca_maps.values())
    cell_w = max(m.shape[3] for m in analysis.pca_maps.values())
    pad = max(1, cell_h // 8)  # white gaps between cells
    mosaic = np.ones((len(layers) * (cell_h + pad) + pad, cols * (cell_w + pad) + pad, 3))
    for r, layer in enumerate(layers):
        for ti in range(len(ts)):
            maps = analysis.pca_maps.get((layer, ti))
            if maps is None or sample >= len(maps):
                continue  # too few tokens for a PCA: the cell stays blank
            for f in range(min(frames, maps.shape[1])):
                y, x = pad + r * (cell_h + pad), pad + (ti * frames + f) * (cell_w + pad)
                mosaic[y : y + cell_h, x : x + cell_w] = _nearest(maps[sample, f], cell_h, cell_w)
    row_h = 0.55 if len(layers) > 24 else 0.9
    # Room on the left for the longest block name (7 pt text, about 0.6 em a character), so
    # names like `temporal_blocks.27` are not cut at the figure's edge.
    label_in = max(len(layer) for layer in layers) * 7 * 0.6 / 72 + 0.15
    width = max(4, cols * row_h * 1.2) + label_in
    fig, ax = _subplots(figsize=(width, len(layers) * row_h + 0.8))
    fig.subplots_adjust(
        left=label_in / width, right=0.98, top=1 - 0.6 / (len(layers) * row_h + 0.8)
    )
    ax.imshow(mosaic, interpolation="nearest", aspect="auto")
    ax.set_xticks([pad + c * (cell_w + pad) + cell_w / 2 for c in range(cols)])
    ax.set_xticklabels(
        [f"t={t}" + (f" f{f}" if frames > 1 else "") for t in ts for f in range(frames)], fontsize=7
    )
    ax.xaxis.tick_top()
    ax.set_yticks([pad + r * (cell_h + pad) + cell_h / 2 for r in range(len(layers))])
    ax.set_yticklabels(layers, fontsize=7)
    for label, layer in zip(ax.get_yticklabels(), layers, strict=True):
        label.set_color(
            "tab:blue"
            if layer in picks["collapse_layers"]
            else "tab:red"
            if layer in picks["anchor_layers"] + picks.get("vae_anchor_layers", [])
            else "black"
        )
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
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
