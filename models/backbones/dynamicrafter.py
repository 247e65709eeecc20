"""DynamiCrafter (512, 1024): a 3D UNet that sees the image twice.

How the image enters: its OpenCLIP ViT-H tokens, resampled to 256 image tokens, follow the text
in the UNet's context (cross-attended through their own keys and values), and its VAE latent,
repeated over the frames, is concatenated to the noisy latent on channels (`in_channels = 8`).
Latents are `[B, C, T, h, w]` with no temporal compression; every block returns `(B*T, C, h, w)`
in (b t) order, as SVD's do. DDPM with zero terminal SNR and v-prediction; training scaled x0 by
`scale_arr[t]` (the dynamic rescale), so noising scales the clean latent by it and x0 estimates
are divided by it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler

from anti_i2v.models.backbones.base import Backbone, Conditioning
from anti_i2v.models.backbones.svd import SVD
from anti_i2v.models.dynamicrafter.image import OpenCLIPVisionTower, Resampler
from anti_i2v.models.dynamicrafter.pipeline import (
    DDIM_CONFIG,
    DynamiCrafterPipeline,
    dynamic_scale,
)
from anti_i2v.models.dynamicrafter.unet import DynamiCrafterUNet


class DynamiCrafter(Backbone):
    family = "dynamicrafter"
    pipeline_class = DynamiCrafterPipeline
    lens_refusal = SVD.lens_refusal  # the same UNet shape of the problem
    block_containers = ("input_blocks", "init_attn", "middle_block", "output_blocks")
    skip_components = ()  # no text encoder in the folder: text features come saved
    conditioning_parts = ("vae", "image_encoder", "image_proj_model")

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.unet

    def native_resolution(self) -> tuple[int, int]:
        return self.pipe.config.height, self.pipe.config.width

    def native_frames(self) -> int:
        return self.pipe.config.num_frames

    def latent_frames(self, frames: int) -> int:
        return frames  # no temporal compression

    def token_grid(self, cond: Conditioning) -> tuple[int, int, int]:
        _, _, f, h, w = cond.clean.shape
        return f, h, w

    def layout(self, hidden: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self.frames_in_batch_layout(hidden, cond.clean.shape[2])

    def condition(self, image: torch.Tensor, frames: int | None = None) -> Conditioning:
        frames = frames or self.default_frames
        x = self.resize(image).to(self.device) * 2 - 1
        latent = self.pipe.image_latent(x).to(self.dtype).unsqueeze(2)
        tensors = {
            "image_latents": latent.expand(-1, -1, frames, -1, -1),
            "image_tokens": self.pipe.image_tokens(x).to(self.dtype),
        }
        return Conditioning(tensors=tensors, clean=latent.repeat(1, 1, frames, 1, 1))

    def add_noise(self, clean: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
        a, s = self.alpha_bar(t), dynamic_scale(t, self.pipe.config.base_scale)
        return math.sqrt(a) * s * clean + math.sqrt(1 - a) * noise

    def denoiser_kwargs(self, noisy: torch.Tensor, cond: Conditioning, t: float) -> dict[str, Any]:
        b = noisy.shape[0]
        text = self.text_batch(b)["prompt_embeds"]
        return {
            "x": torch.cat([noisy, cond.tensors["image_latents"]], dim=1),
            "timesteps": torch.full((b,), min(int(round(t)), 999), device=noisy.device),
            "context": torch.cat([text, cond.tensors["image_tokens"]], dim=1),
            "fs": torch.full((b,), self.pipe.config.frame_stride, device=noisy.device),
        }

    def target(self, clean: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
        a, s = self.alpha_bar(t), dynamic_scale(t, self.pipe.config.base_scale)
        return math.sqrt(a) * noise - math.sqrt(1 - a) * s * clean  # v of the scaled latent

    def predict_clean(self, noisy: torch.Tensor, output: torch.Tensor, t: float) -> torch.Tensor:
        a, s = self.alpha_bar(t), dynamic_scale(t, self.pipe.config.base_scale)
        return (math.sqrt(a) * noisy - math.sqrt(1 - a) * output.to(noisy.dtype)) / s

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        b, f = video.shape[:2]
        x = (video.reshape(b * f, *video.shape[2:]) * 2 - 1).to(self.device)
        latent = self.pipe.image_latent(x)
        return latent.view(b, f, *latent.shape[1:]).transpose(1, 2).to(self.dtype)

    @torch.no_grad()
    def vae_roundtrip(self, image: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae  # an image VAE: one frame, no time axis
        x = (self.resize(image[None].float()).to(self.device) * 2 - 1).to(vae.dtype)
        return self._back_to(vae.decode(vae.encode(x).latent_dist.mode()).sample, image)

    def null_text(self) -> dict[str, torch.Tensor]:
        cfg = self.denoiser.config
        return {"prompt_embeds": torch.zeros(1, cfg.text_length, cfg.context_dim)}

    def pipeline_kwargs(self) -> dict[str, Any]:
        return {"prompt_embeds": self.text_batch(1)["prompt_embeds"], "guidance_scale": 1.0}


def tiny(seed: int = 0) -> DynamiCrafterPipeline:
    """DynamiCrafter's layout at toy size (2 levels, 32x32 frames, 9 frames) with seeded random weights."""
    torch.manual_seed(seed)
    frames, per_frame, width = 9, 2, 32
    unet = DynamiCrafterUNet(
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(0, 1),
        head_dim=16,
        context_dim=width,
        text_length=8,
        image_tokens_per_frame=per_frame,
        norm_groups=8,
        init_attn_heads=2,
    )
    resampler = Resampler(
        dim=width,
        depth=2,
        head_dim=16,
        heads=2,
        num_queries=per_frame * frames,
        embedding_dim=32,
        output_dim=width,
    )
    encoder = OpenCLIPVisionTower(
        image_size=32, patch_size=8, width=32, layers=2, heads=2, output_dim=width
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 8, 8, 8],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        sample_size=32,
    )
    return DynamiCrafterPipeline(
        unet=unet,
        image_proj_model=resampler,
        image_encoder=encoder,
        vae=vae,
        scheduler=DDIMScheduler(**DDIM_CONFIG),
        height=32,
        width=32,
        num_frames=frames,
    )
