"""The attention job: how much each block's later frames look at the photo's frame, per timestep.

For every photo and timestep, one forward pass of the conditional branch with the attention of
every block that runs recorded (`anti_i2v.models.attention.capture_attention`, a seeded query
subset, heads averaged), and each recorded call read by `attention_share`: the probability mass
that queries on later frames put on frame 0's tokens (the conditioning frame; and, in joint
attention, on the text tokens). A block's share at a timestep is the mean over its readable
calls and the photos; NaN where it has none (cross-attention only, or, for a model of experts,
a timestep its expert does not run), written as null.

Writes `OUT/attention.json` (schema `anti-i2v.attention/1`) and `OUT/attention.png`, the
share curve over depth, one line per timestep. With `maps`, also `OUT/attention-maps.json`
(schema `anti-i2v.attention-maps/1`): for the first photo, per block and timestep, where each of
up to `maps` video queries attends over the video (`attention_maps`), float16 in base64, for
the explorer's attention view.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from anti_i2v.core.common import (
    TOOLKIT_VERSION,
    ToolkitError,
    check_writable_dir,
    nan_to_null,
    pick_device,
    write_text_atomic,
)
from anti_i2v.core.images import gather_images
from anti_i2v.models.attention import attention_maps, attention_share, capture_attention
from anti_i2v.models.backbones import load_backbone
from anti_i2v.probe.config import AttentionConfig
from anti_i2v.probe.run import load_photos, sample_noise

SCHEMA = "anti-i2v.attention/1"
MAPS_SCHEMA = "anti-i2v.attention-maps/1"


@dataclass
class AttentionResult:
    """Per block and timestep: the later frames' share on frame 0, and on text where joint."""

    model: str
    family: str
    layers: list[str]
    timesteps: list[int]
    frame0: dict[str, list[float]]
    text: dict[str, list[float]] = field(default_factory=dict)
    photos: list[str] = field(default_factory=list)
    queries: int = 64
    seed: int = 0
    toolkit_version: str = TOOLKIT_VERSION
    schema: str = SCHEMA

    def to_json(self) -> dict:
        return {**asdict(self), "frame0": nan_to_null(self.frame0), "text": nan_to_null(self.text)}


def run_attention(cfg: AttentionConfig) -> AttentionResult:
    """Measure every block's attention shares on `cfg.images` at `cfg.timesteps`.

    Returns:
        The result, also written to `cfg.out` (`attention.json`, `attention.png`).
    """
    out = check_writable_dir(Path(cfg.out))  # before any model work
    backbone = load_backbone(cfg.model, device=pick_device(cfg.device))
    photos, skipped = load_photos(
        gather_images([Path(p) for p in cfg.images]), 2 * max(backbone.resolution)
    )
    if not photos:
        raise ToolkitError("none of the images could be read: " + "; ".join(w for _, w in skipped))
    layers = backbone.block_names()
    text_tokens = backbone.joint_text_tokens()
    sums = {k: np.zeros((len(layers), len(cfg.timesteps))) for k in ("frame0", "text")}
    counts = {k: np.zeros((len(layers), len(cfg.timesteps))) for k in ("frame0", "text")}
    index = {name: i for i, name in enumerate(layers)}
    maps: dict[str, dict] = {}  # "layer@t" -> the first photo's maps (the explorer's view)
    grid0 = None
    for s, photo in enumerate(photos):
        with torch.no_grad():
            cond = backbone.condition(backbone.resize(photo.pixels[None]).to(backbone.device))
            grid = backbone.token_grid(cond)
            noise = sample_noise(tuple(cond.clean.shape[1:]), cfg.seed, s)[None].to(cond.clean)
            for ti, t in enumerate(cfg.timesteps):
                kwargs = backbone.denoiser_kwargs(backbone.add_noise(cond.clean, noise, t), cond, t)
                blocks = backbone.active_blocks(t)
                with capture_attention(backbone.denoiser, blocks, cfg.queries, cfg.seed) as calls:
                    backbone.denoiser(**kwargs)
                for call in calls:
                    share = attention_share(call, grid, text_tokens, backbone.joint_text_first)
                    block = next(b for b in blocks if call.module.startswith(f"{b}."))
                    key = f"{block}@{t}"
                    if s == 0 and cfg.maps and key not in maps:  # a block's first video call
                        found = attention_maps(
                            call, grid, text_tokens, backbone.joint_text_first, cfg.maps
                        )
                        if found is not None and len(found[0]):
                            grid0 = grid
                            maps[key] = {
                                "module": call.module,
                                "tokens": found[0].tolist(),
                                "maps": float16_b64(found[1]),
                            }
                    for key, value in (share or {}).items():
                        sums[key][index[block], ti] += value
                        counts[key][index[block], ti] += 1
    with np.errstate(invalid="ignore"):
        mean = {k: sums[k] / counts[k] for k in sums}  # NaN where nothing was readable
    result = AttentionResult(
        model=backbone.name,
        family=backbone.family,
        layers=layers,
        timesteps=list(cfg.timesteps),
        frame0={name: mean["frame0"][i].tolist() for i, name in enumerate(layers)},
        text={name: mean["text"][i].tolist() for i, name in enumerate(layers)}
        if counts["text"].any()
        else {},
        photos=[p.name for p in photos],
        queries=cfg.queries,
        seed=cfg.seed,
    )
    write_text_atomic(out / "attention.json", json.dumps(result.to_json(), indent=2) + "\n")
    if cfg.maps:
        kept = {
            "schema": MAPS_SCHEMA,
            "model": result.model,
            "photo": photos[0].name,
            "grid": list(grid0) if grid0 is not None else None,
            "timesteps": result.timesteps,
            "maps": maps,
        }
        write_text_atomic(out / "attention-maps.json", json.dumps(kept) + "\n")
    plot_shares(result, out / "attention.png")
    return result


def float16_b64(x: torch.Tensor) -> str:
    """A tensor as little-endian float16 bytes in base64 (how the explorer's data travel)."""
    import base64

    return base64.b64encode(x.float().numpy().astype("<f2").tobytes()).decode()


def plot_shares(result: AttentionResult, path: Path) -> Path:
    """The frame-0 share over depth, one line per timestep (gaps where a block did not run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from anti_i2v.core.common import atomic_path

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    x = np.arange(len(result.layers))
    for ti, t in enumerate(result.timesteps):
        ax.plot(x, [result.frame0[name][ti] for name in result.layers], marker=".", label=f"t={t}")
    ax.set_xlabel(f"block ({result.layers[0]} ... {result.layers[-1]})")
    ax.set_ylabel("later frames' attention on frame 0")
    ax.set_ylim(0, 1)
    ax.set_title(result.model, fontsize=9)
    ax.legend(fontsize=7, ncol=min(5, len(result.timesteps)))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    return path
