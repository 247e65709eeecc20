"""HunyuanVideo image-to-video (HunyuanVideo-I2V, `image_condition_type="latent_concat"`).

How the image enters: its VAE latent (times the scaling factor) fills latent frame 0, zeros the
rest, plus a 1-channel first-frame mask, all concatenated with the noisy latent on channels
(`in_channels = 2C + 1`). Latents are `[B, C, F, H, W]`; flow matching. The denoiser has two
block stacks, `transformer_blocks` (dual-stream) then `single_transformer_blocks`; both return
`(hidden, encoder_hidden)` with the video tokens first. Text comes as Llama hidden states with
an attention mask plus a pooled CLIP text vector, all saved embeddings here.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AutoencoderKLHunyuanVideo,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideoImageToVideoPipeline,
    HunyuanVideoTransformer3DModel,
)

from anti_i2v.models.backbones.base import Conditioning, FlowMatchBackbone


def latent_concat(latent: torch.Tensor, frames: int) -> torch.Tensor:
    """The image's latent `[B, C, 1, h, w]` as HunyuanVideo's pipelines concatenate it: on latent
    frame 0 of `frames` (zeros after), then a 1-channel first-frame mask: `[B, C + 1, F, h, w]`."""
    padded = torch.cat([latent, torch.zeros_like(latent).repeat(1, 1, frames - 1, 1, 1)], dim=2)
    mask = torch.zeros_like(padded[:, :1])
    mask[:, :, 0] = 1
    return torch.cat([padded, mask], dim=1)


class Hunyuan(FlowMatchBackbone):
    family = "hunyuan"
    pipeline_class = HunyuanVideoImageToVideoPipeline
    block_containers = ("transformer_blocks", "single_transformer_blocks")
    skip_components = (
        "text_encoder",
        "tokenizer",
        "text_encoder_2",
        "tokenizer_2",
        "image_processor",
    )
    guidance_passes = 1  # HunyuanVideo-I2V's pipeline defaults to no true CFG (true_cfg_scale 1)

    def native_resolution(self) -> tuple[int, int]:
        return 720, 1280

    joint_text_first = False  # its blocks attend over [video, text]

    def native_frames(self) -> int:
        return 129

    def generated_frames(self, frames: int) -> int:
        # latent_concat: the pipeline decodes the image's latent frame too, then drops its 4 frames
        return frames - self.pipe.vae_scale_factor_temporal

    # Copied from anti_i2v.models.backbones.wan.Wan.latent_frames
    def latent_frames(self, frames: int) -> int:
        return (frames - 1) // self.pipe.vae_scale_factor_temporal + 1

    def token_grid(self, cond: Conditioning) -> tuple[int, int, int]:
        _, _, f, h, w = cond.clean.shape
        cfg = self.denoiser.config
        return f // cfg.patch_size_t, h // cfg.patch_size, w // cfg.patch_size

    def condition(self, image: torch.Tensor, frames: int | None = None) -> Conditioning:
        f = self.latent_frames(frames or self.default_frames)
        vae = self.pipe.vae
        x = (self.resize(image).to(self.device) * 2 - 1).to(vae.dtype).unsqueeze(2)
        latent = (vae.encode(x).latent_dist.mode() * self.pipe.vae_scaling_factor).to(self.dtype)
        return Conditioning(
            tensors={"image_cond": latent_concat(latent, f)},
            clean=latent.repeat(1, 1, f, 1, 1),
        )

    def denoiser_kwargs(self, noisy: torch.Tensor, cond: Conditioning, t: float) -> dict[str, Any]:
        b = noisy.shape[0]
        text = self.text_batch(b)
        kwargs = {
            "hidden_states": torch.cat([noisy, cond.tensors["image_cond"]], dim=1),
            "timestep": torch.full((b,), float(t), device=noisy.device, dtype=noisy.dtype),
            "encoder_hidden_states": text["prompt_embeds"],
            "encoder_attention_mask": text["prompt_attention_mask"],
            "pooled_projections": text["pooled_prompt_embeds"],
            "return_dict": False,
        }
        if self.denoiser.config.guidance_embeds:  # distilled guidance, the pipeline's default 1.0
            kwargs["guidance"] = torch.full((b,), 1000.0, device=noisy.device, dtype=noisy.dtype)
        return kwargs

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        x = (video.permute(0, 2, 1, 3, 4) * 2 - 1).to(self.device, self.pipe.vae.dtype)
        return (self.pipe.vae.encode(x).latent_dist.mode() * self.pipe.vae_scaling_factor).to(
            self.dtype
        )

    def decode_video(self, latent: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self._decode(latent / self.pipe.vae_scaling_factor)

    def null_text(self) -> dict[str, torch.Tensor]:
        cfg = self.denoiser.config
        return {
            "prompt_embeds": torch.zeros(1, 16, cfg.text_embed_dim),
            "prompt_attention_mask": torch.ones(1, 16, dtype=torch.long),
            "pooled_prompt_embeds": torch.zeros(1, cfg.pooled_projection_dim),
        }

    def pipeline_kwargs(self) -> dict[str, Any]:
        return {**self.text_batch(1), "guidance_scale": 1.0}


def tiny(seed: int = 0) -> HunyuanVideoImageToVideoPipeline:
    """diffusers' test-size HunyuanVideo-I2V (1 + 1 blocks, 32x32 frames) with seeded random weights."""
    torch.manual_seed(seed)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=9,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        guidance_embeds=False,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4),
        image_condition_type="latent_concat",
    )
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        act_fn="silu",
        norm_num_groups=4,
        scaling_factor=0.476986,
        spatial_compression_ratio=8,
        temporal_compression_ratio=4,
        mid_block_add_attention=True,
    )
    return HunyuanVideoImageToVideoPipeline(
        text_encoder=None,
        tokenizer=None,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=None,
        tokenizer_2=None,
        image_processor=None,
    )
