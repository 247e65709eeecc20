"""SkyReels-V2 image-to-video (SkyReels-V2-I2V-1.3B-540P, -14B-540P, -14B-720P).

A Wan 2.1 I2V model retrained by Skywork, with a denoiser class of its own
(`SkyReelsV2Transformer3DModel`: Wan's blocks, plus `inject_sample_info` and a causal
`num_frame_per_block` that only its diffusion-forcing variant turns on). The image enters as in
Wan 2.1: CLIP vision hidden states (layer -2) as extra cross-attention tokens, and the VAE latent
of [image, black frames] with a 4-channel first-frame mask on the channels (in = 16 + 4 + 16).
So the adapter is Wan's, with the pipeline, the sizes and the tiny model changed; the scheduler
is UniPC with flow sigmas (sigma = t/1000, the contract's `schedule` check says so).
"""

from __future__ import annotations

import torch
from diffusers import (
    SkyReelsV2ImageToVideoPipeline,
    SkyReelsV2Transformer3DModel,
    UniPCMultistepScheduler,
)
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from anti_i2v.models.backbones.wan import TINY_WAN_DIT, Wan, tiny_wan_vae


class SkyReelsV2(Wan):
    family = "skyreels-v2"
    pipeline_class = SkyReelsV2ImageToVideoPipeline

    def native_resolution(self) -> tuple[int, int]:
        return 544, 960  # the 540P checkpoints; the 720P one runs at 720x1280

    def native_frames(self) -> int:
        return 97


def tiny(seed: int = 0) -> SkyReelsV2ImageToVideoPipeline:
    """SkyReels-V2 I2V at toy size (2 blocks, 32x32 frames) with seeded random weights."""
    torch.manual_seed(seed)
    vae = tiny_wan_vae()
    transformer = SkyReelsV2Transformer3DModel(
        **TINY_WAN_DIT, in_channels=36, image_dim=4, added_kv_proj_dim=24
    )
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2,
            image_size=32, intermediate_size=16, patch_size=1,
        )
    )  # fmt: skip
    return SkyReelsV2ImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        image_encoder=encoder,
        image_processor=CLIPImageProcessor(crop_size=32, size=32),
        transformer=transformer,
        vae=vae,
        scheduler=UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0
        ),
    )
