"""Write the published component configs of real image-to-video models (no weights).

Run from the project root: `python artifacts/configs/build_configs.py`. It writes one diffusers
pipeline folder per model (`model_index.json`, one `config.json` per component, the image
processor's `preprocessor_config.json`) and a `SOURCE` line naming where the values come from.
Text encoders and tokenizers are listed in `model_index.json` as published but get no folder:
the toolkit never loads them (text conditioning comes from saved embeddings).

The values are the ones diffusers' own conversion scripts (`scripts/convert_*_to_diffusers.py`)
build the published checkpoints with; where a script takes a class's defaults, the defaults are
written out here so that a later diffusers release cannot change a shipped config silently.
The hub itself cannot be reached from here, so no hub revision is pinned: `SOURCE` names the
hub id and the script the values were read from. Open-Sora 1.2 and DynamiCrafter are not in
diffusers: their components are this toolkit's own classes (`anti_i2v.models.opensora`,
`anti_i2v.models.dynamicrafter`), built from the facts in shared/models, and their official
checkpoints become pipeline folders through `anti-i2v convert` (the `convert:` line of SOURCE),
which reads these configs.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import diffusers
from accelerate import init_empty_weights
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    SiglipImageProcessor,
    SiglipVisionConfig,
)

from anti_i2v.models.backbones.empty import PIPELINE_MODULES
from anti_i2v.models.dynamicrafter.pipeline import DDIM_CONFIG

HERE = Path(__file__).resolve().parent

# laion/CLIP-ViT-H-14-laion2B-s32B-b79K, the image encoder of Wan2.1-I2V and SVD.
CLIP_VIT_H = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    projection_dim=1024,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
)
CLIP_PROCESSOR = dict(
    size={"shortest_edge": 224},
    crop_size={"height": 224, "width": 224},
    do_center_crop=True,
    do_normalize=True,
    do_rescale=True,
    do_resize=True,
    resample=3,
    image_mean=[0.48145466, 0.4578275, 0.40821073],
    image_std=[0.26862954, 0.26130258, 0.27577711],
)
# google/siglip-so400m-patch14-384, HunyuanVideo 1.5's image encoder (27 x 27 = 729 tokens).
SIGLIP_SO400M = dict(
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=27,
    num_attention_heads=16,
    image_size=384,
    patch_size=14,
)
SIGLIP_PROCESSOR = dict(
    size={"height": 384, "width": 384},
    resample=3,
    image_mean=[0.5, 0.5, 0.5],
    image_std=[0.5, 0.5, 0.5],
)
# LTX's resolution-dependent flow shift (the pipelines' calculate_shift over the token count).
LTX_SHIFT = dict(
    base_image_seq_len=1024,
    base_shift=0.95,
    max_image_seq_len=4096,
    max_shift=2.05,
    use_dynamic_shifting=True,
)
WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]  # fmt: skip
WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]  # fmt: skip
FLOW_UNIPC = dict(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000)
# Wan 2.1 14B's transformer (40 blocks of 40 heads x 128), shared by every 14B Wan-derived model
WAN_14B = dict(
    attention_head_dim=128,
    cross_attn_norm=True,
    eps=1e-6,
    ffn_dim=13824,
    freq_dim=256,
    num_attention_heads=40,
    num_layers=40,
    out_channels=16,
    patch_size=(1, 2, 2),
    qk_norm="rms_norm_across_heads",
    text_dim=4096,
)
# The components every Wan 2.1-derived model shares: its VAE and the umT5 text encoder (no folder)
WAN21_PARTS = {
    "vae": ("diffusers", "AutoencoderKLWan", dict(base_dim=96, z_dim=16)),
    "text_encoder": ("transformers", "UMT5EncoderModel"),
    "tokenizer": ("transformers", "T5TokenizerFast"),
}

# name -> (hub id, source of the values, pipeline class, extra model_index keys, components).
# A component is (library, class, config) or (library, class) for one that gets no folder.
MODELS: dict[str, tuple] = {
    "cogvideox-5b-i2v": (
        "THUDM/CogVideoX-5b-I2V",
        "diffusers scripts/convert_cogvideox_to_diffusers.py (--transformer 5b --i2v) and the model card",
        "CogVideoXImageToVideoPipeline",
        {},
        {
            "transformer": (
                "diffusers",
                "CogVideoXTransformer3DModel",
                dict(
                    num_attention_heads=48,
                    attention_head_dim=64,
                    num_layers=42,
                    in_channels=32,
                    out_channels=16,
                    text_embed_dim=4096,
                    time_embed_dim=512,
                    max_text_seq_length=226,
                    patch_size=2,
                    sample_frames=49,
                    sample_height=60,
                    sample_width=90,
                    temporal_compression_ratio=4,
                    spatial_interpolation_scale=1.875,
                    use_rotary_positional_embeddings=True,
                    use_learned_positional_embeddings=True,
                    attention_bias=True,
                    activation_fn="gelu-approximate",
                    flip_sin_to_cos=True,
                    freq_shift=0,
                    norm_eps=1e-5,
                    norm_elementwise_affine=True,
                    timestep_activation_fn="silu",
                ),
            ),
            "vae": (
                "diffusers",
                "AutoencoderKLCogVideoX",
                dict(
                    latent_channels=16,
                    scaling_factor=0.7,
                    invert_scale_latents=False,
                    block_out_channels=(128, 256, 256, 512),
                    layers_per_block=3,
                    norm_eps=1e-6,
                    temporal_compression_ratio=4,
                    sample_height=480,
                    sample_width=720,
                ),
            ),
            "scheduler": (
                "diffusers",
                "CogVideoXDDIMScheduler",
                dict(
                    beta_schedule="scaled_linear",
                    beta_start=0.00085,
                    beta_end=0.012,
                    prediction_type="v_prediction",
                    rescale_betas_zero_snr=True,
                    snr_shift_scale=1.0,
                    timestep_spacing="trailing",
                    clip_sample=False,
                    set_alpha_to_one=True,
                    steps_offset=0,
                ),
            ),
            "text_encoder": ("transformers", "T5EncoderModel"),
            "tokenizer": ("transformers", "T5Tokenizer"),
        },
    ),
    "wan2.1-i2v-14b-480p": (
        "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
        "diffusers scripts/convert_wan_to_diffusers.py (--model_type Wan-I2V-14B-480p)",
        "WanImageToVideoPipeline",
        {},
        {
            "transformer": (
                "diffusers",
                "WanTransformer3DModel",
                dict(WAN_14B, image_dim=1280, added_kv_proj_dim=5120, in_channels=36),
            ),
            **WAN21_PARTS,
            "scheduler": ("diffusers", "UniPCMultistepScheduler", dict(FLOW_UNIPC, flow_shift=3.0)),
            "image_encoder": ("transformers", "CLIPVisionModelWithProjection", CLIP_VIT_H),
            "image_processor": ("transformers", "CLIPImageProcessor", CLIP_PROCESSOR),
        },
    ),
    # Wan 2.1 I2V-14B's architecture under SkyReels' own denoiser class (the facts sheet in
    # shared/models: 14B = 40 x 5120); the sample-info and causal-block options stay off for I2V.
    "skyreels-v2-i2v-14b-540p": (
        "Skywork/SkyReels-V2-I2V-14B-540P-Diffusers",
        "shared/models/diffusers-0.42-i2v-families.md (SkyReels-V2: Wan2.1-I2V layout, 14B = 40x5120) "
        "and diffusers' SkyReelsV2Transformer3DModel defaults; flow_shift as Wan2.1-I2V's (unverified)",
        "SkyReelsV2ImageToVideoPipeline",
        {},
        {
            "transformer": (
                "diffusers",
                "SkyReelsV2Transformer3DModel",
                dict(
                    WAN_14B,
                    image_dim=1280,
                    added_kv_proj_dim=5120,
                    in_channels=36,
                    inject_sample_info=False,
                    num_frame_per_block=1,
                ),
            ),
            **WAN21_PARTS,
            "scheduler": ("diffusers", "UniPCMultistepScheduler", dict(FLOW_UNIPC, flow_shift=3.0)),
            "image_encoder": ("transformers", "CLIPVisionModelWithProjection", CLIP_VIT_H),
            "image_processor": ("transformers", "CLIPImageProcessor", CLIP_PROCESSOR),
        },
    ),
    # Two experts of Wan 2.1 14B's width, no CLIP branch: the high-noise expert (transformer) runs
    # t >= 0.9 x 1000, the low-noise one (transformer_2) the rest.
    "wan2.2-i2v-a14b": (
        "Wan-AI/Wan2.2-I2V-A14B-Diffusers",
        "diffusers scripts/convert_wan_to_diffusers.py (--model_type Wan2.2-I2V-14B-720p: two "
        "WanTransformer3DModel experts, image_dim None) and shared/models/diffusers-0.42-i2v-families.md "
        "(boundary 0.9 for I2V, from memory; flow_shift 5.0, unverified)",
        "WanImageToVideoPipeline",
        {"boundary_ratio": 0.9, "expand_timesteps": False},
        {
            **{
                expert: (
                    "diffusers",
                    "WanTransformer3DModel",
                    dict(WAN_14B, added_kv_proj_dim=None, image_dim=None, in_channels=36),
                )
                for expert in ("transformer", "transformer_2")
            },
            **WAN21_PARTS,
            "scheduler": ("diffusers", "UniPCMultistepScheduler", dict(FLOW_UNIPC, flow_shift=5.0)),
        },
    ),
    # Wan 2.1 14B with 8 VACE hint blocks (one before every 5th block) on 96 control channels.
    "wan2.1-vace-14b": (
        "Wan-AI/Wan2.1-VACE-14B-diffusers",
        "diffusers scripts/convert_wan_to_diffusers.py (--model_type Wan-VACE-14B) and "
        "shared/models/diffusers-0.42-i2v-families.md (vace_layers 0, 5, ..., 35; 96 control "
        "channels); flow_shift 5.0, unverified",
        "WanVACEPipeline",
        {},
        {
            "transformer": (
                "diffusers",
                "WanVACETransformer3DModel",
                dict(
                    WAN_14B,
                    added_kv_proj_dim=None,
                    image_dim=None,
                    in_channels=16,
                    vace_layers=[0, 5, 10, 15, 20, 25, 30, 35],
                    vace_in_channels=96,
                ),
            ),
            **WAN21_PARTS,
            "scheduler": ("diffusers", "UniPCMultistepScheduler", dict(FLOW_UNIPC, flow_shift=5.0)),
        },
    ),
    # Diffusion forcing: the 1.3B I2V layout without image channels or CLIP, with sample info.
    "skyreels-v2-df-1.3b-540p": (
        "Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers",
        "shared/models/diffusers-0.42-i2v-families.md (SkyReels-V2 1.3B = 30 x 1536; DF: no "
        "concat, no CLIP) and Wan2.1-T2V-1.3B's widths (ffn 8960, 12 heads); inject_sample_info "
        "and flow_shift 8.0 unverified",
        "SkyReelsV2DiffusionForcingImageToVideoPipeline",
        {},
        {
            "transformer": (
                "diffusers",
                "SkyReelsV2Transformer3DModel",
                dict(
                    added_kv_proj_dim=None,
                    image_dim=None,
                    attention_head_dim=128,
                    cross_attn_norm=True,
                    eps=1e-6,
                    ffn_dim=8960,
                    freq_dim=256,
                    in_channels=16,
                    num_attention_heads=12,
                    num_layers=30,
                    out_channels=16,
                    patch_size=(1, 2, 2),
                    qk_norm="rms_norm_across_heads",
                    text_dim=4096,
                    inject_sample_info=True,
                    num_frame_per_block=1,
                ),
            ),
            **WAN21_PARTS,
            "scheduler": ("diffusers", "UniPCMultistepScheduler", dict(FLOW_UNIPC, flow_shift=8.0)),
        },
    ),
    # Cosmos-Predict2 2B: EDM sigmas (0.002..80) on a Wan 2.1 VAE; the guardrail gets no folder
    # (the adapter loads NVIDIA's where cosmos_guardrail is installed, else a refusing stand-in).
    "cosmos-predict2-2b-video2world": (
        "nvidia/Cosmos-Predict2-2B-Video2World",
        "diffusers scripts/convert_cosmos_to_diffusers.py (Cosmos-2.0-Diffusion-2B-Video2World, "
        "from memory: 28 x 16 heads x 128, text 1024, adaln_lora 256, rope_scale 1/3/3)",
        "Cosmos2VideoToWorldPipeline",
        {},
        {
            "transformer": (
                "diffusers",
                "CosmosTransformer3DModel",
                dict(
                    in_channels=17,
                    out_channels=16,
                    num_attention_heads=16,
                    attention_head_dim=128,
                    num_layers=28,
                    mlp_ratio=4.0,
                    text_embed_dim=1024,
                    adaln_lora_dim=256,
                    max_size=(128, 240, 240),
                    patch_size=(1, 2, 2),
                    rope_scale=(1.0, 3.0, 3.0),
                    concat_padding_mask=True,
                    extra_pos_embed_type=None,
                ),
            ),
            "vae": ("diffusers", "AutoencoderKLWan", dict(base_dim=96, z_dim=16)),
            "scheduler": (
                "diffusers",
                "FlowMatchEulerDiscreteScheduler",
                dict(use_karras_sigmas=True, shift=1.0),
            ),
            "text_encoder": ("transformers", "T5EncoderModel"),
            "tokenizer": ("transformers", "T5TokenizerFast"),
            "safety_checker": ("cosmos_guardrail", "CosmosSafetyChecker"),
        },
    ),
    "wan2.2-ti2v-5b": (
        "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        "diffusers scripts/convert_wan_to_diffusers.py (--model_type Wan2.2-TI2V-5B, vae22_diffusers_config)",
        "WanPipeline",
        {"expand_timesteps": True, "boundary_ratio": None},
        {
            "transformer": (
                "diffusers",
                "WanTransformer3DModel",
                dict(
                    added_kv_proj_dim=None,
                    attention_head_dim=128,
                    cross_attn_norm=True,
                    eps=1e-6,
                    ffn_dim=14336,
                    freq_dim=256,
                    in_channels=48,
                    num_attention_heads=24,
                    num_layers=30,
                    out_channels=48,
                    patch_size=(1, 2, 2),
                    qk_norm="rms_norm_across_heads",
                    text_dim=4096,
                ),
            ),
            "vae": (
                "diffusers",
                "AutoencoderKLWan",
                dict(
                    base_dim=160,
                    z_dim=48,
                    is_residual=True,
                    in_channels=12,
                    out_channels=12,
                    decoder_base_dim=256,
                    scale_factor_temporal=4,
                    scale_factor_spatial=16,
                    patch_size=2,
                    latents_mean=WAN22_LATENTS_MEAN,
                    latents_std=WAN22_LATENTS_STD,
                ),
            ),
            "scheduler": ("diffusers", "UniPCMultistepScheduler", dict(FLOW_UNIPC, flow_shift=5.0)),
            "text_encoder": ("transformers", "UMT5EncoderModel"),
            "tokenizer": ("transformers", "T5TokenizerFast"),
        },
    ),
    "ltx-video-0.9.0": (
        "Lightricks/LTX-Video (0.9.0, the release LTXImageToVideoPipeline loads)",
        "diffusers scripts/convert_ltx_to_diffusers.py (--version 0.9.0: get_transformer_config, get_vae_config)",
        "LTXImageToVideoPipeline",
        {},
        {
            "transformer": (
                "diffusers",
                "LTXVideoTransformer3DModel",
                dict(
                    in_channels=128,
                    out_channels=128,
                    patch_size=1,
                    patch_size_t=1,
                    num_attention_heads=32,
                    attention_head_dim=64,
                    cross_attention_dim=2048,
                    num_layers=28,
                    activation_fn="gelu-approximate",
                    qk_norm="rms_norm_across_heads",
                    norm_elementwise_affine=False,
                    norm_eps=1e-6,
                    caption_channels=4096,
                    attention_bias=True,
                    attention_out_bias=True,
                ),
            ),
            "vae": (
                "diffusers",
                "AutoencoderKLLTXVideo",
                dict(
                    in_channels=3,
                    out_channels=3,
                    latent_channels=128,
                    block_out_channels=(128, 256, 512, 512),
                    decoder_block_out_channels=(128, 256, 512, 512),
                    layers_per_block=(4, 3, 3, 3, 4),
                    decoder_layers_per_block=(4, 3, 3, 3, 4),
                    spatio_temporal_scaling=(True, True, True, False),
                    decoder_spatio_temporal_scaling=(True, True, True, False),
                    decoder_inject_noise=(False, False, False, False, False),
                    upsample_residual=(False, False, False, False),
                    upsample_factor=(1, 1, 1, 1),
                    patch_size=4,
                    patch_size_t=1,
                    resnet_norm_eps=1e-6,
                    scaling_factor=1.0,
                    encoder_causal=True,
                    decoder_causal=False,
                    timestep_conditioning=False,
                ),
            ),
            "scheduler": (
                "diffusers",
                "FlowMatchEulerDiscreteScheduler",
                dict(**LTX_SHIFT, shift_terminal=0.1),
            ),
            "text_encoder": ("transformers", "T5EncoderModel"),
            "tokenizer": ("transformers", "T5TokenizerFast"),
        },
    ),
    # LTX-2 (19B, audio and video): the 2.0 values of diffusers' conversion script, with the
    # switches diffusers 0.42 added for later LTX-2.x releases written out at their 2.0 setting.
    "ltx-2-19b": (
        "Lightricks/LTX-2 (ltx-2-19b-dev, converted)",
        "diffusers scripts/convert_ltx2_to_diffusers.py (--version 2.0: get_ltx2_transformer_config, "
        "get_ltx2_connectors_config, get_ltx2_video_vae_config, get_ltx2_audio_vae_config, "
        "get_ltx2_vocoder_config); the scheduler's shift values are the pipeline's defaults "
        "(calculate_shift), unverified against the hub",
        "LTX2ImageToVideoPipeline",
        {},
        {
            "transformer": (
                "diffusers",
                "LTX2VideoTransformer3DModel",
                dict(
                    in_channels=128,
                    out_channels=128,
                    patch_size=1,
                    patch_size_t=1,
                    num_attention_heads=32,
                    attention_head_dim=128,
                    cross_attention_dim=4096,
                    vae_scale_factors=(8, 32, 32),
                    pos_embed_max_pos=20,
                    base_height=2048,
                    base_width=2048,
                    gated_attn=False,
                    cross_attn_mod=False,
                    audio_in_channels=128,
                    audio_out_channels=128,
                    audio_patch_size=1,
                    audio_patch_size_t=1,
                    audio_num_attention_heads=32,
                    audio_attention_head_dim=64,
                    audio_cross_attention_dim=2048,
                    audio_scale_factor=4,
                    audio_pos_embed_max_pos=20,
                    audio_sampling_rate=16000,
                    audio_hop_length=160,
                    audio_gated_attn=False,
                    audio_cross_attn_mod=False,
                    num_layers=48,
                    activation_fn="gelu-approximate",
                    qk_norm="rms_norm_across_heads",
                    norm_elementwise_affine=False,
                    norm_eps=1e-6,
                    caption_channels=3840,
                    attention_bias=True,
                    attention_out_bias=True,
                    rope_theta=10000.0,
                    rope_double_precision=True,
                    causal_offset=1,
                    timestep_scale_multiplier=1000,
                    cross_attn_timestep_scale_multiplier=1000,
                    rope_type="split",
                    use_prompt_embeddings=True,
                    perturbed_attn=False,
                    ff_bias=True,
                    audio_ff_bias=True,
                    use_keyframes_abs_pos_embedding=False,
                ),
            ),
            "connectors": (
                "ltx2",
                "LTX2TextConnectors",
                dict(
                    caption_channels=3840,
                    text_proj_in_factor=49,
                    video_connector_num_attention_heads=30,
                    video_connector_attention_head_dim=128,
                    video_connector_num_layers=2,
                    video_connector_num_learnable_registers=128,
                    audio_connector_num_attention_heads=30,
                    audio_connector_attention_head_dim=128,
                    audio_connector_num_layers=2,
                    audio_connector_num_learnable_registers=128,
                    connector_rope_base_seq_len=4096,
                    rope_theta=10000.0,
                    rope_double_precision=True,
                    causal_temporal_positioning=False,
                    rope_type="split",
                    per_modality_projections=False,
                ),
            ),
            "vae": (
                "diffusers",
                "AutoencoderKLLTX2Video",
                dict(
                    in_channels=3,
                    out_channels=3,
                    latent_channels=128,
                    block_out_channels=(256, 512, 1024, 2048),
                    down_block_types=("LTX2VideoDownBlock3D",) * 4,
                    decoder_block_out_channels=(256, 512, 1024),
                    layers_per_block=(4, 6, 6, 2, 2),
                    decoder_layers_per_block=(5, 5, 5, 5),
                    spatio_temporal_scaling=(True, True, True, True),
                    decoder_spatio_temporal_scaling=(True, True, True),
                    decoder_inject_noise=(False, False, False, False),
                    downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
                    upsample_residual=(True, True, True),
                    upsample_factor=(2, 2, 2),
                    timestep_conditioning=False,
                    patch_size=4,
                    patch_size_t=1,
                    resnet_norm_eps=1e-6,
                    encoder_causal=True,
                    decoder_causal=False,
                    encoder_spatial_padding_mode="zeros",
                    decoder_spatial_padding_mode="reflect",
                    spatial_compression_ratio=32,
                    temporal_compression_ratio=8,
                ),
            ),
            "audio_vae": (
                "diffusers",
                "AutoencoderKLLTX2Audio",
                dict(
                    base_channels=128,
                    output_channels=2,
                    ch_mult=(1, 2, 4),
                    num_res_blocks=2,
                    attn_resolutions=None,
                    in_channels=2,
                    resolution=256,
                    latent_channels=8,
                    norm_type="pixel",
                    causality_axis="height",
                    dropout=0.0,
                    mid_block_add_attention=False,
                    sample_rate=16000,
                    mel_hop_length=160,
                    is_causal=True,
                    mel_bins=64,
                    double_z=True,
                ),
            ),
            "vocoder": (
                "ltx2",
                "LTX2Vocoder",
                dict(
                    in_channels=128,
                    hidden_channels=1024,
                    out_channels=2,
                    upsample_kernel_sizes=[16, 15, 8, 4, 4],
                    upsample_factors=[6, 5, 2, 2, 2],
                    resnet_kernel_sizes=[3, 7, 11],
                    resnet_dilations=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
                    leaky_relu_negative_slope=0.1,
                    output_sampling_rate=24000,
                ),
            ),
            "scheduler": ("diffusers", "FlowMatchEulerDiscreteScheduler", LTX_SHIFT),
            "text_encoder": ("transformers", "Gemma3ForConditionalGeneration"),
            "tokenizer": ("transformers", "GemmaTokenizerFast"),
        },
    ),
    # HunyuanVideo 1.5, 480p image-to-video: the transformer's and VAE's diffusers defaults are
    # this checkpoint's (target_size 640 is the 480p bucket base); SigLIP so400m-patch14-384
    # gives the pipeline's 729 image tokens of 1152.
    "hunyuanvideo-1.5-i2v-480p": (
        "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_i2v",
        "shared/models/diffusers-0.42-i2v-families.md (54 x 2048, in 65 = 32 + 32 + 1, SigLIP "
        "1152) and diffusers 0.42's class defaults, written out; flow shift 5.0 and guidance "
        "scale 6.0 unverified",
        "HunyuanVideo15ImageToVideoPipeline",
        {},
        {
            "transformer": (
                "diffusers",
                "HunyuanVideo15Transformer3DModel",
                dict(
                    in_channels=65,
                    out_channels=32,
                    num_attention_heads=16,
                    attention_head_dim=128,
                    num_layers=54,
                    num_refiner_layers=2,
                    mlp_ratio=4.0,
                    patch_size=1,
                    patch_size_t=1,
                    qk_norm="rms_norm",
                    text_embed_dim=3584,
                    text_embed_2_dim=1472,
                    image_embed_dim=1152,
                    rope_theta=256.0,
                    rope_axes_dim=(16, 56, 56),
                    target_size=640,
                    task_type="i2v",
                    use_meanflow=False,
                ),
            ),
            "vae": (
                "diffusers",
                "AutoencoderKLHunyuanVideo15",
                dict(
                    in_channels=3,
                    out_channels=3,
                    latent_channels=32,
                    block_out_channels=(128, 256, 512, 1024, 1024),
                    layers_per_block=2,
                    spatial_compression_ratio=16,
                    temporal_compression_ratio=4,
                    scaling_factor=1.03682,
                ),
            ),
            "scheduler": ("diffusers", "FlowMatchEulerDiscreteScheduler", dict(shift=5.0)),
            "guider": ("diffusers", "ClassifierFreeGuidance", dict(guidance_scale=6.0)),
            "image_encoder": ("transformers", "SiglipVisionModel", SIGLIP_SO400M),
            "feature_extractor": ("transformers", "SiglipImageProcessor", SIGLIP_PROCESSOR),
            "text_encoder": ("transformers", "Qwen2_5_VLTextModel"),
            "tokenizer": ("transformers", "Qwen2Tokenizer"),
            "text_encoder_2": ("transformers", "T5EncoderModel"),
            "tokenizer_2": ("transformers", "ByT5Tokenizer"),
        },
    ),
    "hunyuanvideo-i2v": (
        "hunyuanvideo-community/HunyuanVideo-I2V (tencent/HunyuanVideo-I2V, converted)",
        "diffusers scripts/convert_hunyuan_video_to_diffusers.py (--transformer_type HYVideo-T/2-I2V-33ch)",
        "HunyuanVideoImageToVideoPipeline",
        {},
        {
            "transformer": (
                "diffusers",
                "HunyuanVideoTransformer3DModel",
                dict(
                    in_channels=33,
                    out_channels=16,
                    num_attention_heads=24,
                    attention_head_dim=128,
                    num_layers=20,
                    num_single_layers=40,
                    num_refiner_layers=2,
                    mlp_ratio=4.0,
                    patch_size=2,
                    patch_size_t=1,
                    qk_norm="rms_norm",
                    guidance_embeds=False,
                    text_embed_dim=4096,
                    pooled_projection_dim=768,
                    rope_theta=256.0,
                    rope_axes_dim=(16, 56, 56),
                    image_condition_type="latent_concat",
                ),
            ),
            "vae": (
                "diffusers",
                "AutoencoderKLHunyuanVideo",
                dict(
                    in_channels=3,
                    out_channels=3,
                    latent_channels=16,
                    block_out_channels=(128, 256, 512, 512),
                    layers_per_block=2,
                    spatial_compression_ratio=8,
                    temporal_compression_ratio=4,
                    scaling_factor=0.476986,
                ),
            ),
            "scheduler": ("diffusers", "FlowMatchEulerDiscreteScheduler", dict(shift=7.0)),
            "text_encoder": ("transformers", "LlavaForConditionalGeneration"),
            "tokenizer": ("transformers", "LlamaTokenizerFast"),
            "text_encoder_2": ("transformers", "CLIPTextModel"),
            "tokenizer_2": ("transformers", "CLIPTokenizer"),
            "image_processor": ("transformers", "CLIPImageProcessor"),
        },
    ),
    "svd-xt": (
        "stabilityai/stable-video-diffusion-img2vid-xt",
        "the model card and diffusers' UNetSpatioTemporalConditionModel / AutoencoderKLTemporalDecoder "
        "(their defaults are SVD's published values; sample_size 96, num_frames 25 for XT)",
        "StableVideoDiffusionPipeline",
        {},
        {
            "unet": (
                "diffusers",
                "UNetSpatioTemporalConditionModel",
                dict(
                    sample_size=96,
                    in_channels=8,
                    out_channels=4,
                    block_out_channels=(320, 640, 1280, 1280),
                    addition_time_embed_dim=256,
                    projection_class_embeddings_input_dim=768,
                    layers_per_block=2,
                    cross_attention_dim=1024,
                    transformer_layers_per_block=1,
                    num_attention_heads=(5, 10, 20, 20),
                    num_frames=25,
                ),
            ),
            "vae": (
                "diffusers",
                "AutoencoderKLTemporalDecoder",
                dict(
                    in_channels=3,
                    out_channels=3,
                    down_block_types=("DownEncoderBlock2D",) * 4,
                    block_out_channels=(128, 256, 512, 512),
                    layers_per_block=2,
                    latent_channels=4,
                    sample_size=768,
                    scaling_factor=0.18215,
                ),
            ),
            "scheduler": (
                "diffusers",
                "EulerDiscreteScheduler",
                dict(
                    beta_schedule="scaled_linear",
                    beta_start=0.00085,
                    beta_end=0.012,
                    interpolation_type="linear",
                    num_train_timesteps=1000,
                    prediction_type="v_prediction",
                    sigma_max=700.0,
                    sigma_min=0.002,
                    steps_offset=1,
                    timestep_spacing="leading",
                    timestep_type="continuous",
                    use_karras_sigmas=True,
                ),
            ),
            "image_encoder": ("transformers", "CLIPVisionModelWithProjection", CLIP_VIT_H),
            "feature_extractor": ("transformers", "CLIPImageProcessor", CLIP_PROCESSOR),
        },
    ),
    "opensora-1.2": (
        "hpcai-tech/OpenSora-STDiT-v3 + hpcai-tech/OpenSora-VAE-v1.2",
        "shared/models/opensora-dynamicrafter.md (hub config.json: depth 28, hidden 1152, heads 16, "
        "patch (1,2,2), caption 4096 x 300; VAE scale/shift), the classes' defaults",
        "OpenSoraPipeline",
        {},
        {
            "transformer": ("anti_i2v.models.opensora.stdit3", "STDiT3Model", {}),
            "vae": ("anti_i2v.models.opensora.vae", "OpenSoraVAE", {}),
            "scheduler": (
                "diffusers",
                "FlowMatchEulerDiscreteScheduler",
                dict(num_train_timesteps=1000, shift=1.0),
            ),
        },
        "anti-i2v convert opensora-1.2 DIR --out PIPELINE",
    ),
    **{
        f"dynamicrafter-{size}": (
            f"Doubiiu/DynamiCrafter_{size}",
            "shared/models/opensora-dynamicrafter.md (the official YAML's UNet, Resampler, "
            "OpenCLIP ViT-H-14 and SD VAE; image_size, base_scale and default_fs per size)",
            "DynamiCrafterPipeline",
            dict(frame_stride=fs, base_scale=base, height=hw[0], width=hw[1], num_frames=16),
            {
                "unet": ("anti_i2v.models.dynamicrafter.unet", "DynamiCrafterUNet", {}),
                "image_proj_model": ("anti_i2v.models.dynamicrafter.image", "Resampler", {}),
                "image_encoder": (
                    "anti_i2v.models.dynamicrafter.image",
                    "OpenCLIPVisionTower",
                    {},
                ),
                "vae": (
                    "diffusers",
                    "AutoencoderKL",
                    dict(
                        in_channels=3,
                        out_channels=3,
                        down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(128, 256, 512, 512),
                        layers_per_block=2,
                        latent_channels=4,
                        norm_num_groups=32,
                        sample_size=512,
                        scaling_factor=0.18215,
                    ),
                ),
                "scheduler": ("diffusers", "DDIMScheduler", DDIM_CONFIG),
            },
            f"anti-i2v convert dynamicrafter CKPT --size {size} --out PIPELINE",
        )
        for size, fs, base, hw in ((512, 24, 0.7, (320, 512)), (1024, 10, 0.3, (576, 1024)))
    },
}


def component_class(library: str, cls: str) -> type:
    """A component's class: diffusers', or one of this toolkit's own model modules."""
    if library == "diffusers":
        return getattr(diffusers, cls)
    if library in PIPELINE_MODULES:  # a component diffusers keeps beside its pipeline
        return getattr(importlib.import_module(f"diffusers.pipelines.{library}"), cls)
    return getattr(importlib.import_module(library), cls)


def write(name: str) -> Path:
    hub, source, pipeline, extra, components, *convert = MODELS[name]
    folder = HERE / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    index = {"_class_name": pipeline, "_diffusers_version": diffusers.__version__, **extra}
    for comp, spec in components.items():
        lib, cls = spec[0], spec[1]
        index[comp] = [lib, cls]
        if len(spec) == 2:
            continue  # listed as published, never loaded here (no folder)
        sub = folder / comp
        if cls == "CLIPVisionModelWithProjection":
            CLIPVisionConfig(**spec[2]).save_pretrained(sub)
        elif cls == "CLIPImageProcessor":
            CLIPImageProcessor(**spec[2]).save_pretrained(sub)
        elif cls == "SiglipVisionModel":
            SiglipVisionConfig(**spec[2]).save_pretrained(sub)
        elif cls == "SiglipImageProcessor":
            SiglipImageProcessor(**spec[2]).save_pretrained(sub)
        else:  # models are built on the meta device: configs only, no memory for weights
            with init_empty_weights():
                component_class(lib, cls).from_config(dict(spec[2])).save_config(sub)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    weights = (
        f"weights: none here; download the official checkpoint and run `{convert[0]}`, then pass PIPELINE\n"
        f"convert: {convert[0]}\n"
        if convert
        else "weights: none here; download them (`hf download <hub id> --local-dir DIR`) and pass DIR\n"
    )
    (folder / "SOURCE").write_text(
        f"hub id: {hub}\nvalues from: {source}\n"
        "revision: not pinned (the hub is unreachable where these were written)\n" + weights
    )
    return folder


if __name__ == "__main__":
    for name in MODELS:
        print("wrote", write(name))
