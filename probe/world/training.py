"""What the mini world's training stages share: settings, data, the optimiser step, a VAE fit.

`train.py` (CogVideoX VAE and transformer, identity encoder) and `train_svd.py` (mini-svd) both
build on this module; neither imports the other's internals.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from probe.world.render import render_video, sample_identity, sample_motion

console = Console(stderr=True)


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
    id_steps: int = 500  # v1 identity encoder
    id_robust_steps: int = 1500  # v2: heavy augmentations need longer training
    id_colour_field: float = 16.0  # v2: the largest a*/b* field a training view gets (units)
    id_batch: int = 48
    svd_vae_steps: int = 1200  # mini-svd (train_svd.py)
    svd_vae_batch: int = 16  # single frames: its VAE works frame by frame
    svd_unet_steps: int = 1000
    svd_batch: int = 8
    lr: float = 1e-3


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


def cosine_lr(opt: torch.optim.Optimizer, step: int, total: int, lr: float) -> None:
    """Linear warm-up over the first 5% of steps, then cosine decay to 2% of `lr`."""
    warm = max(1, total // 20)
    scale = (
        step / warm
        if step < warm
        else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    )
    for group in opt.param_groups:
        group["lr"] = lr * max(scale, 0.02)


def update(
    opt: torch.optim.Optimizer, loss: torch.Tensor, params, clip: float | None = 1.0
) -> None:
    """One optimiser step on `loss`, gradients of `params` clipped to norm `clip` (None: unclipped)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()


def log_step(stage: str, step: int, total: int, loss: float, started: float) -> None:
    """Log a stage's loss ten times over its run."""
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
        cosine_lr(opt, step, steps, lr)
        x = data[torch.randint(len(data), (batch,), generator=gen)].to(device)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + 1e-6 * post.kl().mean()
        update(opt, loss, vae.parameters())
        log_step(stage, step, steps, loss.item(), started)
    vae.eval()
    with torch.no_grad():  # unit-variance latents, as diffusers' scaling_factor intends
        z = torch.cat(
            [vae.encode(data[i : i + 8].to(device)).latent_dist.mode() for i in range(0, 64, 8)]
        )
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    return vae.cpu()


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
    id_robust_steps=4,
    id_batch=8,
    svd_vae_steps=2,
    svd_vae_batch=2,
    svd_unet_steps=2,
    svd_batch=2,
)
