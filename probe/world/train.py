"""Train the mini world's models: VAE, then transformer, then identity encoder.

The result is a standard diffusers CogVideoX image-to-video pipeline folder (safetensors,
`model_index.json`, a saved null prompt embedding in place of a text encoder) plus the identity
encoder, so the toolkit loads it through exactly the path a real CogVideoX-5B-I2V takes.
Each stage writes its output atomically; re-running skips stages whose output exists.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
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

from probe.common import atomic_dir, write_text_atomic
from probe.world.identity import IdentityEncoder
from probe.world.render import (
    FRAMES,
    SIZE,
    identity_seeds,
    render_video,
    sample_identity,
    sample_motion,
)

console = Console(stderr=True)
PROMPT_EMBEDS = "prompt_embeds.safetensors"  # the null text conditioning, saved beside the pipeline
TEXT_TOKENS, TEXT_DIM = 8, 32


@dataclass(frozen=True)
class TrainConfig:
    """Settings of `anti-i2v world train`; the defaults reproduce the shipped models."""

    seed: int = 0
    vae_videos: int = 512
    vae_steps: int = 1000
    vae_batch: int = 4
    dit_videos: int = 1536
    dit_steps: int = 2500
    dit_batch: int = 16
    id_identities: int = 384
    id_clips: int = 3
    id_steps: int = 500
    id_batch: int = 48
    svd_vae_steps: int = 1200  # mini-svd (train_svd.py)
    svd_vae_batch: int = 16  # single frames: its VAE works frame by frame
    svd_unet_steps: int = 1000
    svd_batch: int = 8
    lr: float = 1e-3


def mini_vae() -> AutoencoderKLCogVideoX:
    """The mini CogVideoX VAE: 4x spatial, 4x temporal compression, 8 latent channels."""
    return AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * 3,
        up_block_types=("CogVideoXUpBlock3D",) * 3,
        block_out_channels=(16, 32, 32),
        latent_channels=8,
        layers_per_block=1,
        norm_num_groups=8,
        temporal_compression_ratio=4,
        sample_height=SIZE,
        sample_width=SIZE,
    )


def mini_transformer() -> CogVideoXTransformer3DModel:
    """The mini CogVideoX-I2V transformer: 8 blocks, 8x8 tokens per latent frame."""
    return CogVideoXTransformer3DModel(
        num_attention_heads=4,
        attention_head_dim=32,
        in_channels=16,  # noisy latent + image latent, as in CogVideoX-I2V
        out_channels=8,
        time_embed_dim=128,
        text_embed_dim=TEXT_DIM,
        num_layers=8,
        sample_width=SIZE // 4,
        sample_height=SIZE // 4,
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


def render_clips(seeds: list[int], motions_per_identity: int = 1) -> torch.Tensor:
    """Render clips as a uint8 tensor `(N, F, H, W, 3)`; identity i uses motion seeds i*k..i*k+k-1."""
    clips = [
        render_video(sample_identity(s), sample_motion(s * 7919 + m))[0]
        for s in seeds
        for m in range(motions_per_identity)
    ]
    return torch.from_numpy(np.stack(clips))


def to_video(clips: torch.Tensor) -> torch.Tensor:
    """uint8 `(N, F, H, W, 3)` -> float `(N, 3, F, H, W)` in [-1, 1] (the VAE's input)."""
    return clips.permute(0, 4, 1, 2, 3).float() / 127.5 - 1


def _cosine_lr(opt: torch.optim.Optimizer, step: int, total: int, lr: float) -> None:
    warm = max(1, total // 20)
    scale = (
        step / warm
        if step < warm
        else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    )
    for group in opt.param_groups:
        group["lr"] = lr * max(scale, 0.02)


def _update(
    opt: torch.optim.Optimizer, loss: torch.Tensor, params, clip: float | None = 1.0
) -> None:
    """One optimiser step on `loss`, gradients of `params` clipped to norm `clip` (None: unclipped)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()


def _log(stage: str, step: int, total: int, loss: float, started: float) -> None:
    if step % max(1, total // 10) == 0 or step == total:
        console.log(f"{stage} step {step}/{total} loss {loss:.4f} ({time.time() - started:.0f}s)")


def fit_vae(
    vae: torch.nn.Module,
    data: torch.Tensor,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    stage: str,
    device: str,
) -> torch.nn.Module:
    """Reconstruction training shared by the mini VAEs (L1 + MSE, a light KL); sets `scaling_factor`."""
    vae = vae.to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    started = time.time()
    for step in range(1, steps + 1):
        _cosine_lr(opt, step, steps, lr)
        x = data[torch.randint(len(data), (batch,), generator=gen)].to(device)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + 1e-6 * post.kl().mean()
        _update(opt, loss, vae.parameters())
        _log(stage, step, steps, loss.item(), started)
    vae.eval()
    with torch.no_grad():  # unit-variance latents, as diffusers' scaling_factor intends
        z = torch.cat(
            [vae.encode(data[i : i + 8].to(device)).latent_dist.mode() for i in range(0, 64, 8)]
        )
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    return vae.cpu()


def train_vae(cfg: TrainConfig, device: str) -> AutoencoderKLCogVideoX:
    """Stage 1: reconstruct rendered clips."""
    torch.manual_seed(cfg.seed)
    data = to_video(render_clips(identity_seeds(cfg.vae_videos, cfg.seed, "train")))
    return fit_vae(
        mini_vae(), data, cfg.vae_steps, cfg.vae_batch, 2 * cfg.lr, cfg.seed, "vae", device
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


def train_transformer(cfg: TrainConfig, vae: AutoencoderKLCogVideoX, device: str):
    """Stage 2: v-prediction on VAE latents, conditioned on the first frame's latent."""
    torch.manual_seed(cfg.seed + 1)
    clips = render_clips(identity_seeds(cfg.dit_videos, cfg.seed + 1, "train"))
    latents, image_latents = encode_clips(vae, clips, device)
    transformer = mini_transformer().to(device).train()
    scheduler = mini_scheduler()
    pipe = CogVideoXImageToVideoPipeline(
        tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=scheduler
    )
    rotary = pipe._prepare_rotary_positional_embeddings(
        SIZE, SIZE, latents.shape[1], torch.device(device)
    )
    null = (
        torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=torch.Generator().manual_seed(cfg.seed))
        * 0.5
    )
    opt = torch.optim.AdamW(transformer.parameters(), lr=cfg.lr * 0.5, weight_decay=0.01)
    alphas = scheduler.alphas_cumprod.float().to(device)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    started = time.time()
    for step in range(1, cfg.dit_steps + 1):
        _cosine_lr(opt, step, cfg.dit_steps, cfg.lr * 0.5)
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
        _update(opt, loss, transformer.parameters())
        _log("transformer", step, cfg.dit_steps, loss.item(), started)
    pipe.transformer = transformer.cpu().eval()
    return pipe, null


def train_identity_encoder(cfg: TrainConfig, device: str) -> IdentityEncoder:
    """Stage 3: a normalised-softmax (CosFace) classifier over training identities."""
    torch.manual_seed(cfg.seed + 2)
    seeds = identity_seeds(cfg.id_identities, cfg.seed + 2, "train")
    clips = render_clips(seeds, cfg.id_clips)  # (I*K, F, H, W, 3)
    frames = clips.reshape(len(seeds), -1, SIZE, SIZE, 3)  # (I, K*F, H, W, 3)
    model = IdentityEncoder().to(device).train()
    classes = (
        F.normalize(torch.randn(len(seeds), model.config["dim"]), dim=-1)
        .to(device)
        .requires_grad_()
    )
    opt = torch.optim.AdamW([*model.parameters(), classes], lr=cfg.lr * 2, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    started = time.time()
    for step in range(1, cfg.id_steps + 1):
        _cosine_lr(opt, step, cfg.id_steps, cfg.lr * 2)
        ids = torch.randint(len(seeds), (cfg.id_batch,), generator=gen)
        which = torch.randint(frames.shape[1], (cfg.id_batch,), generator=gen)
        x = frames[ids, which].permute(0, 3, 1, 2).float().div(255).to(device)
        x = _augment(x, gen)
        logits = model(x) @ F.normalize(classes, dim=-1).T
        margin = F.one_hot(ids, len(seeds)).to(device) * 0.2
        loss = F.cross_entropy(16.0 * (logits - margin), ids.to(device))
        _update(opt, loss, None, clip=None)
        _log("identity", step, cfg.id_steps, loss.item(), started)
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


MODELS = ("cogvideox", "identity", "svd")


def train_all(
    out: Path, cfg: TrainConfig, device: str | None = None, models: tuple[str, ...] = MODELS
) -> dict[str, float]:
    """Train `models` into `out/` (each folder written atomically, skipped when present); seconds per stage."""
    from probe.world.train_svd import train_mini_svd  # the second backbone has a module of its own

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "train_config.json", json.dumps(asdict(cfg), indent=2))
    timings: dict[str, float] = {}
    pipe_dir, id_dir = out / "mini-cogvideox-i2v", out / "mini-identity"
    if "cogvideox" in models and not (pipe_dir / "model_index.json").exists():
        t = time.time()
        vae = train_vae(cfg, device)
        timings["vae_s"] = time.time() - t
        t = time.time()
        pipe, null = train_transformer(cfg, vae, device)
        timings["transformer_s"] = time.time() - t
        save_pipeline(pipe, null, pipe_dir)
    if "identity" in models and not (id_dir / "identity_encoder.safetensors").exists():
        t = time.time()
        enc = train_identity_encoder(cfg, device)
        timings["identity_s"] = time.time() - t
        with atomic_dir(id_dir) as tmp:
            enc.save(tmp)
    if "svd" in models:
        timings.update(train_mini_svd(out, cfg, device))
    return timings


# A few steps of every stage: the smoke test CI runs (`anti-i2v world train --quick`).
QUICK = TrainConfig(
    vae_videos=8,
    vae_steps=3,
    vae_batch=2,
    dit_videos=16,
    dit_steps=4,
    dit_batch=4,
    id_identities=8,
    id_clips=1,
    id_steps=4,
    id_batch=8,
    svd_vae_steps=2,
    svd_vae_batch=2,
    svd_unet_steps=2,
    svd_batch=2,
)
