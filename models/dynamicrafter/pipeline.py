"""DynamiCrafter image-to-video sampling as a diffusers pipeline (`from_pretrained`/`save_pretrained`).

How the image enters, twice: its OpenCLIP ViT-H tokens, resampled to 256 image tokens, follow the
77 text tokens in the UNet's context; and its VAE latent (x 0.18215), repeated over the frames,
is concatenated to the noisy latent on channels. The UNet predicts v.

The schedule: diffusers' `DDIMScheduler` expresses the training betas (scaled-linear 0.00085 to
0.012, rescaled to zero terminal SNR), v-prediction and the trailing timesteps (19, 39, ..., 999
for 50 steps), so its `alphas_cumprod` and `timesteps` are used as they are. It does not express
DynamiCrafter's dynamic rescale of x0 (`scale_arr`), so the DDIM update (eta 1) is written out
here with it (`dynamic_scale`), as is CFG's guidance rescale through diffusers' `rescale_noise_cfg`.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

from anti_i2v.models.dynamicrafter.image import OpenCLIPVisionTower, Resampler
from anti_i2v.models.dynamicrafter.unet import DynamiCrafterUNet
from anti_i2v.models.opensora.pipeline import VideoOutput

# DynamiCrafter's training schedule and DDIM spacing, in diffusers' DDIMScheduler's terms.
DDIM_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "rescale_betas_zero_snr": True,
    "prediction_type": "v_prediction",
    "timestep_spacing": "trailing",
    "clip_sample": False,
    "set_alpha_to_one": True,
}
RESCALE_STEPS = 400  # scale_arr falls linearly from 1 to base_scale over the first 400 timesteps


def dynamic_scale(t: float, base_scale: float) -> float:
    """DynamiCrafter's `scale_arr[t]`: the factor training multiplied x0 by at timestep t."""
    t = min(max(int(round(t)), 0), 999)
    if t >= RESCALE_STEPS:
        return base_scale
    return 1 + (base_scale - 1) * t / (RESCALE_STEPS - 1)


class DynamiCrafterPipeline(DiffusionPipeline):
    """The UNet, Resampler, ViT-H tower and SD VAE; text comes as saved OpenCLIP-H features.

    Args:
        unet, image_proj_model, image_encoder, vae, scheduler: the components.
        frame_stride: the UNet's `fs` (24 for the 512 model, 10 for 1024).
        base_scale: the dynamic rescale's floor (0.7 for 512, 0.3 for 1024).
        height, width: the size the model was trained at (320 x 512, or 576 x 1024).
        num_frames: frames it generates (16).
    """

    model_cpu_offload_seq = "image_encoder->image_proj_model->vae->unet->vae"

    def __init__(
        self,
        unet: DynamiCrafterUNet,
        image_proj_model: Resampler,
        image_encoder: OpenCLIPVisionTower,
        vae: AutoencoderKL,
        scheduler: DDIMScheduler,
        frame_stride: int = 24,
        base_scale: float = 0.7,
        height: int = 320,
        width: int = 512,
        num_frames: int = 16,
    ):
        super().__init__()
        self.register_modules(
            unet=unet,
            image_proj_model=image_proj_model,
            image_encoder=image_encoder,
            vae=vae,
            scheduler=scheduler,
        )
        self.register_to_config(
            frame_stride=frame_stride,
            base_scale=base_scale,
            height=height,
            width=width,
            num_frames=num_frames,
        )
        self.vae_scale_factor = 8

    def image_tokens(self, image: torch.Tensor) -> torch.Tensor:
        """`(B, 3, H, W)` in [-1, 1] -> the Resampler's image tokens `(B, num_queries, 1024)`."""
        tokens = self.image_encoder(image.to(self.image_encoder.dtype))
        return self.image_proj_model(tokens.to(self.image_proj_model.dtype))

    def image_latent(self, image: torch.Tensor) -> torch.Tensor:
        """`(B, 3, H, W)` in [-1, 1] -> the scaled VAE latent `(B, 4, H/8, W/8)` (posterior mean)."""
        vae = self.vae
        return vae.encode(image.to(vae.dtype)).latent_dist.mode() * vae.config.scaling_factor

    @torch.no_grad()
    def __call__(
        self,
        image: torch.Tensor,
        prompt_embeds: torch.Tensor,
        height: int,
        width: int,
        num_frames: int = 16,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        guidance_rescale: float = 0.7,
        negative_prompt_embeds: torch.Tensor | None = None,
        eta: float = 1.0,
        generator: torch.Generator | None = None,
        output_type: str = "pt",
    ) -> VideoOutput:
        """Generate videos from images.

        Args:
            image: `(B, 3, height, width)` in [0, 1].
            prompt_embeds: `(B or 1, 77, 1024)` text features; negative_prompt_embeds: the
                empty prompt's, for CFG (the unconditional image is a zeros image).
            guidance_scale: CFG (1 skips it); guidance_rescale: its rescale (0.7).
            eta: DDIM's noise (1, as DynamiCrafter samples).
            generator: the noise's generator (CPU).

        Returns:
            `VideoOutput` with `frames` `(B, num_frames, 3, height, width)` in [0, 1].
        """
        if output_type != "pt":
            raise ValueError("DynamiCrafterPipeline returns tensors only (output_type='pt')")
        device, dtype = self._execution_device, self.unet.dtype
        b = image.shape[0]
        x = image.to(device) * 2 - 1
        latent = self.image_latent(x).to(dtype)
        concat = latent.unsqueeze(2).expand(-1, -1, num_frames, -1, -1)
        text = prompt_embeds.to(device, dtype).expand(b, -1, -1)
        context = torch.cat([text, self.image_tokens(x).to(dtype)], dim=1)
        if guidance_scale != 1:
            if negative_prompt_embeds is None:
                raise ValueError(
                    "guidance needs negative_prompt_embeds (the empty prompt's features)"
                )
            null = torch.cat(
                [
                    negative_prompt_embeds.to(device, dtype).expand(b, -1, -1),
                    self.image_tokens(torch.zeros_like(x)).to(dtype),
                ],
                dim=1,
            )
            context, concat = torch.cat([context, null]), torch.cat([concat, concat])
        fs = torch.full((context.shape[0],), self.config.frame_stride, device=device)
        shape = (b, latent.shape[1], num_frames, *latent.shape[2:])
        z = torch.randn(shape, generator=generator, dtype=torch.float32).to(device)
        sched = self.scheduler
        sched.set_timesteps(num_inference_steps, device=device)
        abar = sched.alphas_cumprod.to(device, torch.float32)
        steps = sched.timesteps.tolist()
        for i, t in enumerate(steps):
            batch = torch.cat([z, z]) if guidance_scale != 1 else z
            v = self.unet(
                torch.cat([batch.to(dtype), concat], dim=1),
                torch.full((batch.shape[0],), t, device=device, dtype=torch.long),
                context,
                fs,
            ).float()
            if guidance_scale != 1:
                v_cond, v_null = v.chunk(2)
                v = v_null + guidance_scale * (v_cond - v_null)
                if guidance_rescale > 0:
                    v = rescale_noise_cfg(v, v_cond, guidance_rescale=guidance_rescale)
            prev = steps[i + 1] if i + 1 < len(steps) else -1
            a_t = abar[t]
            a_prev = abar[prev] if prev >= 0 else abar.new_tensor(1.0)
            x0 = a_t.sqrt() * z - (1 - a_t).sqrt() * v
            eps = a_t.sqrt() * v + (1 - a_t).sqrt() * z
            base = self.config.base_scale
            if prev >= 0:  # x0 is predicted at scale_arr[t]; move it to scale_arr[prev]
                x0 = x0 * (dynamic_scale(prev, base) / dynamic_scale(t, base))
            else:  # the last step returns the true x0
                x0 = x0 / dynamic_scale(t, base)
            sigma = (
                eta
                * ((1 - a_prev) / (1 - a_t).clamp(min=1e-12) * (1 - a_t / a_prev))
                .clamp(min=0)
                .sqrt()
            )
            noise = torch.randn(z.shape, generator=generator, dtype=torch.float32).to(device)
            z = (
                a_prev.sqrt() * x0
                + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
                + sigma * noise
            )
        frames = z.transpose(1, 2).reshape(b * num_frames, *z.shape[1:2], *z.shape[3:])
        vae = self.vae
        decoded = torch.cat(
            [
                vae.decode((frames[i : i + 8] / vae.config.scaling_factor).to(vae.dtype)).sample
                for i in range(0, frames.shape[0], 8)
            ]
        )
        video = ((decoded.float() + 1) / 2).clamp(0, 1)
        return VideoOutput(frames=video.view(b, num_frames, *video.shape[1:]))
