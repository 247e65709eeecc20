"""Capture block outputs of a denoiser with nnsight, and the small tensor helpers around it.

nnsight wraps the denoiser without rewriting it and names modules by their path, so layer names
here are the denoiser's own (`transformer_blocks.17`, `up_blocks.1`). Its interleaver requires
modules to be accessed in forward order, so the execution order is recorded once with plain
hooks that are removed in a `finally` (hooks are global state).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from anti_i2v.models.backbones.base import Backbone
from anti_i2v.models.layers import VAE_PREFIX
from anti_i2v.models.wrap import wrapped


def execution_order(
    backbone: Backbone, kwargs: dict[str, Any], t: float | None = None
) -> list[str]:
    """Block names in the order they run (UNets register `mid_block` after `up_blocks`).

    Args:
        backbone: the adapter; kwargs: one denoiser call (`backbone.denoiser_kwargs`).
        t: the call's timestep: then only `backbone.active_blocks(t)` must run (one expert of a
            multi-expert model); None: every block must.
    """
    order: list[str] = []
    handles = []
    try:
        for name in backbone.block_names():
            module = backbone.denoiser.get_submodule(name)
            handles.append(module.register_forward_hook(lambda *_, n=name: order.append(n)))
        with torch.no_grad():
            backbone.denoiser(**kwargs)
    finally:
        for h in handles:
            h.remove()
    seen = list(dict.fromkeys(order))  # a block called twice counts once, at its first call
    missing = set(backbone.block_names() if t is None else backbone.active_blocks(t)) - set(seen)
    if missing:
        raise RuntimeError(
            f"{backbone.family}: blocks never ran in a forward pass: {sorted(missing)}"
        )
    return seen


def block_order(
    backbone: Backbone, kwargs_at: Callable[[float], dict[str, Any]], timesteps: Sequence[float]
) -> list[str]:
    """The blocks calls at `timesteps` run, in the order they run.

    One call per band of timesteps that runs its own set of blocks: one call for most models,
    one per expert's band for a model of experts (`Backbone.active_blocks`), taken from the
    noisiest timestep down, as sampling meets them.

    Args:
        backbone: the adapter.
        kwargs_at: t -> one denoiser call's kwargs at timestep t.
        timesteps: the timesteps whose blocks are wanted (0..1000).
    """
    order: list[str] = []
    bands: set[tuple[str, ...]] = set()
    for t in sorted(timesteps, reverse=True):
        band = tuple(backbone.active_blocks(t))
        if band in bands:
            continue
        bands.add(band)
        order += [n for n in execution_order(backbone, kwargs_at(t), t) if n not in order]
    return order


def trace_blocks(
    backbone: Backbone,
    kwargs: dict[str, Any],
    layers: list[str],
    stop_after_last: bool = False,
    with_output: bool = False,
) -> dict[str, torch.Tensor]:
    """Hidden states of `layers` from one nnsight trace of the denoiser.

    Args:
        backbone: the adapter whose denoiser runs; it says which element of a block's output
            is the hidden state.
        kwargs: one denoiser call (`backbone.denoiser_kwargs`).
        layers: block module paths, in execution order (`execution_order`).
        stop_after_last: end the forward pass after the last requested layer (early exit).
        with_output: also return the denoiser's own output, under "__output__".

    Returns:
        layer -> hidden state as the block returns it: `(B, tokens, C)` for DiTs,
        `(B*F, C, H, W)` for UNets (`backbone.layout` gives `(B, F, H, W, C)`). Gradients flow
        to whatever required them in `kwargs`.
    """
    if stop_after_last and with_output:
        raise ValueError("early exit and the denoiser's output exclude each other")
    model = wrapped(backbone.denoiser)
    saved: list[Any] = []
    with model.trace(**kwargs) as tracer:
        for name in layers:
            # nnsight hands the block's real output here; the adapter knows which element is hidden.
            saved.append(backbone.hidden(model.get(name).output).save())
        if with_output:
            saved.append(model.output.save())
        if stop_after_last:
            tracer.stop()
    names = [*layers, "__output__"] if with_output else layers
    return dict(zip(names, saved, strict=True))


# Layers of the VAE encoder are named by their path in the pipeline (`vae.encoder.down_blocks.2`),
# so they never collide with the denoiser's own block names.
def vae_layout(x: torch.Tensor) -> torch.Tensor:
    """A VAE encoder block's output as `(B, F, H, W, C)`: image VAEs give `(B, C, H, W)` (one
    frame), video VAEs `(B, C, F, H, W)`."""
    if x.dim() == 4:
        return x.permute(0, 2, 3, 1)[:, None]
    if x.dim() == 5:
        return x.permute(0, 2, 3, 4, 1)
    raise ValueError(f"a VAE encoder block gave shape {tuple(x.shape)}; expected 4-D or 5-D")


@contextlib.contextmanager
def capture_vae(backbone: Backbone, layers: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Outputs of VAE encoder blocks while the model encodes an image (inside `backbone.condition`).

    The VAE runs outside the denoiser's nnsight trace, so its blocks are read with plain forward
    hooks, removed in a `finally`. A block's first call is kept: SVD encodes the photo twice, the
    noise-augmented conditioning (what its denoiser sees) first; video VAEs encode a photo once.

    Args:
        backbone: the adapter whose `pipe.vae` runs.
        layers: `vae.`-prefixed names (`Backbone.vae_block_names`); empty: nothing is hooked.

    Yields:
        layer -> `(B, F, H, W, C)` (`vae_layout`), filled as the blocks run; gradients flow.
    """
    got: dict[str, torch.Tensor] = {}

    def keep(name: str, output: Any) -> None:
        if name not in got:
            got[name] = vae_layout(backbone.hidden(output))

    handles = []
    try:
        for name in layers:
            module = backbone.pipe.vae.get_submodule(name.removeprefix(VAE_PREFIX))
            handles.append(module.register_forward_hook(lambda _m, _i, o, n=name: keep(n, o)))
        yield got
    finally:
        for h in handles:
            h.remove()


def pool_spatial(x: torch.Tensor, k: int) -> torch.Tensor:
    """Average-pool `(B, F, H, W, C)` over H and W by k (ceil: edge cells average what they cover)."""
    if k <= 1:
        return x
    b, f, h, w, c = x.shape
    y = x.permute(0, 1, 4, 2, 3).reshape(b * f, c, h, w)
    y = F.avg_pool2d(y, k, stride=k, ceil_mode=True)
    return y.reshape(b, f, c, *y.shape[-2:]).permute(0, 1, 3, 4, 2)


def to_grid(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-resample `(F, H, W, C)` to `(F, h, w, C)`: compare layers of different resolutions."""
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    y = F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2).float(), size)
    return y.permute(0, 2, 3, 1)


def pooled_size(n: int, k: int) -> int:
    """Length of a pooled axis of length n (the README's size formula)."""
    return n if k <= 1 else math.ceil(n / k)


def frame_indices(total: int, keep: int | None) -> list[int]:
    """`keep` evenly spaced frame indices out of `total`, always including the first and last."""
    if keep is None or keep >= total:
        return list(range(total))
    if keep < 1:
        raise ValueError(f"frames must be at least 1, got {keep}")
    return sorted({int(i) for i in np.linspace(0, total - 1, keep).round()})
