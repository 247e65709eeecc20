"""Train the mini world's models: VAE, then transformer, then identity encoder.

The result is a standard diffusers CogVideoX image-to-video pipeline folder (safetensors,
`model_index.json`, a saved null prompt embedding in place of a text encoder) plus the identity
encoder, so the toolkit loads it through exactly the path a real CogVideoX-5B-I2V takes.
Each stage writes its output atomically; re-running skips stages whose output exists.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKLCogVideoX,
    CogVideoXDDIMScheduler,
    CogVideoXImageToVideoPipeline,
    CogVideoXTransformer3DModel,
)
from rich.console import Console
from safetensors.torch import save_file

from anti_i2v.core.common import atomic_dir, write_text_atomic
from anti_i2v.world.dataset import identity_seeds
from anti_i2v.world.identity import IdentityEncoder
from anti_i2v.world.render import FRAMES
from anti_i2v.world.robust import robust_augment
from anti_i2v.world.train_svd import train_mini_svd
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

console = Console(stderr=True)
PROMPT_EMBEDS = "prompt_embeds.safetensors"  # the null text conditioning, saved beside the pipeline
TEXT_TOKENS, TEXT_DIM = 8, 32


def mini_vae(world: str = "v1") -> AutoencoderKLCogVideoX:
    """The mini CogVideoX VAE: 4x spatial, 4x temporal compression, 8 latent channels (v2: wider,
    for textured photo-like frames)."""
    size = world_size(world)
    return AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * 3,
        up_block_types=("CogVideoXUpBlock3D",) * 3,
        block_out_channels=(16, 32, 32) if world == "v1" else (16, 32, 64),
        latent_channels=8,
        layers_per_block=1,
        norm_num_groups=8,
        temporal_compression_ratio=4,
        sample_height=size,
        sample_width=size,
    )


def mini_transformer(world: str = "v1") -> CogVideoXTransformer3DModel:
    """The mini CogVideoX-I2V transformer: v1 8 blocks of width 128 on 8x8 tokens per latent
    frame; v2 12 blocks of width 192 on 12x12 tokens (96x96 frames)."""
    size = world_size(world)
    return CogVideoXTransformer3DModel(
        num_attention_heads=4,
        attention_head_dim=32 if world == "v1" else 48,
        in_channels=16,  # noisy latent + image latent, as in CogVideoX-I2V
        out_channels=8,
        time_embed_dim=128,
        text_embed_dim=TEXT_DIM,
        num_layers=8 if world == "v1" else 12,
        sample_width=size // 4,
        sample_height=size // 4,
        sample_frames=FRAMES,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=TEXT_TOKENS,
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=True,
    )


def mini_scheduler() -> CogVideoXDDIMScheduler:
    """CogVideoX-5B's scheduler settings (v-prediction, zero terminal SNR, trailing steps)."""
    return CogVideoXDDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        set_alpha_to_one=True,
        snr_shift_scale=1.0,
        steps_offset=0,
        timestep_spacing="trailing",
    )


def train_vae(
    cfg: TrainConfig, device: str, checkpoints: tuple[Path | None, int] = (None, 0)
) -> AutoencoderKLCogVideoX:
    """Stage 1: reconstruct rendered clips."""
    torch.manual_seed(cfg.seed)
    seeds = identity_seeds(cfg.vae_videos, cfg.seed, "train")
    data = to_video(render_clips(seeds, world=cfg.world))
    return fit_vae(
        mini_vae(cfg.world),
        data,
        cfg.vae_steps,
        cfg.vae_batch,
        2 * cfg.lr,
        cfg.seed,
        "vae",
        device,
        checkpoints,
    )


@torch.no_grad()
def encode_clips(
    vae: AutoencoderKLCogVideoX, clips: torch.Tensor, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled video latents `(N, f, C, h, w)` and first-frame image latents `(N, 1, C, h, w)`."""
    vae = vae.to(device)
    sf = vae.config.scaling_factor
    videos, images = [], []
    for i in range(0, len(clips), 8):
        x = to_video(clips[i : i + 8]).to(device)
        videos.append(vae.encode(x).latent_dist.mode().permute(0, 2, 1, 3, 4).cpu() * sf)
        images.append(vae.encode(x[:, :, :1]).latent_dist.mode().permute(0, 2, 1, 3, 4).cpu() * sf)
    vae.cpu()
    return torch.cat(videos), torch.cat(images)


def train_transformer(
    cfg: TrainConfig,
    vae: AutoencoderKLCogVideoX,
    device: str,
    checkpoints: tuple[Path | None, int] = (None, 0),
):
    """Stage 2: v-prediction on VAE latents, conditioned on the first frame's latent."""
    torch.manual_seed(cfg.seed + 1)
    clips = render_clips(identity_seeds(cfg.dit_videos, cfg.seed + 1, "train"), world=cfg.world)
    latents, image_latents = encode_clips(vae, clips, device)
    transformer = mini_transformer(cfg.world).to(device).train()
    size = world_size(cfg.world)
    scheduler = mini_scheduler()
    pipe = CogVideoXImageToVideoPipeline(
        tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=scheduler
    )
    rotary = pipe._prepare_rotary_positional_embeddings(
        size, size, latents.shape[1], torch.device(device)
    )
    null = (
        torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=torch.Generator().manual_seed(cfg.seed))
        * 0.5
    )
    opt = torch.optim.AdamW(transformer.parameters(), lr=cfg.lr * 0.5, weight_decay=0.01)
    alphas = scheduler.alphas_cumprod.float().to(device)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    ckpt = StageCheckpoint(checkpoints, "transformer", {"dit": transformer}, opt, gen)
    started = time.time()
    for step in range(ckpt.resume(), cfg.dit_steps + 1):
        cosine_lr(opt, step, cfg.dit_steps, cfg.lr * 0.5)
        idx = torch.randint(len(latents), (cfg.dit_batch,), generator=gen)
        x0 = latents[idx].to(device)
        cond = torch.cat([image_latents[idx], torch.zeros_like(x0[:, 1:])], dim=1).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=gen).to(
            device
        )
        noise = torch.randn(x0.shape, generator=gen).to(device)
        a = alphas[t].view(-1, 1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * x0  # v-prediction target
        pred = transformer(
            hidden_states=torch.cat([noisy, cond], dim=2),
            encoder_hidden_states=null.to(device).expand(len(idx), -1, -1),
            timestep=t,
            image_rotary_emb=rotary,
            return_dict=False,
        )[0]
        loss = F.mse_loss(pred, target)
        update(opt, loss, transformer.parameters())
        log_step("transformer", step, cfg.dit_steps, loss.item(), started)
        ckpt.step(step, cfg.dit_steps)
    pipe.transformer = transformer.cpu().eval()
    return pipe, null


def train_identity_encoder(
    cfg: TrainConfig,
    device: str,
    robust: bool = True,
    checkpoints: tuple[Path | None, int] = (None, 0),
) -> IdentityEncoder:
    """Stage 3: a normalised-softmax (CosFace) classifier over training identities.

    With `robust` (v2, the default judge) every training view goes through a face recogniser's
    augmentations (`anti_i2v.world.robust`: colour fields, JPEG, noise, blur, rescales), so identity
    rests on shape and layout; v1 (`robust=False`) sees only light blur and noise.
    """
    torch.manual_seed(cfg.seed + 2)
    seeds = identity_seeds(cfg.id_identities, cfg.seed + 2, "train")
    clips = render_clips(seeds, cfg.id_clips, cfg.world)  # (I*K, F, H, W, 3)
    size = world_size(cfg.world)
    frames = clips.reshape(len(seeds), -1, size, size, 3)  # (I, K*F, H, W, 3)
    width = 24 if cfg.world == "v1" else 32
    model = IdentityEncoder(size=size, width=width, world=cfg.world).to(device).train()
    classes = (
        F.normalize(torch.randn(len(seeds), model.config["dim"]), dim=-1)
        .to(device)
        .requires_grad_()
    )
    opt = torch.optim.AdamW([*model.parameters(), classes], lr=cfg.lr * 2, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    started = time.time()
    steps = cfg.id_robust_steps if robust else cfg.id_steps
    augment = partial(robust_augment, ab=cfg.id_colour_field) if robust else _augment
    stage = "identity" if robust else "identity-v1"
    parts = {"encoder": model, "classes": classes}
    ckpt = StageCheckpoint(checkpoints, stage, parts, opt, gen)
    for step in range(ckpt.resume(), steps + 1):
        cosine_lr(opt, step, steps, cfg.lr * 2)
        ids = torch.randint(len(seeds), (cfg.id_batch,), generator=gen)
        which = torch.randint(frames.shape[1], (cfg.id_batch,), generator=gen)
        x = frames[ids, which].permute(0, 3, 1, 2).float().div(255).to(device)
        x = augment(x.cpu(), gen).to(device)
        logits = model(x) @ F.normalize(classes, dim=-1).T
        margin = F.one_hot(ids, len(seeds)).to(device) * 0.2
        loss = F.cross_entropy(16.0 * (logits - margin), ids.to(device))
        update(opt, loss, None, clip=None)
        log_step("identity", step, steps, loss.item(), started)
        ckpt.step(step, steps)
    return model.cpu().eval()


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur, noise and brightness jitter: generated frames are softer and noisier than renders."""
    n = len(x)
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mix = torch.rand(n, 1, 1, 1, generator=gen).to(x)
    x = x * (1 - mix) + blurred * mix
    x = x * (1 + 0.1 * (torch.rand(n, 1, 1, 1, generator=gen).to(x) - 0.5))
    x = x + 0.03 * torch.rand(n, 1, 1, 1, generator=gen).to(x) * torch.randn(
        x.shape, generator=gen
    ).to(x)
    return x.clamp(0, 1)


def save_pipeline(pipe: CogVideoXImageToVideoPipeline, null: torch.Tensor, out: Path) -> None:
    """Write the pipeline folder atomically (a temporary folder renamed into place)."""
    with atomic_dir(out) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        save_file({"prompt_embeds": null.contiguous()}, str(tmp / PROMPT_EMBEDS))


MODELS = ("cogvideox", "identity", "identity-v1", "svd")
CHECKPOINTS = ".checkpoints"  # inside the training folder
# identity (v2, robust: the default judge) and identity-v1 (the first judge, which reads colour).
IDENTITY_FOLDERS = {"identity": "mini-identity", "identity-v1": "mini-identity-v1"}


def train_all(
    out: Path, cfg: TrainConfig, device: str | None = None, models: tuple[str, ...] = MODELS
) -> dict[str, float]:
    """Train `models` into `out/` (each folder written atomically, skipped when present); seconds per stage."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "train_config.json", json.dumps(asdict(cfg), indent=2))
    # Each stage checkpoints here every `checkpoint_every` steps, and a finished VAE waits here
    # for its transformer: an interrupted `world train` resumes where it stopped.
    checkpoints = (out / CHECKPOINTS, cfg.checkpoint_every)
    timings: dict[str, float] = {}
    pipe_dir = out / "mini-cogvideox-i2v"
    if "cogvideox" in models and not (pipe_dir / "model_index.json").exists():
        vae = waiting_vae(
            checkpoints,
            "vae",
            AutoencoderKLCogVideoX.from_pretrained,
            lambda: train_vae(cfg, device, checkpoints),
            timings,
        )
        t = time.time()
        pipe, null = train_transformer(cfg, vae, device, checkpoints)
        timings["transformer_s"] = time.time() - t
        pipe.transformer.to(getattr(torch, cfg.dit_store_dtype))
        save_pipeline(pipe, null, pipe_dir)
        drop_checkpoint(checkpoints, "transformer")
        release_vae(checkpoints, "vae")
    for name, robust in (("identity", True), ("identity-v1", False)):
        id_dir = out / IDENTITY_FOLDERS[name]
        if name in models and not (id_dir / "identity_encoder.safetensors").exists():
            t = time.time()
            enc = train_identity_encoder(cfg, device, robust, checkpoints)
            timings[f"{name}_s"] = time.time() - t
            with atomic_dir(id_dir) as tmp:
                enc.save(tmp)
            drop_checkpoint(checkpoints, name)
    if "svd" in models:
        timings.update(train_mini_svd(out, cfg, device, checkpoints))
    return timings
