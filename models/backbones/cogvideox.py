"""CogVideoX image-to-video (CogVideoX-5B-I2V, CogVideoX1.5-I2V, and the shipped mini model).

How the image enters: the VAE latent of the image (times the scaling factor) fills latent
frame 0, zeros fill the rest, and this is concatenated with the noisy latent on channels
(`in_channels = 2C`). Latents are `[B, F, C, H, W]`; the scheduler is DDPM-style with
v-prediction; every transformer block returns `(hidden, encoder_hidden)`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from diffusers import (
    AutoencoderKLCogVideoX,
    CogVideoXDDIMScheduler,
    CogVideoXImageToVideoPipeline,
    CogVideoXTransformer3DModel,
)

from anti_i2v.models.backbones.base import Backbone, Conditioning


class CogVideoX(Backbone):
    family = "cogvideox"
    pipeline_class = CogVideoXImageToVideoPipeline
    block_containers = ("transformer_blocks",)

    def native_resolution(self) -> tuple[int, int]:
        cfg, s = self.denoiser.config, self.pipe.vae_scale_factor_spatial
        return cfg.sample_height * s, cfg.sample_width * s

    def native_frames(self) -> int:
        return self.denoiser.config.sample_frames

    def latent_frames(self, frames: int) -> int:
        return (frames - 1) // self.pipe.vae_scale_factor_temporal + 1

    def token_grid(self, cond: Conditioning) -> tuple[int, int, int]:
        _, f, _, h, w = cond.clean.shape
        p = self.denoiser.config.patch_size
        return f, h // p, w // p

    def condition(self, image: torch.Tensor, frames: int | None = None) -> Conditioning:
        frames = self.latent_frames(frames or self.default_frames)
        x = self.resize(image).to(self.device, self.pipe.vae.dtype) * 2 - 1  # the VAE takes [-1, 1]
        # The pipeline samples the posterior; its mean keeps probing deterministic.
        mode = self.pipe.vae.encode(x.unsqueeze(2)).latent_dist.mode().permute(0, 2, 1, 3, 4)
        sf = self.pipe.vae_scaling_factor_image
        latent = (mode * sf).to(self.dtype)
        # CogVideoX1.5 was trained with the image's latent divided by the factor, not multiplied
        # (the pipeline's "invert_scale_latents"); the video's latent is multiplied either way.
        image = (mode / sf).to(self.dtype) if self.pipe.vae.config.invert_scale_latents else latent
        image_latents = torch.cat(
            [image, torch.zeros_like(image).repeat(1, frames - 1, 1, 1, 1)], dim=1
        )
        tensors = {"image_latents": image_latents}
        if self.denoiser.config.use_rotary_positional_embeddings:
            h, w = self.resolution
            cos, sin = self.pipe._prepare_rotary_positional_embeddings(h, w, frames, self.device)
            tensors |= {"rotary_cos": cos, "rotary_sin": sin}
        return Conditioning(tensors=tensors, clean=latent.repeat(1, frames, 1, 1, 1))

    def add_noise(self, clean: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
        a = self.pipe.scheduler.alphas_cumprod[int(round(t))].to(clean.device, torch.float32)
        return (a.sqrt() * clean.float() + (1 - a).sqrt() * noise.float()).to(clean.dtype)

    def denoiser_kwargs(self, noisy: torch.Tensor, cond: Conditioning, t: float) -> dict[str, Any]:
        b = noisy.shape[0]
        kwargs: dict[str, Any] = {
            "hidden_states": torch.cat([noisy, cond.tensors["image_latents"]], dim=2),
            "encoder_hidden_states": self.text_batch(b)["prompt_embeds"],
            "timestep": torch.full((b,), int(round(t)), device=noisy.device, dtype=torch.long),
            "return_dict": False,
        }
        if "rotary_cos" in cond.tensors:
            kwargs["image_rotary_emb"] = (cond.tensors["rotary_cos"], cond.tensors["rotary_sin"])
        if self.denoiser.config.ofs_embed_dim is not None:  # CogVideoX1.5
            kwargs["ofs"] = noisy.new_full((1,), 2.0)
        return kwargs

    def target(self, clean: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
        a = self.alpha_bar(t)  # v = sqrt(a) noise - sqrt(1 - a) x0 (Salimans and Ho, 2022)
        return math.sqrt(a) * noise - math.sqrt(1 - a) * clean

    def predict_clean(self, noisy: torch.Tensor, output: torch.Tensor, t: float) -> torch.Tensor:
        a = self.pipe.scheduler.alphas_cumprod[int(round(t))].to(noisy.device, torch.float32)
        return a.sqrt() * noisy - (1 - a).sqrt() * output  # v-prediction

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        x = (video.permute(0, 2, 1, 3, 4) * 2 - 1).to(self.device, self.pipe.vae.dtype)
        latent = self.pipe.vae.encode(x).latent_dist.mode().permute(0, 2, 1, 3, 4)
        return (latent * self.pipe.vae_scaling_factor_image).to(self.dtype)

    def decode_video(self, latent: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self._decode(latent.permute(0, 2, 1, 3, 4) / self.pipe.vae_scaling_factor_image)

    def null_text(self) -> dict[str, torch.Tensor]:
        cfg = self.denoiser.config
        return {"prompt_embeds": torch.zeros(1, cfg.max_text_seq_length, cfg.text_embed_dim)}

    def pipeline_kwargs(self) -> dict[str, Any]:
        text = self.text_batch(1)["prompt_embeds"]
        return {"prompt_embeds": text, "negative_prompt_embeds": text, "guidance_scale": 1.0}


def tiny(seed: int = 0) -> CogVideoXImageToVideoPipeline:
    """diffusers' test-size CogVideoX-I2V (2 blocks, 32x32 frames) with seeded random weights."""
    torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=8,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=32,
        num_layers=2,
        sample_width=4,
        sample_height=4,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=16,
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=True,
    )
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    return CogVideoXImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=vae,
        transformer=transformer,
        scheduler=CogVideoXDDIMScheduler(),
    )
