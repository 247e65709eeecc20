"""Cosmos-Predict2 video-to-world (Cosmos-Predict2-2B/14B-Video2World), from one photo.

The photo is the conditioning frame: `Cosmos2VideoToWorldPipeline` pads it into a still video,
keeps latent frame 0 as the clean conditioning latent (normalised, x `sigma_data` = 1), and
tells the denoiser which frames are given by a `condition_mask` channel (1 on frame 0) that
the transformer concatenates itself, plus a pixel `padding_mask` of zeros. Timesteps are per
frame, `[B, 1, T, 1, 1]`: the conditioning frame gets `sigma_conditioning / (1 + sigma_conditioning)`.

The sampler runs EDM sigmas (0.002 to 80) but feeds the denoiser `x / (1 + sigma)` at
`t = sigma / (1 + sigma)`, which is `(1 - t) x0 + t noise`: rectified flow at t, and
`x0 = x_t - t v`. So, on the toolkit's 0..1000 scale, this is a flow-matching family with
t / 1000 the flow time, and the denoiser's `timestep` is that time itself in [0, 1].

The pipeline refuses to generate without NVIDIA's guardrail (`cosmos_guardrail`, which the
model's licence requires). Probing and cloaking generate nothing, so the adapter loads the
pipeline with `NoGuardrail`, which refuses generation in one line; `generate` runs only with
the real guardrail installed, or on the `tiny:` model, whose random weights are not NVIDIA's.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    Cosmos2VideoToWorldPipeline,
    CosmosTransformer3DModel,
    FlowMatchEulerDiscreteScheduler,
)

from anti_i2v.core.common import ToolkitError
from anti_i2v.models.backbones.base import Conditioning, FlowMatchBackbone
from anti_i2v.models.backbones.wan import (
    denormalize_wan_latents,
    normalize_wan_latents,
    tiny_wan_vae,
)

SIGMA_CONDITIONING = 0.0001  # the pipeline's default noise level of the given frame
FPS = 16  # the pipeline's default


class NoGuardrail:
    """Stands in for `CosmosSafetyChecker` where `cosmos_guardrail` is not installed: loading,
    probing and cloaking need no guardrail, generating does (the pipeline calls these)."""

    passes = False  # True only for the toolkit's own random-weight `tiny:` model

    def to(self, *_: Any, **__: Any) -> NoGuardrail:
        return self

    def check_text_safety(self, _prompt: str) -> bool:
        return self._allowed()

    def check_video_safety(self, video: Any) -> Any:
        self._allowed()
        return video

    def _allowed(self) -> bool:
        if not self.passes:
            raise ToolkitError(
                "Cosmos generates only through NVIDIA's guardrail, which its licence requires: "
                "`pip install cosmos_guardrail`, then run the same command"
            )
        return True


class Cosmos2(FlowMatchBackbone):
    family = "cosmos2"
    pipeline_class = Cosmos2VideoToWorldPipeline
    block_containers = ("transformer_blocks",)
    conditioning_parts = ("vae",)
    skip_components = ("text_encoder", "tokenizer", "safety_checker")

    @classmethod
    def stand_in_components(cls) -> dict[str, Any]:
        return {"safety_checker": guardrail()}

    def native_resolution(self) -> tuple[int, int]:
        return 704, 1280

    def native_frames(self) -> int:
        return 93

    def token_grid(self, cond: Conditioning) -> tuple[int, int, int]:
        _, _, f, h, w = cond.clean.shape
        pt, ph, pw = self.denoiser.config.patch_size
        return f // pt, h // ph, w // pw

    def condition(self, image: torch.Tensor, frames: int | None = None) -> Conditioning:
        f = self.latent_frames(frames or self.default_frames)
        vae = self.pipe.vae
        x = (self.resize(image).to(self.device) * 2 - 1).to(vae.dtype).unsqueeze(2)
        # A causal VAE: the still video's latent frame 0 is the photo's own latent
        latent = normalize_wan_latents(vae.encode(x).latent_dist.mode(), vae)
        latent = (latent * self.pipe.scheduler.config.sigma_data).to(self.dtype)
        return Conditioning(tensors={"given": latent}, clean=latent.repeat(1, 1, f, 1, 1))

    def denoiser_kwargs(self, noisy: torch.Tensor, cond: Conditioning, t: float) -> dict[str, Any]:
        b, _, f, h, w = noisy.shape
        timestep = torch.full((b, 1, f, 1, 1), t / 1000.0, device=noisy.device, dtype=noisy.dtype)
        timestep[:, :, 0] = SIGMA_CONDITIONING / (1 + SIGMA_CONDITIONING)
        given = noisy.new_zeros(b, 1, f, h, w)
        given[:, :, 0] = 1
        return {
            "hidden_states": torch.cat([cond.tensors["given"], noisy[:, :, 1:]], dim=2),
            "timestep": timestep,
            "encoder_hidden_states": self.text_batch(b)["prompt_embeds"],
            "fps": FPS,
            "condition_mask": given,
            "padding_mask": noisy.new_zeros(1, 1, *self.resolution),
            "return_dict": False,
        }

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        x = (video.permute(0, 2, 1, 3, 4) * 2 - 1).to(self.device, vae.dtype)
        latent = normalize_wan_latents(vae.encode(x).latent_dist.mode(), vae)
        return (latent * self.pipe.scheduler.config.sigma_data).to(self.dtype)

    def decode_video(self, latent: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        z = latent.float() / self.pipe.scheduler.config.sigma_data
        return self._decode(denormalize_wan_latents(z, self.pipe.vae))

    def null_text(self) -> dict[str, torch.Tensor]:
        return {"prompt_embeds": torch.zeros(1, 16, self.denoiser.config.text_embed_dim)}

    def pipeline_kwargs(self) -> dict[str, Any]:
        text = self.text_batch(1)["prompt_embeds"]
        return {"prompt_embeds": text, "negative_prompt_embeds": text, "guidance_scale": 1.0}


def guardrail() -> Any:
    """NVIDIA's guardrail where `cosmos_guardrail` is installed, else `NoGuardrail`."""
    try:
        from diffusers.pipelines.cosmos.pipeline_cosmos2_video2world import CosmosSafetyChecker

        return CosmosSafetyChecker()
    except ImportError:
        return NoGuardrail()


def tiny(seed: int = 0) -> Cosmos2VideoToWorldPipeline:
    """Cosmos-Predict2 Video2World at toy size (2 blocks, 32x32 frames), seeded random weights."""
    torch.manual_seed(seed)
    vae = tiny_wan_vae()
    transformer = CosmosTransformer3DModel(
        in_channels=17,
        out_channels=16,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=2,
        text_embed_dim=16,
        adaln_lora_dim=8,
        max_size=(8, 16, 16),
        patch_size=(1, 2, 2),
        rope_scale=(1.0, 1.0, 1.0),
        concat_padding_mask=True,
        extra_pos_embed_type=None,
    )
    checker = NoGuardrail()
    checker.passes = True  # random weights, not NVIDIA's model: nothing to guard
    return Cosmos2VideoToWorldPipeline(
        text_encoder=None,
        tokenizer=None,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True),
        safety_checker=checker,
    )
