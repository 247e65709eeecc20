"""One streaming pass over an activation store: PCA maps and every semantic score.

Memory is bounded by one (layer, timestep, sample) cell plus the first and last layers' cells
of the same sample, C x C accumulators for CKA, an IncrementalPCA, and a capped number of
tokens per sample for the mask probe; the store itself is never loaded whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.progress import Progress
from sklearn.decomposition import PCA

from analyses.scores import (
    LinearCKA,
    clamp_massive,
    labels_to_grid,
    mask_readout_score,
    spatial_coherence,
    temporal_stability,
    to_grid,
)
from probe.common import ToolkitError
from probe.store import ActivationStore

console = Console(stderr=True)


@dataclass(frozen=True)
class AnalysisConfig:
    """Settings of the scoring pass; recorded in the profile."""

    massive_ratio: float = 8.0  # channels above this x median RMS are clamped
    max_tokens_per_sample: int = (
        512  # tokens per sample kept for PCA and the mask probe (seeded subset)
    )
    max_pca_rows: int = 16384  # at most this many tokens (all samples together) fit the PCA
    pca_samples: int = 2  # samples whose PCA maps are kept for figures
    pca_frames: int = 4  # frames per sample kept for figures
    seed: int = 0


@dataclass
class Analysis:
    """Scores (name -> layer -> per-timestep values) and PCA maps for figures."""

    layers: list[str]
    timesteps: list[int]
    scores: dict[str, dict[str, list[float]]]
    # (layer, timestep index) -> (samples, frames, h, w, 3) in [0, 1]
    pca_maps: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    mask_grids: dict[str, np.ndarray] = field(default_factory=dict)  # sample name -> (H, W) labels


def load_masks(masks_dir: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Part masks by sample name: `<dir>/<name>/masks/000.png`, `<dir>/<name>/000.png` or `<dir>/<name>.png`."""
    found = {}
    for name in names:
        for cand in (
            masks_dir / name / "masks" / "000.png",
            masks_dir / name / "000.png",
            masks_dir / f"{name}.png",
        ):
            if cand.is_file():
                found[name] = np.asarray(Image.open(cand).convert("L"), dtype=np.int64)
                break
    if not found:
        raise ToolkitError(
            f"no masks for any sample in {masks_dir}; expected <sample>/masks/000.png or <sample>.png "
            f"for samples like {names[0]!r}"
        )
    return found


def _cell(store: ActivationStore, layer: str, ti: int, s: int, ratio: float) -> torch.Tensor:
    return clamp_massive(torch.from_numpy(store.read_cell(layer, ti, s).astype(np.float32)), ratio)


def check_store(store: ActivationStore) -> None:
    """Refuse an incomplete store, or one whose completed cells lack a chunk, before any scoring."""
    if not store.is_complete():
        raise ToolkitError(
            f"{store.path} is incomplete; re-run the same `anti-i2v probe` command to finish it"
        )
    n_t, n_s = store.completed().shape
    for (
        layer
    ) in store.layers:  # one listing per layer; absent chunks are named by has_chunk's caller
        for t in range(n_t):
            for s in range(n_s):
                if not store.has_chunk(layer, t, s):
                    store.read_cell(layer, t, s)  # raises the one-line error naming layer and cell


def _pca_rgb(pca: PCA, x: torch.Tensor) -> np.ndarray:
    """First three components as RGB, each scaled by its 1st..99th percentile."""
    f, h, w, c = x.shape
    z = pca.transform(x.reshape(-1, c).numpy())
    lo, hi = np.percentile(z, 1, axis=0), np.percentile(z, 99, axis=0)
    z = np.clip((z - lo) / np.maximum(hi - lo, 1e-8), 0, 1)
    if z.shape[1] < 3:
        z = np.pad(z, ((0, 0), (0, 3 - z.shape[1])))
    return z.reshape(f, h, w, 3)


def analyse_store(
    store: ActivationStore,
    cfg: AnalysisConfig = AnalysisConfig(),
    masks: dict[str, np.ndarray] | None = None,
    reference: dict[str, torch.Tensor] | None = None,
) -> Analysis:
    """Score every layer at every timestep, streaming over samples.

    Args:
        store: a complete activation store (checked: every completed cell's chunks exist).
        cfg: token budgets, the massive-activation clamp and the seed of token subsets.
        masks: sample name -> part labels `(H, W)` for the mask readout (optional).
        reference: sample name -> reference-encoder patch features `(h, w, C')` (optional).

    Returns:
        Scores (measure -> layer -> one value per timestep) and PCA maps for the figures.
    """
    check_store(store)
    attrs = store.attrs
    layers, timesteps, samples = store.layers, list(attrs.timesteps), attrs.samples
    names = [s["name"] for s in samples]
    n = len(samples)
    first, last = layers[0], layers[-1]
    classes = 1 + max(int(m.max()) for m in masks.values()) if masks else 0
    rng = np.random.default_rng(cfg.seed)
    token_pick: dict[
        tuple[int, int], np.ndarray
    ] = {}  # (sample, tokens) -> fixed subset, same for all layers

    scores: dict[str, dict[str, list[float]]] = {}

    def put(score: str, layer: str, value: float) -> None:
        scores.setdefault(score, {}).setdefault(layer, []).append(value)

    analysis = Analysis(layers=layers, timesteps=timesteps, scores=scores)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("analyse", total=len(layers) * len(timesteps))
        for layer in layers:
            for ti in range(len(timesteps)):
                coherence, stability = [], []
                cka_first, cka_last, cka_ref = LinearCKA(), LinearCKA(), LinearCKA()
                pca_rows: list[np.ndarray] = []
                readout_rows: list[tuple[int, np.ndarray, np.ndarray]] = []
                for s in range(n):
                    x = _cell(store, layer, ti, s, cfg.massive_ratio)
                    f, h, w, c = x.shape
                    coherence.append(spatial_coherence(x))
                    stability.append(temporal_stability(x))
                    rows = x.reshape(-1, c).numpy()
                    key = (s, rows.shape[0])
                    if key not in token_pick:  # the same seeded token subset for every layer
                        k = min(cfg.max_tokens_per_sample, rows.shape[0])
                        token_pick[key] = np.sort(rng.choice(rows.shape[0], k, replace=False))
                    pick = token_pick[key]
                    if sum(len(r) for r in pca_rows) < cfg.max_pca_rows:
                        pca_rows.append(rows[pick])
                    for other, acc in ((first, cka_first), (last, cka_last)):
                        y = _cell(store, other, ti, s, cfg.massive_ratio)
                        grid = (min(h, y.shape[1]), min(w, y.shape[2]))
                        acc.update(
                            to_grid(x, grid).reshape(-1, c),
                            to_grid(y, grid).reshape(-1, y.shape[-1]),
                        )
                    if reference is not None and names[s] in reference:
                        ref = reference[names[s]]  # (h', w', C') patch features of the photo
                        grid = (min(h, ref.shape[0]), min(w, ref.shape[1]))
                        xr = to_grid(x.mean(0, keepdim=True), grid).reshape(-1, c)
                        cka_ref.update(xr, to_grid(ref[None], grid).reshape(-1, ref.shape[-1]))
                    if masks and names[s] in masks:
                        lab = labels_to_grid(
                            torch.from_numpy(masks[names[s]]), (h, w), classes
                        ).numpy()
                        labels = np.broadcast_to(lab, (f, h, w)).reshape(-1)
                        readout_rows.append((s, rows[pick], labels[pick]))
                        analysis.mask_grids.setdefault(names[s], masks[names[s]])
                put("spatial_coherence", layer, float(np.mean(coherence)))
                put("temporal_stability", layer, float(np.mean(stability)))
                put("cka_first", layer, cka_first.value())
                put("cka_last", layer, cka_last.value())
                if cka_ref.n:
                    put("reference_cka", layer, cka_ref.value())
                if readout_rows:
                    put("mask_probe", layer, _mask_readout(readout_rows))
                fit_rows = np.concatenate(pca_rows)
                if fit_rows.shape[0] >= 3 and fit_rows.shape[1] >= 3:
                    # Randomized PCA on a bounded, seeded token subset: memory max_pca_rows x C.
                    pca = PCA(n_components=3, svd_solver="randomized", random_state=cfg.seed).fit(
                        fit_rows
                    )
                    maps = []
                    for s in range(min(cfg.pca_samples, n)):
                        x = _cell(store, layer, ti, s, cfg.massive_ratio)
                        keep = np.unique(
                            np.linspace(0, x.shape[0] - 1, min(cfg.pca_frames, x.shape[0])).round()
                        )
                        maps.append(_pca_rgb(pca, x[keep.astype(int)]))
                    analysis.pca_maps[(layer, ti)] = np.stack(maps)
                progress.advance(task)
    return analysis


def _mask_readout(rows: list[tuple[int, np.ndarray, np.ndarray]]) -> float:
    """Train on even-numbered samples, test on odd ones (held-out portraits); one sample: split tokens."""
    if len(rows) >= 2:
        train = [r for r in rows if r[0] % 2 == 0]
        test = [r for r in rows if r[0] % 2 == 1]
        tx, ty = np.concatenate([r[1] for r in train]), np.concatenate([r[2] for r in train])
        vx, vy = np.concatenate([r[1] for r in test]), np.concatenate([r[2] for r in test])
    else:
        x, y = rows[0][1], rows[0][2]
        tx, ty, vx, vy = x[::2], y[::2], x[1::2], y[1::2]
    score = mask_readout_score(tx, ty, vx, vy)
    return 0.0 if math.isnan(score) else score
