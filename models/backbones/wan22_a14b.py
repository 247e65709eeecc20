"""Wan 2.2 A14B image-to-video (Wan2.2-I2V-A14B): two experts, one per band of timesteps.

Two `WanTransformer3DModel`s of the same architecture (40 blocks of width 5120 each). The
pipeline's `transformer` (the high-noise expert) denoises the steps with t >= `boundary_ratio` x
1000 (0.9 for I2V), `transformer_2` (the low-noise expert) the rest; only one runs per call. The
image enters as in Wan 2.1 (the VAE latent of [image, black frames] and a 4-channel first-frame
mask on the channels, in = 16 + 4 + 16) but with no CLIP branch (`image_dim=None`).

To the toolkit the two are one denoiser, `Experts`, with the experts as its children `high`
and `low`: every block is keyed by expert and block (`high.blocks.7`), `active_blocks(t)` names
the expert a timestep runs, and `denoiser_kwargs` routes each call to it. So probing at
timesteps in both bands covers both experts (each block's cells exist at its own band only),
and a cloak's step at a sampled timestep goes through the expert that owns it, as generation
does.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanTransformer3DModel,
)
from diffusers.configuration_utils import FrozenDict
from torch import nn

from anti_i2v.models.backbones.base import Conditioning
from anti_i2v.models.backbones.wan import TINY_WAN_DIT, Wan, tiny_wan_vae

EXPERTS = ("high", "low")  # the pipeline's transformer and transformer_2, in sampling order


class Experts(nn.Module):
    """Two experts as one denoiser: `expert="high"` or `"low"` (a keyword of every call) picks
    the one that runs. A string, not a timestep tensor: under `plan`'s fake tensors a tensor has
    no value to compare with the boundary.
    """

    _supports_gradient_checkpointing = True

    def __init__(self, high: nn.Module, low: nn.Module, boundary: float):
        super().__init__()
        self.high, self.low, self.boundary = high, low, boundary

    @property
    def config(self) -> FrozenDict:
        """The experts' shared architecture (their configs are equal), with the boundary; read
        like a diffusers model's config (`config.patch_size`)."""
        return FrozenDict({**self.high.config, "boundary_timestep": self.boundary})

    def enable_gradient_checkpointing(self) -> None:
        self.high.enable_gradient_checkpointing()
        self.low.enable_gradient_checkpointing()

    def forward(self, expert: str, **kwargs: Any) -> Any:
        return getattr(self, expert)(**kwargs)


class Wan22A14B(Wan):
    family = "wan22-a14b"
    pipeline_class = WanImageToVideoPipeline
    block_containers = tuple(f"{e}.blocks" for e in EXPERTS)
    conditioning_parts = ("vae",)

    @property
    def denoiser(self) -> Experts:
        if getattr(self, "_experts", None) is None:
            pipe = self.pipe
            boundary = pipe.config.boundary_ratio * pipe.scheduler.config.num_train_timesteps
            self._experts = Experts(pipe.transformer, pipe.transformer_2, boundary)
        return self._experts

    def expert(self, t: float) -> str:
        """The expert that denoises timestep t, as the pipeline picks it (t >= boundary: high)."""
        return "high" if t >= self.denoiser.boundary else "low"

    def active_blocks(self, t: float) -> list[str]:
        return [n for n in self.block_names() if n.startswith(f"{self.expert(t)}.")]

    def native_resolution(self) -> tuple[int, int]:
        return 480, 832  # the pipeline's default; the model also runs at 720x1280

    def native_frames(self) -> int:
        return 81

    def denoiser_kwargs(self, noisy: torch.Tensor, cond: Conditioning, t: float) -> dict[str, Any]:
        return {**super().denoiser_kwargs(noisy, cond, t), "expert": self.expert(t)}

    def pipeline_kwargs(self) -> dict[str, Any]:
        return {**super().pipeline_kwargs(), "guidance_scale_2": 1.0}


def tiny(seed: int = 0) -> WanImageToVideoPipeline:
    """Wan 2.2 A14B I2V at toy size: two 2-block experts, 32x32 frames, seeded random weights."""
    torch.manual_seed(seed)
    vae = tiny_wan_vae()
    experts = [WanTransformer3DModel(**TINY_WAN_DIT, in_channels=36) for _ in EXPERTS]
    return WanImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=vae,
        scheduler=UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0
        ),
        transformer=experts[0],
        transformer_2=experts[1],
        boundary_ratio=0.9,
    )
