"""The automatic choice of collapse layers, anchor layers and timesteps from semantic scores.

The rule (defaults in :class:`ChoiceRule`, all recorded in the profile):
1. semantic(layer) = mean over the available semantic measures (mask_probe, reference_cka,
   spatial_coherence) of each measure min-max normalised across layers, averaged over timesteps;
   with `measures` the rule may rank by the attention share instead (`ATTENTION_MEASURE`), or
   by it beside them;
2. low_level(layer) = CKA to the first block, normalised the same way;
3. collapse layers: among the first `collapse_max_depth` of the network, the `n_collapse` layers
   with the highest low_level - semantic (early, unsemantic, close to the input);
4. anchor layers: among depths in [`anchor_min_depth`, `anchor_max_depth`] (so mid-depth wins
   over the last block unless it truly is the most semantic inside that band), the `n_anchors`
   most semantic layers that are not collapse layers;
5. timesteps: among probed timesteps >= `min_timestep` (all of them if none is), the
   `n_timesteps` at which the anchors' semantic score is highest. The profile's timesteps are the
   ones the attack optimises at, and an image cloak has leverage where the denoiser depends on
   the image: in the noisier half, where the latent itself holds little of it (the README has
   the measurement behind this default).
6. VAE anchors, when the store holds the VAE encoder's blocks (`probe --vae`): the
   `n_vae_anchors` most semantic of them, their measures normalised among the VAE's blocks only.
   Steps 1-5 see the denoiser's blocks alone, so probing the VAE changes none of their picks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from anti_i2v.core.common import ToolkitError
from anti_i2v.models.layers import split_vae_layers

SEMANTIC_MEASURES = ("mask_probe", "reference_cka", "spatial_coherence")
# The attention share (`anti-i2v attention`): how much later frames' attention lands on the photo's
# frame. Not a semantic measure, but the rule can rank blocks by it the same way (`--measures`):
# the blocks that carry the photo into the video become the anchors.
ATTENTION_MEASURE = "attention_frame0"
MEASURES = (*SEMANTIC_MEASURES, ATTENTION_MEASURE)


@dataclass(frozen=True)
class ChoiceRule:
    """Parameters of the layer choice."""

    n_collapse: int = 1
    n_anchors: int = 2
    n_timesteps: int = 2
    n_vae_anchors: int = 1  # used when VAE blocks were probed; 0: none
    collapse_max_depth: float = 0.34
    anchor_min_depth: float = 0.25
    anchor_max_depth: float = 0.9
    min_timestep: int = 500  # on the 0..1000 scale; see step 5
    measures: tuple[str, ...] = SEMANTIC_MEASURES

    def __post_init__(self) -> None:
        for flag, n in (
            ("--anchors", self.n_anchors),
            ("--collapse", self.n_collapse),
            ("--timesteps", self.n_timesteps),
        ):
            if n < 1:
                raise ToolkitError(
                    f"{flag} {n}: the rule must pick at least one; a cloak needs every role filled"
                )
        for name in ("collapse_max_depth", "anchor_min_depth", "anchor_max_depth"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ToolkitError(
                    f"{name} {getattr(self, name)}: depths are fractions of the network, in 0..1"
                )
        if self.anchor_min_depth > self.anchor_max_depth:
            raise ToolkitError(
                "anchor_min_depth is above anchor_max_depth: the anchor band is empty"
            )
        if not 0 <= self.min_timestep < 1000:
            raise ToolkitError(
                f"--min-timestep {self.min_timestep}: give a value in 0..999 (the 0..1000 scale)"
            )
        if self.n_vae_anchors < 0:
            raise ToolkitError(f"--vae-anchors {self.n_vae_anchors}: give 0 or more")
        unknown = [m for m in self.measures if m not in MEASURES]
        if unknown or not self.measures:
            raise ToolkitError(
                f"--measures {','.join(self.measures)}: choose from {', '.join(MEASURES)}"
            )

    def to_dict(self) -> dict:
        return {**asdict(self), "measures": list(self.measures)}


def _normalise(values: np.ndarray) -> np.ndarray:
    lo, hi = np.nanmin(values), np.nanmax(values)
    return np.zeros_like(values) if hi - lo < 1e-12 else (values - lo) / (hi - lo)


def semantic_matrix(
    scores: dict[str, dict[str, list[float]]], layers: list[str], rule: ChoiceRule
) -> np.ndarray:
    """(layers, timesteps) semantic score: the mean of the available measures, each normalised."""
    used = [m for m in rule.measures if m in scores]
    if not used:
        raise ValueError(f"no semantic measure among {rule.measures} in scores {sorted(scores)}")
    mats = [
        _normalise(np.array([scores[m][layer] for layer in layers], dtype=np.float64)) for m in used
    ]
    return np.mean(mats, axis=0)


def choose(
    scores: dict[str, dict[str, list[float]]],
    layers: list[str],
    timesteps: list[int],
    rule: ChoiceRule = ChoiceRule(),
    collapse: list[str] | None = None,
) -> dict:
    """Apply the rule to per-layer scores.

    Args:
        scores: measure -> layer -> one value per timestep (`Analysis.scores`).
        layers: every block, in execution order (depth is the position here); VAE encoder
            blocks (`is_vae_layer`), when probed, are chosen among themselves (step 6).
        timesteps: the probed timesteps, the scores' second axis.
        rule: the rule's parameters.
        collapse: given collapse layers instead of step 3's (a study arm that changes only the
            anchors keeps the profile's); anchors are then chosen among the other blocks.

    Returns:
        collapse_layers, anchor_layers, vae_anchor_layers and timesteps (each sorted), and the
        per-layer `semantic` and `low_level` scores the choice used.

    A model of experts (Wan 2.2 A14B) runs each expert's blocks at its own band of timesteps
    (the other timesteps' scores are NaN). The rule is then applied to each band on its own:
    depth counts within the expert, and each expert gets its collapse and anchor blocks and its
    timesteps, so the cloak reaches both experts, each at the timesteps it denoises.
    """
    layers, vae = split_vae_layers(layers)
    picks: dict = {}
    for band, steps in _bands(scores, layers):
        part = _choose_blocks(
            {
                m: {layer: [by[layer][t] for t in steps] for layer in band}
                for m, by in scores.items()
            },
            band,
            [timesteps[t] for t in steps],
            rule,
            collapse,
        )
        for key, value in part.items():  # blocks stay in execution order, band after band
            if key == "timesteps":
                picks[key] = sorted(picks.get(key, []) + value)
            elif isinstance(value, list):
                picks[key] = picks.get(key, []) + value
            else:
                picks[key] = picks.get(key, {}) | value
    picks["vae_anchor_layers"] = []
    if vae:
        # The attention share is the denoiser's: the VAE's blocks rank by the semantic measures
        semantic_only = tuple(m for m in rule.measures if m in SEMANTIC_MEASURES)
        vae_rule = replace(rule, measures=semantic_only or SEMANTIC_MEASURES)
        vae_semantic = semantic_matrix(scores, vae, vae_rule).mean(axis=1)
        vae_low = _normalise(np.array([np.mean(scores["cka_first"][layer]) for layer in vae]))
        best = sorted(range(len(vae)), key=lambda i: (-vae_semantic[i], i))[: rule.n_vae_anchors]
        picks["vae_anchor_layers"] = [vae[i] for i in sorted(best)]
        picks["semantic"] |= {layer: float(vae_semantic[i]) for i, layer in enumerate(vae)}
        picks["low_level"] |= {layer: float(vae_low[i]) for i, layer in enumerate(vae)}
    return picks


def _bands(
    scores: dict[str, dict[str, list[float]]], layers: list[str]
) -> list[tuple[list[str], list[int]]]:
    """Blocks grouped by the timesteps they ran at (scores not NaN), in the order they first
    come: one group of every block and timestep, but for a model of experts one per expert."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for layer in layers:
        ran = tuple(i for i, v in enumerate(scores["cka_first"][layer]) if not np.isnan(v))
        groups.setdefault(ran, []).append(layer)
    return [(band, list(steps)) for steps, band in groups.items()]


def _choose_blocks(
    scores: dict[str, dict[str, list[float]]],
    layers: list[str],
    timesteps: list[int],
    rule: ChoiceRule,
    given_collapse: list[str] | None = None,
) -> dict:
    """The rule on denoiser blocks that all ran at every one of `timesteps`."""
    n = len(layers)
    sem_t = semantic_matrix(scores, layers, rule)  # (L, T)
    semantic = sem_t.mean(axis=1)
    low = _normalise(np.array([np.mean(scores["cka_first"][layer]) for layer in layers]))
    depth = np.arange(n) / max(n - 1, 1)

    collapse_pool = [i for i in range(n) if depth[i] <= rule.collapse_max_depth] or [0]
    collapse = sorted(collapse_pool, key=lambda i: (-(low[i] - semantic[i]), i))[: rule.n_collapse]
    if given_collapse is not None:
        collapse = [i for i in range(n) if layers[i] in given_collapse]
    anchor_pool = [
        i
        for i in range(n)
        if rule.anchor_min_depth <= depth[i] <= rule.anchor_max_depth and i not in collapse
    ] or [i for i in range(n) if i not in collapse]
    anchors = sorted(anchor_pool, key=lambda i: (-semantic[i], i))[: rule.n_anchors]
    per_t = sem_t[anchors].mean(axis=0)
    noisy = [t for t in range(len(timesteps)) if timesteps[t] >= rule.min_timestep] or list(
        range(len(timesteps))
    )
    best_t = sorted(noisy, key=lambda t: (-per_t[t], t))[: rule.n_timesteps]
    return {
        "collapse_layers": [layers[i] for i in sorted(collapse)],
        "anchor_layers": [layers[i] for i in sorted(anchors)],
        "timesteps": sorted(int(timesteps[t]) for t in best_t),
        "semantic": {layer: float(semantic[i]) for i, layer in enumerate(layers)},
        "low_level": {layer: float(low[i]) for i, layer in enumerate(layers)},
    }
