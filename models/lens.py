"""The lens: what each block of a video DiT would generate if it were the last one.

Diffusion Lens (Toker et al., 2024), like the logit lens of language models, reads a block's hidden
state through the model's own output head. Here that head is whatever the denoiser's forward does
after its last block (the final norm with the timestep modulation, the output projection,
unpatchify), run as the denoiser's own code, not re-written per family: for the lens of block i,
every block that would run after it is replaced, for one forward pass, by a pass-through that
hands on the stream as block i left it. The blocks after i then cost nothing, and the denoiser's
output is the lens's output; the family's parameterisation turns it into a clean-latent estimate
(`Backbone.predict_clean`), and its VAE decodes that into the video block i "sees"
(`Backbone.decode_video`).

Only transformer blocks fit this: every block of a DiT reads and returns the same token stream.
A UNet's block output has its own resolution and width, which the output head does not take
(`Backbone.lens_refusal` says so for those families).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from anti_i2v.core.common import ToolkitError
from anti_i2v.models.backbones.base import Backbone, Conditioning
from anti_i2v.models.capture import execution_order
from anti_i2v.models.wrap import forward_swapped


def check_lens(backbone: Backbone) -> None:
    """Raise a one-line ToolkitError where the family offers no lens (before any model work)."""
    if backbone.lens_refusal is not None:
        raise ToolkitError(f"{backbone.family}: no lens: {backbone.lens_refusal}")


@contextlib.contextmanager
def _passing_on_after(backbone: Backbone, order: Sequence[str], index: int) -> Iterator[None]:
    """Within: the blocks after `order[index]` do not run; each returns the stream as that block
    left it (`Backbone.lens_pass_on`), so what follows the blocks reads block `index`'s state."""
    left: dict[str, Any] = {}
    modules = [backbone.denoiser.get_submodule(name) for name in order]

    def keep(_module: Any, _args: Any, output: Any) -> None:
        left["output"] = output

    def pass_on(_module: Any, *args: Any, **kwargs: Any) -> Any:
        return backbone.lens_pass_on(left["output"], args, kwargs)

    handle = modules[index].register_forward_hook(keep)
    try:
        with contextlib.ExitStack() as stack:
            for module in modules[index + 1 :]:
                stack.enter_context(forward_swapped(backbone.denoiser, module, pass_on))
            stack.enter_context(backbone.lens_context(order[index]))
            yield
    finally:
        handle.remove()


@torch.no_grad()
def lens_clean(
    backbone: Backbone,
    cond: Conditioning,
    noisy: torch.Tensor,
    t: float,
    layers: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Each block's clean-latent estimate at timestep t, read through the denoiser's own head.

    Args:
        backbone: a DiT family's adapter (`check_lens` passes).
        cond: the photo's conditioning (`backbone.condition`).
        noisy: the noised latent, laid out like `cond.clean`.
        t: the timestep (0..1000).
        layers: the blocks to read (default: every block a call at t runs,
            `backbone.active_blocks(t)`); each must run at t.

    Returns:
        block -> clean-latent estimate, laid out like `cond.clean`, in execution order. The last
        block's equals `predict_clean` of the denoiser's real output.
    """
    check_lens(backbone)
    kwargs = backbone.denoiser_kwargs(noisy, cond, t)
    order = [n for n in execution_order(backbone, kwargs, t) if n in backbone.lens_blocks(t)]
    wanted = list(order if layers is None else layers)
    missing = [name for name in wanted if name not in order]
    if missing:
        raise ToolkitError(
            f"{backbone.name}: no lens at t={t:g} for {', '.join(missing)}: the blocks with one "
            f"at t are {order[0]} ... {order[-1]}"
        )
    out: dict[str, torch.Tensor] = {}
    for name in sorted(wanted, key=order.index):
        with _passing_on_after(backbone, order, order.index(name)):
            output = backbone.denoiser(**kwargs)
        out[name] = backbone.predict_clean(noisy, backbone.hidden(output), t)
    return out
