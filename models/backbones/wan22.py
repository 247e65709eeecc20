"""Wan 2.2 text-image-to-video (Wan2.2-TI2V-5B): the image replaces the first latent frame.

No CLIP branch and no channel concatenation: the VAE latent of the image overwrites latent
frame 0 of the noisy latent, and the timestep is given per token, 0 on that frame
(`expand_timesteps=True` in the pipeline). Latents are `[B, C, F, H, W]` (48 channels, 16x
spatial compression); flow matching; every block returns a tensor of video tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    WanImageToVideoPipeline,
    WanTransformer3DModel,
)

from anti_i2v.models.backbones.base import Conditioning
from anti_i2v.models.backbones.wan import Wan, normalize_wan_latents


class Wan22(Wan):
    family = "wan22"

    def native_resolution(self) -> tuple[int, int]:
        return 704, 1280

    def native_frames(self) -> int:
        return 121

    def condition(self, image: torch.Tensor, frames: int | None = None) -> Conditioning:
        f = self.latent_frames(frames or self.default_frames)
        vae = self.pipe.vae
        x = (self.resize(image).to(self.device) * 2 - 1).to(vae.dtype).unsqueeze(2)
        latent = normalize_wan_latents(vae.encode(x).latent_dist.mode(), vae).to(self.dtype)
        b, _, _, h, w = latent.shape
        keep = latent.new_ones(b, 1, f, h, w)  # 0 where the image's latent replaces the noise
        keep[:, :, 0] = 0
        return Conditioning(
            tensors={"image_latent": latent, "noise_mask": keep}, clean=latent.repeat(1, 1, f, 1, 1)
        )

    def denoiser_kwargs(self, noisy: torch.Tensor, cond: Conditioning, t: float) -> dict[str, Any]:
        b = noisy.shape[0]
        keep = cond.tensors["noise_mask"]
        _, ph, pw = self.denoiser.config.patch_size
        timestep = (keep[:, 0, :, ::ph, ::pw] * float(t)).flatten(1)  # per token, 0 on frame one
        return {
            "hidden_states": (1 - keep) * cond.tensors["image_latent"] + keep * noisy,
            "timestep": timestep.to(noisy.dtype),
            "encoder_hidden_states": self.text_batch(b)["prompt_embeds"],
            "return_dict": False,
        }


def tiny(seed: int = 0) -> WanImageToVideoPipeline:
    """diffusers' test-size Wan 2.2 TI2V-5B layout (2 blocks, 64x64 frames) with seeded random weights."""
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=48,
        in_channels=12,
        out_channels=12,
        is_residual=True,
        patch_size=2,
        latents_mean=[0.0] * 48,
        latents_std=[1.0] * 48,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
        temperal_downsample=[False, True, True],
    )
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=48,
        out_channels=48,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    return WanImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        image_processor=None,
        image_encoder=None,
        transformer=transformer,
        expand_timesteps=True,
    )
