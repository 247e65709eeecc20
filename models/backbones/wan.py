"""Wan 2.1 image-to-video (Wan2.1-I2V-14B-480P/720P, SkyReels-V2-I2V).

How the image enters, twice: (1) CLIP vision hidden states (layer -2) as extra cross-attention
tokens; (2) the VAE latent of a video whose first frame is the image and whose other frames
are black, with a 4-channel first-frame mask, concatenated with the noisy latent on channels
(`in_channels = 16 + 4 + 16 = 36`). Latents are `[B, C, F, H, W]`; flow matching
(noisy = (1 - s) x0 + s noise, s = t/1000); every block returns a tensor of video tokens.
The pipeline runs CLIP through numpy; here it is re-done in torch so gradients reach the image.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    WanImageToVideoPipeline,
    WanTransformer3DModel,
)
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from anti_i2v.models.backbones.base import Conditioning, FlowMatchBackbone

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixels(image: torch.Tensor, size: int, processor: Any = None) -> torch.Tensor:
    """Differentiable CLIP preprocessing: `(B, 3, H, W)` in [0, 1] -> normalised `size x size` pixels."""
    mean = getattr(processor, "image_mean", None) or CLIP_MEAN
    std = getattr(processor, "image_std", None) or CLIP_STD
    x = F.interpolate(image, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return (x - x.new_tensor(mean).view(1, 3, 1, 1)) / x.new_tensor(std).view(1, 3, 1, 1)


def normalize_wan_latents(latents: torch.Tensor, vae: AutoencoderKLWan) -> torch.Tensor:
    """Wan's per-channel latent normalisation, `(z - mean) / std`, on `[B, C, F, H, W]`."""
    mean = latents.new_tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = latents.new_tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    return (latents - mean) / std


def denormalize_wan_latents(latents: torch.Tensor, vae: AutoencoderKLWan) -> torch.Tensor:
    """The inverse of `normalize_wan_latents`: `z * std + mean`, as the pipelines decode."""
    mean = latents.new_tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = latents.new_tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    return latents * std + mean


class Wan(FlowMatchBackbone):
    family = "wan"
    pipeline_class = WanImageToVideoPipeline
    block_containers = ("blocks",)

    def native_resolution(self) -> tuple[int, int]:
        return 480, 832

    def native_frames(self) -> int:
        return 81

    def latent_frames(self, frames: int) -> int:
        return (frames - 1) // self.pipe.vae_scale_factor_temporal + 1

    def token_grid(self, cond: Conditioning) -> tuple[int, int, int]:
        _, _, f, h, w = cond.clean.shape
        pt, ph, pw = self.denoiser.config.patch_size
        return f // pt, h // ph, w // pw

    def condition(self, image: torch.Tensor, frames: int | None = None) -> Conditioning:
        frames = frames or self.default_frames
        image = self.resize(image).to(self.device)
        vae = self.pipe.vae
        x = (image * 2 - 1).to(vae.dtype).unsqueeze(2)  # [B, 3, 1, H, W] in [-1, 1]
        video = torch.cat([x, x.new_zeros(x.shape[0], 3, frames - 1, *x.shape[-2:])], dim=2)
        latent = normalize_wan_latents(vae.encode(video).latent_dist.mode(), vae).to(self.dtype)
        b, _, f, h, w = latent.shape
        # First-frame mask: 1 on the image's latent frame, laid out as the pipeline does (4 per frame).
        mask = latent.new_zeros(b, 4, f, h, w)
        mask[:, :, 0] = 1
        tensors = {"condition": torch.cat([mask, latent], dim=1)}
        encoder = self.pipe.image_encoder
        if encoder is not None:
            pixels = clip_pixels(image, encoder.config.image_size, self.pipe.image_processor)
            hidden = encoder(
                pixel_values=pixels.to(encoder.dtype), output_hidden_states=True
            ).hidden_states[-2]
            tensors["image_embeds"] = hidden.to(self.dtype)
        # A causal VAE: latent frame 0 encodes the image alone, so the still video repeats it.
        return Conditioning(tensors=tensors, clean=latent[:, :, :1].repeat(1, 1, f, 1, 1))

    def denoiser_kwargs(self, noisy: torch.Tensor, cond: Conditioning, t: float) -> dict[str, Any]:
        b = noisy.shape[0]
        kwargs = {
            "hidden_states": torch.cat([noisy, cond.tensors["condition"]], dim=1),
            "timestep": torch.full((b,), float(t), device=noisy.device, dtype=noisy.dtype),
            "encoder_hidden_states": self.text_batch(b)["prompt_embeds"],
            "return_dict": False,
        }
        if "image_embeds" in cond.tensors:
            kwargs["encoder_hidden_states_image"] = cond.tensors["image_embeds"]
        return kwargs

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        x = (video.permute(0, 2, 1, 3, 4) * 2 - 1).to(self.device, self.pipe.vae.dtype)
        return normalize_wan_latents(self.pipe.vae.encode(x).latent_dist.mode(), self.pipe.vae).to(
            self.dtype
        )

    def decode_video(self, latent: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self._decode(denormalize_wan_latents(latent.float(), self.pipe.vae))

    def null_text(self) -> dict[str, torch.Tensor]:
        cfg = self.denoiser.config
        tokens = 512 if cfg.added_kv_proj_dim is not None else 16  # real Wan pads umT5 to 512
        return {"prompt_embeds": torch.zeros(1, tokens, cfg.text_dim)}

    def pipeline_kwargs(self) -> dict[str, Any]:
        text = self.text_batch(1)["prompt_embeds"]
        return {"prompt_embeds": text, "negative_prompt_embeds": text, "guidance_scale": 1.0}


# diffusers' test-size Wan transformer (2 blocks, 2 heads of 12): the toy denoiser of every
# Wan-derived tiny model, each adding its own input channels and extras.
TINY_WAN_DIT = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    out_channels=16,
    text_dim=32,
    freq_dim=256,
    ffn_dim=32,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=32,
)


def tiny_wan_vae() -> AutoencoderKLWan:
    """diffusers' test-size Wan 2.1 VAE (3 base channels, 16 latent ones, 8x space, 4x time),
    the toy VAE of every Wan-derived tiny model (seed the generator first)."""
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )


def tiny(seed: int = 0) -> WanImageToVideoPipeline:
    """diffusers' test-size Wan 2.1 I2V (2 blocks, 16x16 frames) with seeded random weights."""
    torch.manual_seed(seed)
    vae = tiny_wan_vae()
    transformer = WanTransformer3DModel(**TINY_WAN_DIT, in_channels=36, image_dim=4)
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=4,
            projection_dim=4,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            intermediate_size=16,
            patch_size=1,
        )
    )
    processor = CLIPImageProcessor(crop_size=32, size=32)
    return WanImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        image_processor=processor,
        image_encoder=encoder,
        transformer=transformer,
    )
