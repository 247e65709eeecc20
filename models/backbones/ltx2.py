"""LTX-2 image-to-video (`LTX2ImageToVideoPipeline`, LTX-2 19B): one model makes video and audio.

The photo enters as LTX-Video's does (`ltx.LTX`, whose latent and token code this reuses): its
normalised VAE latent fills latent frame 0 of a packed token sequence `[B, F*H*W, C]`, a
conditioning mask keeps those tokens clean, and they get timestep 0 (per-token timesteps,
`t * (1 - mask)`). Flow matching; the pipeline's `convert_velocity_to_x0` is `x - sigma v`.

What is new is the audio. Each of the 48 `transformer_blocks` is joint: it takes and returns
`(video, audio)`, with video and audio self-attention, text cross-attention for each, and
audio-to-video and video-to-audio cross-attention between them. The toolkit probes, scores and
cloaks the video half (`Backbone.hidden` takes element 0). The denoiser still needs an audio
stream, and what it is at timestep t is the audio the sampler is making, which no photo
determines. The adapter gives it the flow-matching state of the *average* clip at t:
`(t / 1000) * n` (the clean audio latent normalised to mean 0, noised at t), with `n` one fixed
seeded draw, the same for every photo and batch position, so results do not depend on batching.
Its length is the pipeline's own count for the clip (`audio_frames`).

Text: Gemma 3's per-layer hidden states (`prompt_embeds`, `[B, L, 3840 * 49]`, and their mask)
are the saved embeddings, as the pipeline takes them; the pipeline's `connectors` turn them into
the video and audio text the blocks attend to, here as there.

Two differences from the published pipeline, stated where users meet them:
- The pipeline re-compresses the photo with H.264 (CRF 33 up to LTX-2.3) before encoding it,
  as the model was trained. That is not differentiable, so cloaking optimises against the
  uncompressed photo (unless `--eot h264crf33` puts the same codec in its loop, straight-through),
  while `generate` (and so `evaluate`) runs the pipeline's own path, the re-compression included
  (it needs PyAV: `pip install anti-i2v[ltx2]`).
- Generation runs without classifier-free guidance (no negative prompt is saved, so its delta
  would be zero) but with the pipeline's spatio-temporal and modality-isolation guidance: three
  denoiser passes per step.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    FlowMatchEulerDiscreteScheduler,
    LTX2ImageToVideoPipeline,
    LTX2VideoTransformer3DModel,
)
from diffusers.pipelines.ltx2 import LTX2TextConnectors
from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

from anti_i2v.core.common import ToolkitError
from anti_i2v.models.backbones.base import Conditioning
from anti_i2v.models.backbones.ltx import LTX

FRAME_RATE = 24.0  # the pipeline's default; it sets the temporal RoPE and the audio's length
AUDIO_SEED = 0  # the one draw of the audio stream's noise (see the module docstring)
STG_BLOCK = 28  # the pipeline's default spatio-temporal guidance block (the last, if fewer)
# The pipeline pads Gemma's prompt to 1024 tokens (`max_sequence_length`); Gemma 3 12B is 3840 wide.
REAL_TEXT_TOKENS, GEMMA_WIDTH = 1024, 3840


class LTX2(LTX):
    family = "ltx2"
    pipeline_class = LTX2ImageToVideoPipeline
    block_containers = ("transformer_blocks",)
    conditioning_parts = ("vae", "connectors")
    skip_components = ("text_encoder", "tokenizer", "processor", "prompt_enhancer")
    # Three batch-1 passes a step (conditional, STG, modality isolation); `plan` counts them as
    # one batch of three: the time is right, the memory an upper bound.
    guidance_passes = 3

    def native_resolution(self) -> tuple[int, int]:
        return 512, 768

    def native_frames(self) -> int:
        return 121

    def audio_frames(self, frames: int) -> int:
        """Audio latent frames the pipeline makes for `frames` video frames at FRAME_RATE."""
        pipe = self.pipe
        per_second = (
            pipe.audio_sampling_rate
            / pipe.audio_hop_length
            / pipe.audio_vae_temporal_compression_ratio
        )
        return round(frames / FRAME_RATE * per_second)

    def condition(self, image: torch.Tensor, frames: int | None = None) -> Conditioning:
        cond = super().condition(image, frames)
        audio = self.pipe.audio_vae.config
        # One draw for every photo, expanded over the batch (see the module docstring).
        noise = torch.randn(
            1,
            self.audio_frames(frames or self.default_frames),
            audio.latent_channels * (audio.mel_bins // self.pipe.audio_vae_mel_compression_ratio),
            generator=torch.Generator().manual_seed(AUDIO_SEED),
        )
        b = cond.clean.shape[0]
        cond.tensors["audio_noise"] = noise.to(self.device, self.dtype).expand(b, -1, -1)
        return cond

    def _text(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The connectors' video text, audio text and text mask for a batch (the pipeline's
        tokenizer pads on the left, which the connectors need to know)."""
        text = self.text_batch(batch)
        video, audio, mask = self.pipe.connectors(
            text["prompt_embeds"].to(self.pipe.connectors.dtype),
            text["prompt_attention_mask"],
            padding_side="left",
        )
        return video.to(self.dtype), audio.to(self.dtype), mask

    def denoiser_kwargs(self, noisy: torch.Tensor, cond: Conditioning, t: float) -> dict[str, Any]:
        b = noisy.shape[0]
        mask = cond.tensors["mask"]
        f, h, w = self.token_grid(cond)
        video_text, audio_text, text_mask = self._text(b)
        step = torch.full((b,), float(t), device=noisy.device, dtype=noisy.dtype)
        audio = cond.tensors["audio_noise"]
        return {
            "hidden_states": mask.unsqueeze(-1) * cond.clean + (1 - mask.unsqueeze(-1)) * noisy,
            "audio_hidden_states": (float(t) / 1000.0) * audio,
            "encoder_hidden_states": video_text,
            "audio_encoder_hidden_states": audio_text,
            "timestep": (float(t) * (1 - mask)).to(noisy.dtype),  # 0 on the photo's tokens
            "audio_timestep": step,
            "sigma": step,  # the pipeline passes its timestep here too (LTX-2.3's prompt AdaLN)
            "encoder_attention_mask": text_mask,
            "audio_encoder_attention_mask": text_mask,
            "num_frames": f,
            "height": h,
            "width": w,
            "fps": FRAME_RATE,
            "audio_num_frames": audio.shape[1],
            "use_cross_timestep": True,  # the pipeline's default
            "return_dict": False,
        }

    def null_text(self) -> dict[str, torch.Tensor]:
        connectors = self.pipe.connectors.config
        width = connectors.caption_channels * connectors.text_proj_in_factor
        tokens = REAL_TEXT_TOKENS if connectors.caption_channels == GEMMA_WIDTH else 16
        # An expanded zero row: a real model's null prompt (1024 x 188160) costs no memory here.
        return {
            "prompt_embeds": torch.zeros(1, 1, width).expand(1, tokens, width),
            "prompt_attention_mask": torch.ones(1, tokens, dtype=torch.long),
        }

    def pipeline_kwargs(self) -> dict[str, Any]:
        layers = len(self.denoiser.transformer_blocks)
        return {
            **super().pipeline_kwargs(),  # the prompt as its own negative, guidance scale 1
            # no classifier-free guidance for the audio either: its delta is zero too, and it
            # would double the batch
            "audio_guidance_scale": 1.0,
            "spatio_temporal_guidance_blocks": [min(STG_BLOCK, layers - 1)],
            "frame_rate": FRAME_RATE,
        }

    @classmethod
    def generation_refusal(cls) -> str | None:
        from diffusers.utils import is_av_available

        if is_av_available():
            return None
        return (
            "LTX-2's pipeline re-compresses the photo with H.264 before it encodes it, as the "
            "model was trained, and that needs PyAV: `pip install anti-i2v[ltx2]` (or "
            "`pip install av`), then run the same command"
        )

    def pipeline_image(self, image: torch.Tensor) -> dict[str, Any]:
        if refusal := self.generation_refusal():
            raise ToolkitError(refusal)
        # A PIL image at the adapter's resolution: the pipeline re-compresses PIL images only.
        height, width = self.resolution
        return {"image": self.photo_image(image), "height": height, "width": width}


def tiny(seed: int = 0) -> LTX2ImageToVideoPipeline:
    """A test-size LTX-2 I2V with seeded random weights: the fact sheet's toy transformer (2 joint
    blocks, video and audio 2 heads of 8), a toy video VAE (4x in space and time), and toy audio
    VAE, vocoder and text connectors (Gemma width 16, 3 layers)."""
    torch.manual_seed(seed)
    transformer = LTX2VideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        audio_in_channels=8,
        audio_out_channels=8,
        audio_num_attention_heads=2,
        audio_attention_head_dim=8,
        audio_cross_attention_dim=16,
        num_layers=2,
        caption_channels=16,
        rope_type="split",
    )
    connectors = LTX2TextConnectors(
        caption_channels=16,
        text_proj_in_factor=3,
        video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=8,
        video_connector_num_layers=1,
        video_connector_num_learnable_registers=None,
        audio_connector_num_attention_heads=2,
        audio_connector_attention_head_dim=8,
        audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None,
        connector_rope_base_seq_len=32,
        rope_type="split",
    )
    vae = AutoencoderKLLTX2Video(
        latent_channels=8,
        block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        layers_per_block=(1, 1, 1),
        decoder_layers_per_block=(1, 1, 1),
        spatio_temporal_scaling=(True, True),
        decoder_spatio_temporal_scaling=(True, True),
        decoder_inject_noise=(False, False, False),
        downsample_type=("spatiotemporal", "spatiotemporal"),
        upsample_residual=(False, False),
        upsample_factor=(1, 1),
        patch_size=1,
        patch_size_t=1,
        decoder_causal=False,  # as LTX-2.0's decoder
    )
    vae.use_framewise_encoding = vae.use_framewise_decoding = False
    # The audio latent packs to latent_channels x mel_bins / 4 = 8 features, the transformer's
    # audio_in_channels; the audio VAE's statistics have one entry per packed feature.
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=8,
        ch_mult=(1,),
        num_res_blocks=1,
        resolution=32,
        latent_channels=2,
        mel_bins=16,
    )
    vocoder = LTX2Vocoder(
        in_channels=2 * 16,
        hidden_channels=32,
        upsample_kernel_sizes=[4, 4],
        upsample_factors=[2, 2],
        resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3, 5]],
        output_sampling_rate=16000,
    )
    return LTX2ImageToVideoPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        audio_vae=audio_vae,
        text_encoder=None,
        tokenizer=None,
        connectors=connectors,
        transformer=transformer,
        vocoder=vocoder,
    )
