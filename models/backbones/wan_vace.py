"""Wan VACE (Wan2.1-VACE-1.3B/14B), used as image-to-video: the photo is the kept first frame.

VACE edits videos under a mask: `video` holds the frames to keep and `mask` is 1 where the model
generates. Image-to-video is the video [photo, grey, ..., grey] with the mask 0 on frame 0 and 1
elsewhere. The conditioning is not concatenated with the noisy latent: it is a 96-channel
`control_hidden_states` that 8 `vace_blocks` (one before each of `vace_layers`) turn into hints
added to the main stream:

- 16 channels: the VAE latent of the kept part, video x (1 - mask) ("inactive");
- 16 channels: the VAE latent of the generated part, video x mask ("reactive": zeros here);
- 64 channels: the pixel mask, its 8x8 spatial cells unshuffled to channels and resampled to
  the latent frames (nearest), as `WanVACEPipeline.prepare_masks` lays it out.

The noisy latent itself is the plain 16-channel Wan latent (no image channels); flow matching.
The probe reads the `vace_blocks` too: each returns (hint, running control state), and the hint,
what enters the video stream, is the hidden state kept. The pipeline runs them before `blocks`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import (
    UniPCMultistepScheduler,
    WanVACEPipeline,
    WanVACETransformer3DModel,
)

from anti_i2v.models.backbones.base import Conditioning
from anti_i2v.models.backbones.wan import TINY_WAN_DIT, Wan, normalize_wan_latents, tiny_wan_vae


class WanVACE(Wan):
    family = "wan-vace"
    pipeline_class = WanVACEPipeline
    block_containers = ("vace_blocks", "blocks")
    conditioning_parts = ("vae",)

    def native_resolution(self) -> tuple[int, int]:
        return 480, 832

    def native_frames(self) -> int:
        return 81

    def mask_latent(self, keep: torch.Tensor, latent_frames: int) -> torch.Tensor:
        """The pixel mask `(B, F, H, W)` (1: generate) as VACE's 64 mask channels
        `(B, s*s, latent frames, H/s, W/s)`, s the VAE's spatial factor."""
        s = self.pipe.vae_scale_factor_spatial
        b, f, h, w = keep.shape
        cells = keep.reshape(b, f, h // s, s, w // s, s).permute(0, 3, 5, 1, 2, 4)
        cells = cells.reshape(b, s * s, f, h // s, w // s)
        return F.interpolate(cells, size=(latent_frames, h // s, w // s), mode="nearest-exact")

    def condition(self, image: torch.Tensor, frames: int | None = None) -> Conditioning:
        frames = frames or self.default_frames
        vae = self.pipe.vae
        x = (self.resize(image).to(self.device) * 2 - 1).to(vae.dtype).unsqueeze(2)
        b, _, _, h, w = x.shape
        video = torch.cat([x, x.new_zeros(b, 3, frames - 1, h, w)], dim=2)  # grey is 0 in [-1, 1]
        keep = x.new_ones(b, 1, frames, h, w)
        keep[:, :, 0] = 0  # 1: generate, 0: keep (the photo's frame)
        inactive, reactive = (
            normalize_wan_latents(vae.encode(v).latent_dist.mode(), vae)
            for v in (video * (1 - keep), video * keep)
        )
        mask = self.mask_latent(keep[:, 0], inactive.shape[2]).to(inactive)
        control = torch.cat([inactive, reactive, mask], dim=1).to(self.dtype)
        f = inactive.shape[2]
        # A causal VAE: latent frame 0 encodes the photo alone, so the still video repeats it.
        return Conditioning(
            tensors={"control": control},
            clean=inactive[:, :, :1].repeat(1, 1, f, 1, 1).to(self.dtype),
        )

    # --- the lens: the main blocks' stream, without the hints of later blocks ---------------
    def lens_blocks(self, t: float) -> list[str]:
        """The main blocks: a hint is not the video stream, so `vace_blocks` have no lens."""
        return [n for n in super().lens_blocks(t) if n.startswith("blocks.")]

    def lens_pass_on(self, left: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        # The stream as it enters this block: the lens's block's output plus its own hint
        return args[0] if args else kwargs["hidden_states"]

    @contextlib.contextmanager
    def lens_context(self, block: str) -> Iterator[None]:
        """Hints of the layers after `block` are zero: the stream reaches the head as it left
        `block` (with `block`'s own hint, added after it)."""
        after = int(block.rsplit(".", 1)[1])
        layers = self.denoiser.config.vace_layers
        handles = [
            self.denoiser.vace_blocks[k].register_forward_hook(
                lambda _m, _a, out: (torch.zeros_like(out[0]), *out[1:])
            )
            for k, layer in enumerate(layers)
            if layer > after
        ]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def denoiser_kwargs(self, noisy: torch.Tensor, cond: Conditioning, t: float) -> dict[str, Any]:
        b = noisy.shape[0]
        hints = len(self.denoiser.config.vace_layers)
        return {
            "hidden_states": noisy,
            "timestep": torch.full((b,), float(t), device=noisy.device, dtype=noisy.dtype),
            "encoder_hidden_states": self.text_batch(b)["prompt_embeds"],
            "control_hidden_states": cond.tensors["control"],
            "control_hidden_states_scale": noisy.new_ones(hints),  # the pipeline's default, 1
            "return_dict": False,
        }

    @torch.no_grad()
    def generate(
        self, image: torch.Tensor, frames: int | None = None, steps: int = 20, seed: int = 0
    ) -> torch.Tensor:
        """The pipeline's own sampling with the photo as the kept first frame of a grey video."""
        frames = frames or self.default_frames
        height, width = self.resolution
        photo = self.resize(image[None].float())[0].cpu()
        video = torch.full((1, frames, 3, height, width), 0.5)  # (B, F, C, H, W) in [0, 1]
        video[0, 0] = photo
        mask = torch.ones_like(video)
        mask[0, 0] = 0
        out = self.pipe(
            video=video,
            mask=mask,
            height=height,
            width=width,
            num_frames=frames,
            num_inference_steps=steps,
            generator=torch.Generator(device="cpu").manual_seed(seed),
            output_type="pt",
            **self.pipeline_kwargs(),
        ).frames
        return out[0].float().clamp(0, 1).cpu()


def tiny(seed: int = 0) -> WanVACEPipeline:
    """Wan VACE at toy size (2 blocks, a hint before each, 32x32 frames), seeded random weights."""
    torch.manual_seed(seed)
    vae = tiny_wan_vae()
    transformer = WanVACETransformer3DModel(
        **TINY_WAN_DIT, in_channels=16, vace_layers=[0, 1], vace_in_channels=96
    )
    return WanVACEPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=vae,
        scheduler=UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
        ),
        transformer=transformer,
    )
