"""One streaming pass over an activation store: PCA maps and every semantic score.

Memory is bounded by one (layer, timestep, sample) cell plus the first and last layers' cells
of the same sample, C x C accumulators for CKA, an IncrementalPCA, and a capped number of
tokens per sample for the mask probe; the store itself is never loaded whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.progress import Progress
from sklearn.decomposition import PCA

from anti_i2v.analyses.scores import (
    LinearCKA,
    clamp_massive,
    labels_to_grid,
    mask_readout_score,
    spatial_coherence,
    temporal_stability,
)
from anti_i2v.core.common import ToolkitError
from anti_i2v.models.capture import to_grid
from anti_i2v.models.layers import split_vae_layers
from anti_i2v.probe.store import ActivationStore, open_store

if TYPE_CHECKING:
    from distributed import Client

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


MASK_LAYOUTS = ("<name>/masks/000.png", "<name>/000.png", "<name>.png")  # the world's first


def mask_path(masks_dir: Path, name: str) -> Path | None:
    """Sample `name`'s part mask in `masks_dir` (the first of `MASK_LAYOUTS` there), or None."""
    for layout in MASK_LAYOUTS:
        cand = masks_dir / layout.replace("<name>", name)
        if cand.is_file():
            return cand
    return None


def load_masks(masks_dir: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Part masks by sample name (`mask_path`), as `(H, W)` int64 labels."""
    found = {}
    for name in names:
        path = mask_path(masks_dir, name)
        if path is not None:
            found[name] = np.asarray(Image.open(path).convert("L"), dtype=np.int64)
    if not found:
        raise ToolkitError(
            f"no masks for any sample in {masks_dir}; expected <sample>/masks/000.png or <sample>.png "
            f"for samples like {names[0]!r}"
        )
    return found


def clamped_cell(store: ActivationStore, layer: str, ti: int, s: int, ratio: float) -> torch.Tensor:
    """Cell (ti, s) of `layer`, `(frame, h, w, C)` float32, massive channels clamped (`clamp_massive`)."""
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
                if store.runs(layer, t) and not store.has_chunk(layer, t, s):
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


def token_picks(store: ActivationStore, cfg: AnalysisConfig) -> dict[tuple[int, int], np.ndarray]:
    """The seeded token subset of every (sample, token count), drawn before any cell is read.

    One generator is consumed in the order layers, timesteps and samples are visited, so every
    layer of one grid is scored on the same tokens; the counts come from the arrays' shapes
    alone. Drawn up front, the subsets are the same whether tasks run here or on Dask workers.
    """
    rng = np.random.default_rng(cfg.seed)
    picks: dict[tuple[int, int], np.ndarray] = {}
    n_samples = len(store.attrs.samples)
    for layer in store.layers:
        tokens = math.prod(store.array(layer).shape[2:5])  # frames x height x width
        for _ in store.attrs.timesteps:
            for s in range(n_samples):
                if (s, tokens) not in picks:
                    k = min(cfg.max_tokens_per_sample, tokens)
                    picks[s, tokens] = np.sort(rng.choice(tokens, k, replace=False))
    return picks


@dataclass(frozen=True)
class ScoreTask:
    """Everything one (layer, timestep) task needs; small enough to ship to a Dask worker."""

    store: str  # where the store lives (path or URL): each task reads its own cells
    cfg: AnalysisConfig
    picks: dict[tuple[int, int], np.ndarray]
    masks: dict[str, np.ndarray] | None = None
    reference: dict[str, torch.Tensor] | None = None


def score_layer(
    task: ScoreTask, layer: str, ti: int, store: ActivationStore | None = None
) -> tuple[dict[str, float], np.ndarray | None]:
    """Every measure of one (layer, timestep), and its PCA maps; reads one sample's cells at a time.

    `store`: the open store to read (the serial path passes its own, which keeps its chunk
    listings); a Dask task opens `task.store` itself.
    """
    store = store if store is not None else open_store(task.store)
    scorer = _Scorer(store, task.cfg, task.masks, task.reference, task.picks)
    values, pca_rows = scorer.score(layer, ti)
    return values, scorer.pca_maps(layer, ti, pca_rows)


def analyse_store(
    store: ActivationStore,
    cfg: AnalysisConfig = AnalysisConfig(),
    masks: dict[str, np.ndarray] | None = None,
    reference: dict[str, torch.Tensor] | None = None,
    client: Client | None = None,
) -> Analysis:
    """Score every layer at every timestep, streaming over samples.

    Args:
        store: a complete activation store (checked: every completed cell's chunks exist).
        cfg: token budgets, the massive-activation clamp and the seed of token subsets.
        masks: sample name -> part labels `(H, W)` for the mask readout (optional).
        reference: sample name -> reference-encoder patch features `(h, w, C')` (optional).
        client: a dask.distributed client: one task per (layer, timestep), each reading the
            store itself; the result is the serial one's (same token subsets, same order).

    Returns:
        Scores (measure -> layer -> one value per timestep; NaN where the layer did not run, as
        one expert's blocks at the other expert's timesteps) and PCA maps for the figures.
    """
    check_store(store)
    task = ScoreTask(store.path, cfg, token_picks(store, cfg), masks, reference)
    analysis = Analysis(layers=store.layers, timesteps=list(store.attrs.timesteps), scores={})
    cells = [
        (layer, ti)
        for layer in analysis.layers
        for ti in range(len(analysis.timesteps))
        if store.runs(layer, ti)
    ]
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("analyse", total=len(cells))
        if client is None:
            results = []
            for layer, ti in cells:
                results.append(score_layer(task, layer, ti, store))
                progress.advance(bar)
        else:
            results = _score_on_cluster(client, task, cells, lambda: progress.advance(bar))
    n_t = len(analysis.timesteps)
    for (layer, ti), (values, maps) in zip(cells, results, strict=True):
        for measure, value in values.items():
            row = analysis.scores.setdefault(measure, {}).setdefault(layer, [math.nan] * n_t)
            row[ti] = value
        if maps is not None:
            analysis.pca_maps[(layer, ti)] = maps
    if masks:
        names = [s["name"] for s in store.attrs.samples]
        analysis.mask_grids = {n: masks[n] for n in names if n in masks}
    return analysis


# Whole passes over the cells a cluster may lose to dying workers before analyse gives up.
CLUSTER_ATTEMPTS = 3


def _score_on_cluster(client, task, cells, advance) -> list:
    """Score every (layer, timestep) cell on a dask cluster, starting again when workers die.

    A worker that dies takes its copy of the scattered task and its running cells with it
    (dask then cancels the futures that needed them, or gives up on a cell as `KilledWorker`).
    Every cell's score is a pure function of the store, so a pass that lost workers is simply
    run again, up to `CLUSTER_ATTEMPTS` times, then one line says what happened.
    """
    from concurrent.futures import CancelledError

    from distributed import KilledWorker

    for attempt in range(1, CLUSTER_ATTEMPTS + 1):
        try:
            return _one_pass(client, task, cells, advance if attempt == 1 else lambda: None)
        except (CancelledError, KilledWorker) as exc:
            lost = f"{type(exc).__name__}: {exc}".strip()
    raise ToolkitError(
        f"the Dask workers kept dying while scoring ({CLUSTER_ATTEMPTS} passes; last: {lost[:120]}); "
        "give them more memory or fewer --workers, then run the same command again"
    )


def _one_pass(client, task, cells, advance) -> list:
    from distributed import as_completed

    shared = client.scatter(task, broadcast=True)  # sent to each worker once
    futures = [client.submit(score_layer, shared, layer, ti, pure=False) for layer, ti in cells]
    for _ in as_completed(futures):
        advance()
    return client.gather(futures)


class _Scorer:
    """Every measure of one (layer, timestep), streamed over samples; one sample's cells in memory.

    Token subsets come from `token_picks`, so every layer of one grid is scored on the same tokens.
    """

    def __init__(self, store: ActivationStore, cfg: AnalysisConfig, masks, reference, picks):
        self.store, self.cfg, self.masks, self.reference = store, cfg, masks, reference
        self.names = [s["name"] for s in store.attrs.samples]
        # CKA to the denoiser's first and last blocks that ran at the timestep (VAE encoder
        # blocks, when probed, come after; a model of experts runs one expert's blocks)
        self.blocks = split_vae_layers(store.layers)[0]
        self.classes = 1 + max(int(m.max()) for m in masks.values()) if masks else 0
        self.token_pick = picks

    def cell(self, layer: str, ti: int, s: int) -> torch.Tensor:
        return clamped_cell(self.store, layer, ti, s, self.cfg.massive_ratio)

    def pick(self, s: int, tokens: int) -> np.ndarray:
        """The seeded token subset of sample `s` (the same for every layer of its size)."""
        return self.token_pick[s, tokens]

    def score(self, layer: str, ti: int) -> tuple[dict[str, float], list[np.ndarray]]:
        """Measure -> value for this layer and timestep, and the token rows kept for its PCA."""
        coherence, stability, pca_rows, readout_rows = [], [], [], []
        cka_first, cka_last, cka_ref = LinearCKA(), LinearCKA(), LinearCKA()
        ran = [b for b in self.blocks if self.store.runs(b, ti)]
        first, last = ran[0], ran[-1]
        for s, name in enumerate(self.names):
            x = self.cell(layer, ti, s)
            f, h, w, c = x.shape
            coherence.append(spatial_coherence(x))
            stability.append(temporal_stability(x))
            rows = x.reshape(-1, c).numpy()
            pick = self.pick(s, rows.shape[0])
            if sum(len(r) for r in pca_rows) < self.cfg.max_pca_rows:
                pca_rows.append(rows[pick])
            for other, acc in ((first, cka_first), (last, cka_last)):
                y = self.cell(other, ti, s)
                grid = (min(h, y.shape[1]), min(w, y.shape[2]))
                acc.update(
                    to_grid(x, grid).reshape(-1, c), to_grid(y, grid).reshape(-1, y.shape[-1])
                )
            if self.reference is not None and name in self.reference:
                ref = self.reference[name]  # (h', w', C') patch features of the photo
                grid = (min(h, ref.shape[0]), min(w, ref.shape[1]))
                xr = to_grid(x.mean(0, keepdim=True), grid).reshape(-1, c)
                cka_ref.update(xr, to_grid(ref[None], grid).reshape(-1, ref.shape[-1]))
            if self.masks and name in self.masks:
                lab = labels_to_grid(
                    torch.from_numpy(self.masks[name]), (h, w), self.classes
                ).numpy()
                labels = np.broadcast_to(lab, (f, h, w)).reshape(-1)
                readout_rows.append((s, rows[pick], labels[pick]))
        values = {
            "spatial_coherence": float(np.mean(coherence)),
            "temporal_stability": float(np.mean(stability)),
            "cka_first": cka_first.value(),
            "cka_last": cka_last.value(),
        }
        if cka_ref.n:
            values["reference_cka"] = cka_ref.value()
        if readout_rows:
            values["mask_probe"] = _mask_readout(readout_rows)
        return values, pca_rows

    def pca_maps(self, layer: str, ti: int, pca_rows: list[np.ndarray]) -> np.ndarray | None:
        """PCA-RGB maps `(samples, frames, h, w, 3)` of the first samples, or None when too small."""
        fit_rows = np.concatenate(pca_rows)
        if fit_rows.shape[0] < 3 or fit_rows.shape[1] < 3:
            return None
        # Randomized PCA on a bounded, seeded token subset: memory max_pca_rows x C.
        pca = PCA(n_components=3, svd_solver="randomized", random_state=self.cfg.seed).fit(fit_rows)
        maps = []
        for s in range(min(self.cfg.pca_samples, len(self.names))):
            x = self.cell(layer, ti, s)
            keep = np.unique(
                np.linspace(0, x.shape[0] - 1, min(self.cfg.pca_frames, x.shape[0])).round()
            )
            maps.append(_pca_rgb(pca, x[keep.astype(int)]))
        return np.stack(maps)


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
