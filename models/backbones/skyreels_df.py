"""SkyReels-V2 diffusion forcing, image-to-video (SkyReels-V2-DF-1.3B/14B-540P).

Diffusion forcing gives every latent frame its own noise level: the timestep is `[B, F]`, and
the photo's VAE latent (normalised as Wan's) overwrites latent frame 0 with timestep 0 there, as
`SkyReelsV2DiffusionForcingImageToVideoPipeline` does before its first step. No channel concat,
no CLIP: the noisy latent is the plain 16-channel Wan latent. The denoiser is called with
`enable_diffusion_forcing=True` and the sample-info `fps` flag (0 for 16 fps, else 1; the
pipeline's default 24 fps gives 1).

The pipeline samples in asynchronous chunks (`ar_step`, `causal_block_size`, long videos in
overlapping windows); a probe or a cloak step here is one call over the whole clip at one noise
level for every generated frame, which is the synchronous schedule (`ar_step=0`) the pipeline
uses when the clip fits `base_num_frames`.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    SkyReelsV2DiffusionForcingImageToVideoPipeline,
    SkyReelsV2Transformer3DModel,
    UniPCMultistepScheduler,
)

from anti_i2v.models.backbones.base import Conditioning
from anti_i2v.models.backbones.wan import TINY_WAN_DIT, Wan, normalize_wan_latents, tiny_wan_vae

FPS_FLAG = 1  # the pipeline's `fps` (24 by default) as the sample-info embedding reads it


class SkyReelsV2DF(Wan):
    family = "skyreels-v2-df"
    pipeline_class = SkyReelsV2DiffusionForcingImageToVideoPipeline
    conditioning_parts = ("vae",)

    def native_resolution(self) -> tuple[int, int]:
        return 544, 960

    def native_frames(self) -> int:
        return 97

    def condition(self, image: torch.Tensor, frames: int | None = None) -> Conditioning:
        f = self.latent_frames(frames or self.default_frames)
        vae = self.pipe.vae
        x = (self.resize(image).to(self.device) * 2 - 1).to(vae.dtype).unsqueeze(2)
        latent = normalize_wan_latents(vae.encode(x).latent_dist.mode(), vae).to(self.dtype)
        return Conditioning(tensors={"image_latent": latent}, clean=latent.repeat(1, 1, f, 1, 1))

    def denoiser_kwargs(self, noisy: torch.Tensor, cond: Conditioning, t: float) -> dict[str, Any]:
        b, _, f = noisy.shape[:3]
        timestep = torch.full((b, f), float(t), device=noisy.device, dtype=noisy.dtype)
        timestep[:, 0] = 0  # the photo's frame is clean
        kwargs = {
            "hidden_states": torch.cat([cond.tensors["image_latent"], noisy[:, :, 1:]], dim=2),
            "timestep": timestep,
            "encoder_hidden_states": self.text_batch(b)["prompt_embeds"],
            "enable_diffusion_forcing": True,
            "return_dict": False,
        }
        if self.denoiser.config.inject_sample_info:
            # once, not once per sample: the denoiser repeats it over frames and broadcasts it
            # over the batch (a per-sample list breaks for a batch of 2; the pipeline's is 1)
            kwargs["fps"] = [FPS_FLAG]
        return kwargs

    def pipeline_kwargs(self) -> dict[str, Any]:
        frames = self.default_frames
        return {**super().pipeline_kwargs(), "base_num_frames": frames}


def tiny(seed: int = 0) -> SkyReelsV2DiffusionForcingImageToVideoPipeline:
    """SkyReels-V2 DF at toy size (2 blocks, sample info on, 32x32 frames), seeded weights."""
    torch.manual_seed(seed)
    vae = tiny_wan_vae()
    transformer = SkyReelsV2Transformer3DModel(
        **TINY_WAN_DIT, in_channels=16, inject_sample_info=True, num_frame_per_block=1
    )
    return SkyReelsV2DiffusionForcingImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        transformer=transformer,
        vae=vae,
        scheduler=UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=8.0
        ),
    )
