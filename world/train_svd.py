"""Train `mini-svd`, the mini world's second backbone: a Stable-Video-Diffusion-style UNet.

Same world, same split and the same recipe as `mini-cogvideox` (VAE first, then the denoiser),
but the other architecture family, so that cloaks can be tested for transfer DiT <-> UNet.
The result is a standard diffusers `StableVideoDiffusionPipeline` folder (safetensors), loaded
through the `svd` adapter exactly as stabilityai/stable-video-diffusion-img2vid is.

What differs from CogVideoX, as in the real SVD: the VAE works frame by frame (SVD's encoder is
Stable Diffusion's `AutoencoderKL` encoder; we keep its per-frame decoder too, because SVD's
temporal decoder fixes GroupNorm at 32 groups, which at this width is an instance norm that
stalled training on 2 cores, and `StableVideoDiffusionPipeline` decodes with either); the image enters twice, as its VAE latent (noise-augmented, unscaled)
concatenated on channels and as one CLIP image token for cross-attention (the small CLIP vision
tower is trained together with the UNet); noise is EDM/Karras (sigma), the UNet predicts v.

`world train --world v2 --models svd` trains `mini-svd-v2` on the v2 world's 96x96 portraits the
same way: 12x12 latents, the same three levels, a narrower first level so that the v2 models stay
under 60 MB together. Both stages checkpoint and resume, and the finished VAE waits in
`.checkpoints/svd-vae/` for its UNet, as the CogVideoX VAE does for its transformer.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableVideoDiffusionPipeline,
    UNetSpatioTemporalConditionModel,
)
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from anti_i2v.core.common import atomic_dir
from anti_i2v.models.backbones.svd import FPS, MOTION_BUCKET, NOISE_AUG
from anti_i2v.models.backbones.wan import clip_pixels
from anti_i2v.world.dataset import identity_seeds
from anti_i2v.world.render import FRAMES, SIZE
from anti_i2v.world.training import (
    StageCheckpoint,
    TrainConfig,
    cosine_lr,
    drop_checkpoint,
    fit_vae,
    log_step,
    release_vae,
    render_clips,
    to_video,
    update,
    waiting_vae,
    world_size,
)

P_MEAN, P_STD = 0.7, 1.6  # log-normal training sigmas, SVD's EDM setting


def mini_svd_vae(world: str = "v1") -> AutoencoderKL:
    """Per-frame VAE: 8x spatial compression (as SVD's), 8 latent channels, the world's frames."""
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        latent_channels=8,
        norm_num_groups=8,
        sample_size=world_size(world),
    )


def mini_unet(world: str = "v1") -> UNetSpatioTemporalConditionModel:
    """3 down blocks, a mid block, 3 up blocks (7 in all) on 8x8 latents (v2: 12x12), 9 frames."""
    # SVD has no temporal compression: 9 latent frames of 8x8 cost what CogVideoX's 3 of 16x16 do.
    # v2's first level is 32 wide (SVD's GroupNorm takes multiples of 32): 10 MB of weights
    # instead of 15, which keeps the v2 models under 60 MB together.
    return UNetSpatioTemporalConditionModel(
        sample_size=world_size(world) // 8,
        in_channels=16,
        out_channels=8,
        down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 2 + ("DownBlockSpatioTemporal",),
        up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 2,
        block_out_channels=(64, 64, 64) if world == "v1" else (32, 64, 64),
        layers_per_block=1,
        num_attention_heads=(4, 4, 4),
        cross_attention_dim=32,
        addition_time_embed_dim=32,
        projection_class_embeddings_input_dim=96,
        num_frames=FRAMES,
    )


def mini_clip(world: str = "v1") -> tuple[CLIPVisionModelWithProjection, CLIPImageProcessor]:
    """A 2-layer CLIP vision tower on an 8x8 grid of patches of the photo, 32-d image embedding."""
    size = world_size(world)
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=64,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=size,
            intermediate_size=128,
            patch_size=size // 8,
        )
    )
    return encoder, CLIPImageProcessor(crop_size=size, size={"shortest_edge": size})


def svd_scheduler() -> EulerDiscreteScheduler:
    """SVD's own scheduler settings (Karras sigmas, continuous timesteps, v-prediction)."""
    return EulerDiscreteScheduler(
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


def train_svd_vae(
    cfg: TrainConfig, device: str, checkpoints: tuple[Path | None, int] = (None, 0)
) -> AutoencoderKL:
    """Stage 1: reconstruct rendered frames, a batch of single frames per step."""
    torch.manual_seed(cfg.seed + 10)
    size = world_size(cfg.world)
    clips = render_clips(identity_seeds(cfg.vae_videos, cfg.seed, "train"), world=cfg.world)
    # Every frame of every clip
    data = to_video(clips).permute(0, 2, 1, 3, 4).reshape(-1, 3, size, size)
    return fit_vae(
        mini_svd_vae(cfg.world),
        data,
        cfg.svd_vae_steps,
        cfg.svd_vae_batch,
        2 * cfg.lr,
        cfg.seed + 10,
        "svd-vae",
        device,
        checkpoints,
    )


@torch.no_grad()
def encode_svd_clips(vae: AutoencoderKL, clips: torch.Tensor, device: str, size: int = SIZE):
    """Scaled video latents `(N, F, C, h, w)`, unscaled noise-augmented first-frame latents `(N, C, h, w)`
    and the first frames in [0, 1] `(N, 3, H, W)` (for the CLIP tower)."""
    vae = vae.to(device)
    sf = vae.config.scaling_factor
    aug = torch.Generator().manual_seed(0)
    videos, images, firsts = [], [], []
    for i in range(0, len(clips), 8):
        x = to_video(clips[i : i + 8]).to(device).permute(0, 2, 1, 3, 4)  # (n, F, 3, H, W)
        n = len(x)
        z = vae.encode(x.reshape(-1, 3, size, size)).latent_dist.mode() * sf
        videos.append(z.reshape(n, FRAMES, *z.shape[1:]).cpu())
        first = x[:, 0]
        noise = torch.randn(first.shape, generator=aug).to(first)
        images.append(vae.encode(first + NOISE_AUG * noise).latent_dist.mode().cpu())
        firsts.append(((first + 1) / 2).cpu())
    vae.cpu()
    return torch.cat(videos), torch.cat(images), torch.cat(firsts)


def train_unet(
    cfg: TrainConfig,
    vae: AutoencoderKL,
    device: str,
    checkpoints: tuple[Path | None, int] = (None, 0),
) -> StableVideoDiffusionPipeline:
    """Stage 2: EDM-weighted v-prediction on VAE latents, conditioned on the first frame."""
    torch.manual_seed(cfg.seed + 11)
    size = world_size(cfg.world)
    clips = render_clips(identity_seeds(cfg.dit_videos, cfg.seed + 1, "train"), world=cfg.world)
    latents, image_latents, firsts = encode_svd_clips(vae, clips, device, size)
    unet = mini_unet(cfg.world).to(device).train()
    encoder, processor = mini_clip(cfg.world)
    encoder = encoder.to(device).train()
    params = [*unet.parameters(), *encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr * 0.5, weight_decay=0.01)
    time_ids = torch.tensor([[FPS - 1, MOTION_BUCKET, NOISE_AUG]], device=device)
    gen = torch.Generator().manual_seed(cfg.seed + 11)
    ckpt = StageCheckpoint(checkpoints, "svd-unet", {"unet": unet, "clip": encoder}, opt, gen)
    started = time.time()
    for step in range(ckpt.resume(), cfg.svd_unet_steps + 1):
        cosine_lr(opt, step, cfg.svd_unet_steps, cfg.lr * 0.5)
        idx = torch.randint(len(latents), (cfg.svd_batch,), generator=gen)
        x0 = latents[idx].to(device)
        b = len(idx)
        sigma = (torch.randn(b, generator=gen) * P_STD + P_MEAN).exp().clamp(0.002, 700).to(device)
        s = sigma.view(-1, 1, 1, 1, 1)
        noisy = x0 + s * torch.randn(x0.shape, generator=gen).to(device)
        cond = image_latents[idx].to(device).unsqueeze(1).expand(-1, FRAMES, -1, -1, -1)
        embeds = encoder(
            pixel_values=clip_pixels(firsts[idx].to(device), size, processor)
        ).image_embeds
        v = unet(
            torch.cat([noisy / (s**2 + 1).sqrt(), cond], dim=2),
            0.25 * sigma.log(),
            embeds.unsqueeze(1),
            added_time_ids=time_ids.expand(b, -1),
            return_dict=False,
        )[0]
        # The same pre-conditioning as sampling
        pred = v * (-s / (s**2 + 1).sqrt()) + noisy / (s**2 + 1)
        weight = (s**2 + 1) / s**2  # EDM's loss weight with sigma_data = 1
        loss = (weight * (pred - x0) ** 2).mean()  # equals the MSE of v
        update(opt, loss, params)
        log_step("svd unet", step, cfg.svd_unet_steps, loss.item(), started)
        ckpt.step(step, cfg.svd_unet_steps)
    return StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=encoder.cpu().eval(),
        unet=unet.cpu().eval(),
        scheduler=svd_scheduler(),
        feature_extractor=processor,
    )


def train_mini_svd(
    out: Path, cfg: TrainConfig, device: str, checkpoints: tuple[Path | None, int] = (None, 0)
) -> dict[str, float]:
    """Train `mini-svd` into `out/mini-svd-i2v` (atomically); returns seconds per stage.

    `checkpoints`: (folder, every) for each stage's `StageCheckpoint`; the finished VAE is also
    kept in `folder/svd-vae/` until the pipeline is saved, so the UNet stage can start from it.
    """
    target = out / "mini-svd-i2v"
    if (target / "model_index.json").exists():
        return {}
    timings: dict[str, float] = {}
    vae = waiting_vae(
        checkpoints,
        "svd-vae",
        AutoencoderKL.from_pretrained,
        lambda: train_svd_vae(cfg, device, checkpoints),
        timings,
    )
    t = time.time()
    pipe = train_unet(cfg, vae, device, checkpoints)
    timings["svd_unet_s"] = time.time() - t
    with atomic_dir(target) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    drop_checkpoint(checkpoints, "svd-unet")
    release_vae(checkpoints, "svd-vae")
    return timings
