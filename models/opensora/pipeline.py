"""Open-Sora 1.2 image-to-video sampling as a diffusers pipeline (`from_pretrained`/`save_pretrained`).

The image is VAE-encoded to one latent frame that overwrites latent frame 0 after every step and
gets timestep-0 modulation (`x_mask` False there); no image encoder. The schedule is rectified
flow: diffusers' `FlowMatchEulerDiscreteScheduler` expresses it exactly, given Open-Sora's
sigmas (1 - i/N, before the shift) and its resolution-dependent shift (`resolution_shift`).
Open-Sora's velocity is x0 - noise; diffusers' Euler step takes noise - x0, so the sign flips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.utils import BaseOutput

from anti_i2v.models.opensora.stdit3 import STDiT3Model
from anti_i2v.models.opensora.vae import OpenSoraVAE

FPS = 24


@dataclass
class VideoOutput(BaseOutput):
    """`frames`: `(B, F, 3, H, W)` in [0, 1]."""

    frames: torch.Tensor


def resolution_shift(height: int, width: int, frames: int) -> float:
    """Open-Sora's timestep shift: sqrt(HW / 512^2) * sqrt(frames // 17 * 5), the frame factor 1
    for images and clips under 17 frames (where the formula would give 0)."""
    chunks = frames // 17 * 5
    return math.sqrt(height * width / 512**2) * math.sqrt(chunks if chunks > 0 else 1)


class OpenSoraPipeline(DiffusionPipeline):
    """STDiT3 + Open-Sora's VAE + rectified-flow Euler; text comes as saved T5 features.

    Args:
        transformer: the STDiT3 denoiser.
        vae: Open-Sora's 2D + temporal VAE.
        scheduler: `FlowMatchEulerDiscreteScheduler` (shift set per call from the resolution).
    """

    model_cpu_offload_seq = "vae->transformer->vae"

    def __init__(
        self, transformer: STDiT3Model, vae: OpenSoraVAE, scheduler: FlowMatchEulerDiscreteScheduler
    ):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler)
        self.vae_scale_factor = 8

    @torch.no_grad()
    def __call__(
        self,
        image: torch.Tensor,
        prompt_embeds: torch.Tensor,
        prompt_mask: torch.Tensor,
        height: int,
        width: int,
        num_frames: int = 51,
        num_inference_steps: int = 30,
        guidance_scale: float = 7.0,
        generator: torch.Generator | None = None,
        output_type: str = "pt",
    ) -> VideoOutput:
        """Generate videos from images.

        Args:
            image: `(B, 3, height, width)` in [0, 1].
            prompt_embeds: `(B or 1, 1, L, 4096)` T5 features; prompt_mask: `(B or 1, L)`.
            guidance_scale: CFG against the null caption (`y_embedding`); 1 skips it.
            generator: the initial noise's generator (CPU).

        Returns:
            `VideoOutput` with `frames` `(B, num_frames, 3, height, width)` in [0, 1].
        """
        if output_type != "pt":
            raise ValueError("OpenSoraPipeline returns tensors only (output_type='pt')")
        device, dtype = self._execution_device, self.transformer.dtype
        b = image.shape[0]
        x = (image.to(device, self.vae.dtype) * 2 - 1).unsqueeze(2)
        cond = self.vae.encode(x).to(dtype)  # (B, 4, 1, h, w)
        frames = self.vae.latent_frames(num_frames)
        shape = (b, cond.shape[1], frames, *cond.shape[3:])
        z = torch.randn(shape, generator=generator, dtype=torch.float32).to(device, dtype)
        x_mask = torch.ones(b, frames, dtype=torch.bool, device=device)
        x_mask[:, 0] = False
        y = prompt_embeds.to(device, dtype).expand(b, *prompt_embeds.shape[1:])
        mask = prompt_mask.to(device).expand(b, -1)
        if guidance_scale != 1:
            null = self.transformer.y_embedder.y_embedding.to(dtype)[None, None]
            y = torch.cat([y, null.expand_as(y)])
            mask = torch.cat([mask, mask])
        sizes = torch.tensor([height], device=device), torch.tensor([width], device=device)
        self.scheduler.set_shift(resolution_shift(height, width, num_frames))
        sigmas = [1 - i / num_inference_steps for i in range(num_inference_steps)]
        self.scheduler.set_timesteps(sigmas=sigmas, device=device)
        for t in self.scheduler.timesteps:
            z[:, :, :1] = cond
            batch = torch.cat([z, z]) if guidance_scale != 1 else z
            reps = batch.shape[0]
            v = self.transformer(
                batch,
                t.expand(reps).float(),
                y,
                mask,
                x_mask=x_mask.repeat(reps // b, 1),
                fps=torch.full((reps,), float(FPS), device=device),
                height=sizes[0].expand(reps),
                width=sizes[1].expand(reps),
            )[:, : cond.shape[1]]
            if guidance_scale != 1:
                v_cond, v_null = v.chunk(2)
                v = v_null + guidance_scale * (v_cond - v_null)
            z = self.scheduler.step(-v, t, z.float(), return_dict=False)[0].to(dtype)
        z[:, :, :1] = cond
        video = self.vae.decode(z.to(self.vae.dtype), num_frames).float()
        video = ((video + 1) / 2).clamp(0, 1).permute(0, 2, 1, 3, 4)  # (B, F, 3, h, w)
        if tuple(video.shape[-2:]) != (height, width):  # 426 px wide decodes to 424
            flat = F.interpolate(
                video.flatten(0, 1), size=(height, width), mode="bicubic", antialias=True
            )
            video = flat.clamp(0, 1).view(b, num_frames, 3, height, width)
        return VideoOutput(frames=video)
