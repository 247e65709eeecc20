"""Stable Video Diffusion (SVD, SVD-XT): a spatio-temporal UNet, the closest diffusers relative of
DynamiCrafter.

How the image enters: its CLIP image embedding is the single cross-attention token, and the VAE
latent of the slightly noised image (unscaled, as the pipeline does) is repeated over frames and
concatenated on channels (`in_channels = 8`). Latents are `[B, F, C, H, W]`; the UNet sees
`[B*F, C, H, W]`, so block outputs are laid out per frame. EDM (Karras) noise:
x = x0 + sigma * noise with sigma taken from the training schedule at timestep t.
Blocks are `down_blocks.*`, `mid_block`, `up_blocks.*`; `mid_block` runs between down and up
blocks although it is registered after them, so capture records the execution order at run time.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from diffusers import (
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    StableVideoDiffusionPipeline,
    UNetSpatioTemporalConditionModel,
)
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from anti_i2v.models.backbones.base import Backbone, Conditioning
from anti_i2v.models.backbones.wan import clip_pixels

FPS, MOTION_BUCKET, NOISE_AUG = 7, 127, 0.02  # the pipeline's defaults


class SVD(Backbone):
    family = "svd"
    pipeline_class = StableVideoDiffusionPipeline
    lens_refusal = (
        "a UNet's block outputs have their own resolution and width (and skip connections feed "
        "the up blocks), so none fits the output head (conv_norm_out, conv_out) as a DiT's does"
    )
    block_containers = ("down_blocks", "up_blocks", "mid_block")
    skip_components = ()  # no text encoder: the image is the only condition

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.unet

    def native_resolution(self) -> tuple[int, int]:
        side = self.denoiser.config.sample_size * self.pipe.vae_scale_factor
        # SVD and SVD-XT (sample_size 96) were trained at 576x1024, which their config does not
        # record; any other UNet (mini-svd, fine-tunes at their own size) is taken as square.
        return (576, 1024) if side == 768 else (side, side)

    def native_frames(self) -> int:
        return self.denoiser.config.num_frames

    def latent_frames(self, frames: int) -> int:
        return frames  # no temporal compression

    def token_grid(self, cond: Conditioning) -> tuple[int, int, int]:
        _, f, _, h, w = cond.clean.shape
        return f, h, w

    def layout(self, hidden: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self.frames_in_batch_layout(hidden, cond.clean.shape[1])

    def condition(self, image: torch.Tensor, frames: int | None = None) -> Conditioning:
        frames = frames or self.default_frames
        image = self.resize(image).to(self.device)
        encoder, vae = self.pipe.image_encoder, self.pipe.vae
        pixels = clip_pixels(image, encoder.config.image_size, self.pipe.feature_extractor)
        embeds = encoder(pixel_values=pixels.to(encoder.dtype)).image_embeds.unsqueeze(1)
        x = image * 2 - 1
        # Noise augmentation of the conditioning image, with a fixed generator (deterministic).
        aug = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(x)
        image_latent = vae.encode((x + NOISE_AUG * aug).to(vae.dtype)).latent_dist.mode()
        clean = vae.encode(x.to(vae.dtype)).latent_dist.mode() * vae.config.scaling_factor
        b = x.shape[0]
        time_ids = torch.tensor([[FPS - 1, MOTION_BUCKET, NOISE_AUG]], device=self.device).repeat(
            b, 1
        )
        tensors = {
            "image_embeds": embeds.to(self.dtype),
            "image_latents": image_latent.to(self.dtype).unsqueeze(1).repeat(1, frames, 1, 1, 1),
            "added_time_ids": time_ids.to(self.dtype),
        }
        return Conditioning(
            tensors=tensors, clean=clean.to(self.dtype).unsqueeze(1).repeat(1, frames, 1, 1, 1)
        )

    def sigma(self, t: float) -> float:
        """Karras/EDM sigma of training timestep t: sqrt((1 - abar) / abar)."""
        abar = self.alpha_bar(t)
        return math.sqrt((1 - abar) / abar)

    def add_noise(self, clean: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
        return clean + self.sigma(t) * noise

    def denoiser_kwargs(self, noisy: torch.Tensor, cond: Conditioning, t: float) -> dict[str, Any]:
        sigma = self.sigma(t)
        b = noisy.shape[0]
        return {
            "sample": torch.cat(
                [noisy / math.sqrt(sigma**2 + 1), cond.tensors["image_latents"]], dim=2
            ),
            "timestep": torch.full(
                (b,), 0.25 * math.log(sigma), device=noisy.device, dtype=noisy.dtype
            ),
            "encoder_hidden_states": cond.tensors["image_embeds"],
            "added_time_ids": cond.tensors["added_time_ids"],
            "return_dict": False,
        }

    def target(self, clean: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
        # v of the variance-preserving twin of x0 + sigma noise: alpha = 1/sqrt(sigma^2 + 1)
        sigma = self.sigma(t)
        return (noise - sigma * clean) / math.sqrt(sigma**2 + 1)

    def predict_clean(self, noisy: torch.Tensor, output: torch.Tensor, t: float) -> torch.Tensor:
        sigma = self.sigma(t)  # EulerDiscrete's v-prediction pre-conditioning
        return output * (-sigma / math.sqrt(sigma**2 + 1)) + noisy / (sigma**2 + 1)

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        b, f = video.shape[:2]
        x = (video.reshape(b * f, *video.shape[2:]) * 2 - 1).to(self.device, self.pipe.vae.dtype)
        latent = self.pipe.vae.encode(x).latent_dist.mode() * self.pipe.vae.config.scaling_factor
        return latent.reshape(b, f, *latent.shape[1:]).to(self.dtype)

    @torch.no_grad()
    def vae_roundtrip(self, image: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae  # per-frame encoder; a temporal decoder is told it decodes one frame
        x = (self.resize(image[None].float()).to(self.device) * 2 - 1).to(vae.dtype)
        frames = (
            {"num_frames": 1} if "num_frames" in inspect.signature(vae.decode).parameters else {}
        )
        return self._back_to(vae.decode(vae.encode(x).latent_dist.mode(), **frames).sample, image)

    def null_text(self) -> dict[str, torch.Tensor]:
        return {}

    def pipeline_kwargs(self) -> dict[str, Any]:
        return {"min_guidance_scale": 1.0, "max_guidance_scale": 1.0, "decode_chunk_size": 8}


def tiny(seed: int = 0) -> StableVideoDiffusionPipeline:
    """diffusers' test-size SVD (2 down / mid / 2 up blocks, 32x32 frames) with seeded random weights."""
    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=32,
        num_attention_heads=8,
        projection_class_embeddings_input_dim=96,
        addition_time_embed_dim=32,
    )
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        latent_channels=4,
    )
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=32,
            num_hidden_layers=5,
            num_attention_heads=4,
            image_size=32,
            intermediate_size=37,
            patch_size=1,
        )
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        interpolation_type="linear",
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )
    return StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=encoder,
        unet=unet,
        scheduler=scheduler,
        feature_extractor=CLIPImageProcessor(crop_size=32, size=32),
    )
