"""LTX-Video image-to-video (LTX-Video 0.9.x): the image replaces the first latent frame.

The VAE latent of the image, normalised per channel, is repeated over frames; a conditioning
mask keeps latent frame 0 clean and gives it timestep 0 (per-token timesteps). Latents are
packed into tokens `[B, F*H*W, C]` before the transformer (patch size 1 in space and time for
the released models); every block returns a tensor of those tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AutoencoderKLLTXVideo,
    FlowMatchEulerDiscreteScheduler,
    LTXImageToVideoPipeline,
    LTXVideoTransformer3DModel,
)

from anti_i2v.models.backbones.base import Conditioning, FlowMatchBackbone

FRAME_RATE = 25  # the pipeline's default; it scales the temporal RoPE


class LTX(FlowMatchBackbone):
    family = "ltx"
    pipeline_class = LTXImageToVideoPipeline
    block_containers = ("transformer_blocks",)

    def native_resolution(self) -> tuple[int, int]:
        return 512, 704

    def native_frames(self) -> int:
        return 161

    def latent_frames(self, frames: int) -> int:
        return (frames - 1) // self.pipe.vae_temporal_compression_ratio + 1

    def token_grid(self, cond: Conditioning) -> tuple[int, int, int]:
        return cond.grid

    def condition(self, image: torch.Tensor, frames: int | None = None) -> Conditioning:
        f = self.latent_frames(frames or self.default_frames)
        vae, pipe = self.pipe.vae, self.pipe
        x = (self.resize(image).to(self.device) * 2 - 1).to(vae.dtype).unsqueeze(2)
        latent = pipe._normalize_latents(
            vae.encode(x).latent_dist.mode(), vae.latents_mean, vae.latents_std
        )
        video = latent.to(self.dtype).repeat(1, 1, f, 1, 1)  # [B, C, F, H, W]
        b, _, _, h, w = video.shape
        mask = video.new_zeros(b, 1, f, h, w)
        mask[:, :, 0] = 1  # frame 0 is the image, kept clean
        p, pt = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
        return Conditioning(
            tensors={"mask": pipe._pack_latents(mask, p, pt).squeeze(-1)},  # [B, N]
            clean=pipe._pack_latents(video, p, pt),
            grid=(f // pt, h // p, w // p),
        )

    def denoiser_kwargs(self, noisy: torch.Tensor, cond: Conditioning, t: float) -> dict[str, Any]:
        b = noisy.shape[0]
        mask = cond.tensors["mask"].unsqueeze(-1)
        f, h, w = self.token_grid(cond)
        text = self.text_batch(b)
        return {
            "hidden_states": mask * cond.clean + (1 - mask) * noisy,  # the image frame stays clean
            "encoder_hidden_states": text["prompt_embeds"],
            "timestep": (float(t) * (1 - cond.tensors["mask"])).to(noisy.dtype),
            "encoder_attention_mask": text["prompt_attention_mask"],
            "num_frames": f,
            "height": h,
            "width": w,
            "rope_interpolation_scale": (
                self.pipe.vae_temporal_compression_ratio / FRAME_RATE,
                self.pipe.vae_spatial_compression_ratio,
                self.pipe.vae_spatial_compression_ratio,
            ),
            "return_dict": False,
        }

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        vae, pipe = self.pipe.vae, self.pipe
        x = (video.permute(0, 2, 1, 3, 4) * 2 - 1).to(self.device, vae.dtype)
        latent = pipe._normalize_latents(
            vae.encode(x).latent_dist.mode(), vae.latents_mean, vae.latents_std
        )
        p, pt = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
        return pipe._pack_latents(latent.to(self.dtype), p, pt)

    def decode_video(self, latent: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        pipe, vae = self.pipe, self.pipe.vae
        p, pt = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
        f, h, w = cond.grid
        z = pipe._unpack_latents(latent, f * pt, h * p, w * p, p, pt)
        z = pipe._denormalize_latents(
            z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor
        )
        # A timestep-conditioned decoder decodes at the pipeline's default decode_timestep, 0
        # (with no noise mixed in at 0).
        temb = z.new_zeros(z.shape[0]) if vae.config.timestep_conditioning else None
        return self._decode(z, temb=temb)

    def null_text(self) -> dict[str, torch.Tensor]:
        cfg = self.denoiser.config
        return {
            "prompt_embeds": torch.zeros(1, 128, cfg.caption_channels),
            "prompt_attention_mask": torch.ones(1, 128, dtype=torch.long),
        }

    def pipeline_kwargs(self) -> dict[str, Any]:
        text = self.text_batch(1)
        return {
            "prompt_embeds": text["prompt_embeds"],
            "prompt_attention_mask": text["prompt_attention_mask"],
            "negative_prompt_embeds": text["prompt_embeds"],
            "negative_prompt_attention_mask": text["prompt_attention_mask"],
            "guidance_scale": 1.0,
        }


def tiny(seed: int = 0) -> LTXImageToVideoPipeline:
    """diffusers' test-size LTX-Video I2V (2 blocks, 32x32 frames) with seeded random weights."""
    torch.manual_seed(seed)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=2,
        caption_channels=32,
    )
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4,
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    vae.use_framewise_encoding = vae.use_framewise_decoding = False
    return LTXImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=vae,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )
