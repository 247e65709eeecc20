"""HunyuanVideo 1.5 image-to-video (`HunyuanVideo15ImageToVideoPipeline`, 8.3B).

How the image enters, twice: (1) its VAE latent (times the scaling factor) fills latent frame
0, zeros the rest, plus a 1-channel first-frame mask, all concatenated with the noisy latent on
channels (`in_channels = 32 + 32 + 1 = 65`); (2) SigLIP's last hidden state (729 tokens of 1152
for so400m-patch14-384) joins the text tokens. Latents are `[B, C, F, H, W]`, 16x in space and
4x in time; flow matching. One block stack, `transformer_blocks` (dual-stream, returning
`(video, context)`), whose attention runs over [video, context]. The context is Qwen2.5-VL's
prompt (padded to 1000 tokens) and ByT5's glyph text (256), both saved embeddings here; the
denoiser puts the valid tokens of image, ByT5 and Qwen first, then the padding.

Two things differ from the pipeline's own code paths, each for a stated reason:
- SigLIP runs on pixels resized and normalised in torch (`clip_pixels`), so gradients reach
  the photo; the pipeline's processor works on PIL images.
- `plan` cannot trace the denoiser's forward: it asks whether the image embeddings are all zero
  (text-to-video) and reorders the context with boolean masks, and both read tensor values, which
  FakeTensorMode has not got. `traceable()` swaps in `traceable_forward` for the trace: the same
  modules in the same order, with that reorder written as the identity it is when every token
  is valid (the adapter's context) and the image given (always, for image-to-video). A test
  holds it equal to the real forward; measurements run the real one.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from diffusers import (
    AutoencoderKLHunyuanVideo15,
    ClassifierFreeGuidance,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideo15ImageToVideoPipeline,
    HunyuanVideo15Transformer3DModel,
)
from diffusers.models.autoencoders.autoencoder_kl_hunyuanvideo15 import HunyuanVideo15AttnBlock
from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

from anti_i2v.models.backbones.base import Conditioning, FlowMatchBackbone
from anti_i2v.models.backbones.hunyuan import latent_concat
from anti_i2v.models.backbones.wan import clip_pixels

# The real pipeline pads Qwen2.5-VL's prompt to 1000 tokens and ByT5's to 256
# (`tokenizer_max_length`, `tokenizer_2_max_length`); the real Qwen width is 3584.
REAL_TEXT_TOKENS = (1000, 256)
QWEN_WIDTH = 3584


class Hunyuan15(FlowMatchBackbone):
    family = "hunyuan15"
    pipeline_class = HunyuanVideo15ImageToVideoPipeline
    block_containers = ("transformer_blocks",)
    conditioning_parts = ("vae", "image_encoder")
    skip_components = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    joint_text_first = False  # its attention runs over [video, context]

    def __init__(self, pipe: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(pipe, *args, **kwargs)
        # diffusers 0.42's VAE attention builds its causal mask as [B, L, L], which
        # scaled_dot_product_attention cannot broadcast against [B, 1, L, C] queries when B > 1;
        # this pipeline's blocks get the same mask as [B, 1, L, L] (the model, not the class).
        if pipe.vae is not None:
            for module in pipe.vae.modules():
                if isinstance(module, HunyuanVideo15AttnBlock):
                    module.prepare_causal_attention_mask = _causal_mask_per_head

    def native_resolution(self) -> tuple[int, int]:
        # The pipeline sizes a video from the photo's shape and the transformer's target_size
        # (its own bucket list); a 16:9 photo's bucket is the model's landscape size.
        return tuple(
            self.pipe.video_processor.calculate_default_height_width(
                720, 1280, self.denoiser.config.target_size
            )
        )

    def joint_text_tokens(self) -> int:
        # SigLIP's patches, ByT5's and Qwen's tokens: the context the blocks attend over
        vision = self.pipe.image_encoder.config
        image = (vision.image_size // vision.patch_size) ** 2
        return image + sum(int(self.text[k].shape[1]) for k in ("prompt_embeds", "prompt_embeds_2"))

    def native_frames(self) -> int:
        return 121

    def token_grid(self, cond: Conditioning) -> tuple[int, int, int]:
        _, _, f, h, w = cond.clean.shape
        cfg = self.denoiser.config
        return f // cfg.patch_size_t, h // cfg.patch_size, w // cfg.patch_size

    def _latent(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, 3, F, H, W]` in [-1, 1] -> the VAE's latent times its scaling factor (the
        pipeline's `retrieve_latents(..., "argmax")`)."""
        vae = self.pipe.vae
        latent = vae.encode(x.to(vae.dtype)).latent_dist.mode()
        return (latent * vae.config.scaling_factor).to(self.dtype)

    def condition(self, image: torch.Tensor, frames: int | None = None) -> Conditioning:
        f = self.latent_frames(frames or self.default_frames)
        image = self.resize(image).to(self.device)
        latent = self._latent((image * 2 - 1).unsqueeze(2))
        encoder = self.pipe.image_encoder
        pixels = clip_pixels(image, encoder.config.image_size, self.pipe.feature_extractor)
        embeds = encoder(pixel_values=pixels.to(encoder.dtype)).last_hidden_state
        return Conditioning(
            tensors={"image_cond": latent_concat(latent, f), "image_embeds": embeds},
            # A causal VAE: latent frame 0 encodes the image alone, so the still video repeats it
            clean=latent.repeat(1, 1, f, 1, 1),
        )

    def denoiser_kwargs(self, noisy: torch.Tensor, cond: Conditioning, t: float) -> dict[str, Any]:
        b = noisy.shape[0]
        text = self.text_batch(b)
        return {
            "hidden_states": torch.cat([noisy, cond.tensors["image_cond"]], dim=1),
            "timestep": torch.full((b,), float(t), device=noisy.device, dtype=noisy.dtype),
            "encoder_hidden_states": text["prompt_embeds"],
            "encoder_attention_mask": text["prompt_embeds_mask"],
            "encoder_hidden_states_2": text["prompt_embeds_2"],
            "encoder_attention_mask_2": text["prompt_embeds_mask_2"],
            "image_embeds": cond.tensors["image_embeds"].to(noisy.dtype),
            "return_dict": False,
        }

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        return self._latent((video.permute(0, 2, 1, 3, 4) * 2 - 1).to(self.device))

    def decode_video(self, latent: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self._decode(latent / self.pipe.vae.config.scaling_factor)

    def null_text(self) -> dict[str, torch.Tensor]:
        cfg = self.denoiser.config
        qwen, byt5 = REAL_TEXT_TOKENS if cfg.text_embed_dim == QWEN_WIDTH else (16, 8)
        return {
            "prompt_embeds": torch.zeros(1, qwen, cfg.text_embed_dim),
            "prompt_embeds_mask": torch.ones(1, qwen, dtype=torch.long),
            "prompt_embeds_2": torch.zeros(1, byt5, cfg.text_embed_2_dim),
            "prompt_embeds_mask_2": torch.ones(1, byt5, dtype=torch.long),
        }

    def pipeline_kwargs(self) -> dict[str, Any]:
        text = self.text_batch(1)
        negative = {f"negative_{k}": v for k, v in text.items()}
        return {**text, **negative}

    def pipeline_image(self, image: torch.Tensor) -> dict[str, Any]:
        # The pipeline takes a PIL image and sizes the video from it and its target_size: the
        # photo at the adapter's resolution gives that resolution's bucket.
        return {"image": self.photo_image(image)}

    def traceable(self) -> contextlib.AbstractContextManager:
        from anti_i2v.models.wrap import forward_swapped  # nnsight: only when plan traces

        return forward_swapped(self.denoiser, self.denoiser, traceable_forward)


def _causal_mask_per_head(*args: Any, **kwargs: Any) -> torch.Tensor:
    """`HunyuanVideo15AttnBlock`'s causal mask with a head axis: `[B, 1, L, L]` (or `[L, L]`)."""
    mask = HunyuanVideo15AttnBlock.prepare_causal_attention_mask(*args, **kwargs)
    return mask.unsqueeze(1) if mask.dim() == 3 else mask


def traceable_forward(
    self: HunyuanVideo15Transformer3DModel,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor,
    timestep_r: torch.Tensor | None = None,
    encoder_hidden_states_2: torch.Tensor | None = None,
    encoder_attention_mask_2: torch.Tensor | None = None,
    image_embeds: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> tuple[torch.Tensor]:
    """The denoiser's forward for `plan`'s trace (see the module docstring): its own embedders,
    blocks and head in its order, with every context token valid and the image given, so the
    context is [image, ByT5, Qwen] with no value read.

    Args:
        hidden_states: `[B, 65, F, H, W]`: noisy latent, image latent, first-frame mask.
        timestep: `[B]` on the 0..1000 scale.
        encoder_hidden_states: Qwen's `[B, Lq, text_embed_dim]` (its mask all ones).
        encoder_hidden_states_2: ByT5's `[B, Lb, text_embed_2_dim]` (its mask all ones).
        image_embeds: SigLIP's `[B, Li, image_embed_dim]`.

    Returns:
        `(velocity,)`, `[B, out_channels, F, H, W]`.
    """
    b, _, f, h, w = hidden_states.shape
    pt, ph, pw = self.config.patch_size_t, self.config.patch_size, self.config.patch_size
    rope = self.rope(hidden_states)
    temb = self.time_embed(timestep, timestep_r=timestep_r)
    x = self.x_embedder(hidden_states)
    qwen = self.context_embedder(encoder_hidden_states, timestep, encoder_attention_mask)
    qwen = qwen + self.cond_type_embed(torch.zeros_like(qwen[:, :, 0], dtype=torch.long))
    byt5 = self.context_embedder_2(encoder_hidden_states_2)
    byt5 = byt5 + self.cond_type_embed(torch.ones_like(byt5[:, :, 0], dtype=torch.long))
    image = self.image_embedder(image_embeds)
    image = image + self.cond_type_embed(2 * torch.ones_like(image[:, :, 0], dtype=torch.long))
    context = torch.cat([image, byt5, qwen], dim=1)
    mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
    for block in self.transformer_blocks:
        x, context = block(x, context, temb, mask, rope)
    x = self.proj_out(self.norm_out(x, temb))
    x = x.reshape(b, f // pt, h // ph, w // pw, -1, pt, ph, pw)
    x = x.permute(0, 4, 1, 5, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(2, 3)
    return (x,)


def tiny(seed: int = 0) -> HunyuanVideo15ImageToVideoPipeline:
    """A test-size HunyuanVideo 1.5 I2V (2 blocks of 2 heads of 16, 64x64 frames) with seeded
    random weights: the fact sheet's toy transformer with the real 65/32 latent channels cut to
    4 + 4 + 1, a 5-level toy VAE (16x in space, 4x in time) and a toy SigLIP."""
    torch.manual_seed(seed)
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=9,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=2,
        num_refiner_layers=1,
        text_embed_dim=16,
        text_embed_2_dim=8,
        image_embed_dim=8,
        rope_axes_dim=(4, 6, 6),
        target_size=64,
    )
    vae = AutoencoderKLHunyuanVideo15(
        latent_channels=4, block_out_channels=(8, 8, 8, 8, 8), layers_per_block=1
    )
    encoder = SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
    )
    return HunyuanVideo15ImageToVideoPipeline(
        text_encoder=None,
        tokenizer=None,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        text_encoder_2=None,
        tokenizer_2=None,
        guider=ClassifierFreeGuidance(guidance_scale=1.0),
        image_encoder=encoder,
        feature_extractor=SiglipImageProcessor(size={"height": 32, "width": 32}),
    )
