"""Open-Sora 1.2 (STDiT3-XL/2): the image replaces latent frame 0, which runs at timestep 0.

How the image enters: Open-Sora's VAE encodes it to one latent frame, which overwrites frame 0
of the noisy latent; that frame's tokens get the modulation of timestep 0 (`x_mask` False). No
image encoder, no channel concatenation. Latents are `[B, C, F, H, W]`; blocks are 28 spatial
and 28 temporal, run interleaved (spatial i, then temporal i), each returning `(B, F*H*W, C)`
tokens, T-major. Rectified flow: x_t = (1 - s) x0 + s noise with s = t/1000, and the denoiser
predicts x0 - noise (the opposite sign of diffusers' flow families), in its first 4 channels.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from anti_i2v.models.backbones.base import Conditioning, FlowMatchBackbone
from anti_i2v.models.opensora.pipeline import FPS, OpenSoraPipeline
from anti_i2v.models.opensora.stdit3 import STDiT3Model
from anti_i2v.models.opensora.vae import SDXL_VAE, OpenSoraVAE


class OpenSora(FlowMatchBackbone):
    family = "opensora"
    pipeline_class = OpenSoraPipeline
    block_containers = ("spatial_blocks", "temporal_blocks")

    def hidden(self, output: Any) -> torch.Tensor:
        """Block outputs as they are; the denoiser's `(B, 8, F, H, W)` cut to its velocity channels.

        STDiT3 predicts a sigma beside the velocity (`pred_sigma`), which sampling never reads.
        """
        out = super().hidden(output)
        return out[:, : self.denoiser.config.in_channels] if out.dim() == 5 else out

    def native_resolution(self) -> tuple[int, int]:
        return 240, 426  # Open-Sora 1.2's default (tokens 15 x 27 per frame)

    def native_frames(self) -> int:
        return 51

    def latent_frames(self, frames: int) -> int:
        return self.pipe.vae.latent_frames(frames)

    def token_grid(self, cond: Conditioning) -> tuple[int, int, int]:
        _, _, f, h, w = cond.clean.shape
        pt, ph, pw = self.denoiser.config.patch_size
        return f // pt, -(-h // ph), -(-w // pw)  # a partial patch is padded to a whole one

    def condition(self, image: torch.Tensor, frames: int | None = None) -> Conditioning:
        f = self.latent_frames(frames or self.default_frames)
        vae = self.pipe.vae
        x = (self.resize(image).to(self.device) * 2 - 1).to(vae.dtype).unsqueeze(2)
        latent = vae.encode(x).to(self.dtype)  # (B, 4, 1, h, w)
        keep = torch.ones(latent.shape[0], f, dtype=torch.bool, device=latent.device)
        keep[:, 0] = False  # frame 0 is the image: timestep-0 modulation, never noised
        return Conditioning(
            tensors={"image_latent": latent, "x_mask": keep}, clean=latent.repeat(1, 1, f, 1, 1)
        )

    def denoiser_kwargs(self, noisy: torch.Tensor, cond: Conditioning, t: float) -> dict[str, Any]:
        b = noisy.shape[0]
        text = self.text_batch(b)
        height, width = self.resolution
        x = torch.cat([cond.tensors["image_latent"], noisy[:, :, 1:]], dim=2)
        return {
            "x": x,
            "timestep": torch.full((b,), float(t), device=noisy.device),
            "y": text["prompt_embeds"],
            "mask": text["prompt_mask"],
            "x_mask": cond.tensors["x_mask"],
            "fps": torch.full((b,), float(FPS), device=noisy.device),
            "height": float(height),  # numbers: the official (B,) tensors' element 0
            "width": float(width),
        }

    def target(self, clean: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
        return clean - noise  # Open-Sora's velocity points from noise to data

    def predict_clean(self, noisy: torch.Tensor, output: torch.Tensor, t: float) -> torch.Tensor:
        return noisy + (t / 1000.0) * output.to(noisy.dtype)  # the output is x0 - noise

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        x = (video.permute(0, 2, 1, 3, 4) * 2 - 1).to(self.device, self.pipe.vae.dtype)
        return self.pipe.vae.encode(x).to(self.dtype)

    def decode_video(self, latent: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        vae, f = self.pipe.vae, latent.shape[2]
        # The fewest video frames that encode to f latent frames (51 for 15, 17 for 5, 1 for 1)
        frames = next(n for n in range(1, 8 * f + 2) if vae.latent_frames(n) == f)
        video = vae.decode(latent.to(vae.dtype), frames).float()
        return ((video + 1) / 2).clamp(0, 1).permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def vae_roundtrip(self, image: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        x = (self.resize(image[None].float()).to(self.device) * 2 - 1).to(vae.dtype).unsqueeze(2)
        height, width = x.shape[-2:]
        return self._back_to(vae.decode(vae.encode(x), 1)[:, :, 0, :height, :width], image)

    def null_text(self) -> dict[str, torch.Tensor]:
        cfg = self.denoiser.config
        return {
            "prompt_embeds": torch.zeros(1, 1, cfg.model_max_length, cfg.caption_channels),
            "prompt_mask": torch.ones(1, cfg.model_max_length, dtype=torch.long),
        }

    def pipeline_kwargs(self) -> dict[str, Any]:
        text = self.text_batch(1)
        return {
            "prompt_embeds": text["prompt_embeds"],
            "prompt_mask": text["prompt_mask"],
            "guidance_scale": 1.0,
        }


def tiny(seed: int = 0) -> OpenSoraPipeline:
    """Open-Sora 1.2's layout at toy size (2 + 2 blocks, 32x32 frames) with seeded random weights."""
    torch.manual_seed(seed)
    transformer = STDiT3Model(
        hidden_size=32, depth=2, num_heads=2, caption_channels=32, model_max_length=16
    )
    vae = OpenSoraVAE(
        spatial={  # the SDXL layout at toy widths (still 8x spatial)
            **SDXL_VAE,
            "block_out_channels": [8, 8, 8, 8],
            "layers_per_block": 1,
            "norm_num_groups": 2,
            "sample_size": 32,
        },
        temporal_channels=8,
        temporal_res_blocks=1,
        norm_groups=2,
    )
    return OpenSoraPipeline(
        transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler()
    )
