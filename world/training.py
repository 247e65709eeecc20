"""What the mini world's training stages share: settings, data, the optimiser step, a VAE fit.

`train.py` (CogVideoX VAE and transformer, identity encoder) and `train_svd.py` (mini-svd) both
build on this module; neither imports the other's internals.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from anti_i2v.core.common import atomic_dir, atomic_path
from anti_i2v.world.dataset import render_sample
from anti_i2v.world.render import FRAMES, SIZE
from anti_i2v.world.render_v2 import SIZE_V2

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
    world: str = "v1"  # which world's portraits it learns (`anti_i2v.world.render.WORLDS`)
    checkpoint_every: int = 100  # steps between a stage's resumable checkpoints
    # The dtype the finished CogVideoX transformer is stored in. It trains in float32 and loads
    # as float32 whatever it is stored in (diffusers casts to the model's dtype).
    dit_store_dtype: str = "float32"


def world_size(world: str) -> int:
    """The side of a world's square portraits."""
    return SIZE_V2 if world == "v2" else SIZE


def render_clips(
    seeds: list[int], motions_per_identity: int = 1, world: str = "v1"
) -> torch.Tensor:
    """Render clips as a uint8 tensor `(N, F, H, W, 3)`; identity i uses motion seeds i*k..i*k+k-1
    (in v2 the motion seed draws the scene too, so each clip of a person is shot differently)."""
    clips = [
        render_sample(s, s * 7919 + m, world=world)[0]
        for s in seeds
        for m in range(motions_per_identity)
    ]
    return torch.from_numpy(np.stack(clips))


def portrait_clip(seed: int, frames: int = FRAMES, world: str = "v1") -> torch.Tensor:
    """Identity `seed` in its own motion (the cards' held-out clips): float `(F, 3, H, W)` in [0, 1]."""
    return torch.from_numpy(render_sample(seed, seed, frames, world)[0]).permute(0, 3, 1, 2) / 255


def drop_checkpoint(checkpoints: tuple[Path | None, int], stage: str) -> None:
    """A stage's result is saved: remove its checkpoint."""
    if checkpoints[0] is not None:
        (checkpoints[0] / f"{stage}.safetensors").unlink(missing_ok=True)


def waiting_vae(
    checkpoints: tuple[Path | None, int],
    stage: str,
    load: Callable[[Path], nn.Module],
    train: Callable[[], nn.Module],
    timings: dict[str, float],
) -> nn.Module:
    """A pipeline's trained VAE: the one waiting in `<folder>/<stage>/`, or a newly trained one.

    A VAE takes minutes to train and its denoiser stage far longer, so a finished VAE is saved
    (atomically) into the checkpoint folder and waits there: a `world train` interrupted during
    the denoiser stage starts it again from this VAE, in any session. Its step checkpoint is
    dropped once it is saved; `timings["<stage>_s"]` gets the seconds it trained.
    `release_vae` removes the folder once the pipeline holding the VAE is saved.
    """
    folder = checkpoints[0] / stage if checkpoints[0] is not None else None
    if folder is not None and (folder / "config.json").exists():
        return load(folder)
    started = time.time()
    vae = train()
    timings[f"{stage.replace('-', '_')}_s"] = time.time() - started
    if folder is not None:
        with atomic_dir(folder) as tmp:
            vae.save_pretrained(tmp, safe_serialization=True)
    drop_checkpoint(checkpoints, stage)
    return vae


def release_vae(checkpoints: tuple[Path | None, int], stage: str) -> None:
    """The pipeline is saved with its VAE: the copy `waiting_vae` kept is no longer needed."""
    if checkpoints[0] is not None:
        shutil.rmtree(checkpoints[0] / stage, ignore_errors=True)


class StageCheckpoint:
    """One training stage's resumable state: weights, optimiser moments, generators, step.

    `checkpoints` is `(folder, every)`: the state is saved every `every` steps into
    `folder/STAGE.safetensors` (atomically: an interruption leaves the previous checkpoint
    whole), read back by `resume`, and removed by `drop_checkpoint` once the stage's result is
    saved. The generators' states (the stage's own and torch's global one) are part of it, so a
    resumed stage draws the batches and noise the uninterrupted one would have and ends with the
    same weights. Safetensors, as every weight file here: never a pickle. A folder of None keeps
    no checkpoints.
    """

    def __init__(
        self,
        checkpoints: tuple[Path | None, int],
        stage: str,
        parts: dict[str, nn.Module | torch.Tensor],
        opt: torch.optim.Optimizer,
        gen: torch.Generator,
    ):
        folder, self.every = checkpoints
        self.path = folder / f"{stage}.safetensors" if folder is not None else None
        self.parts, self.opt, self.gen = parts, opt, gen

    def resume(self) -> int:
        """Load the latest checkpoint when there is one; returns the first step still to run."""
        if self.path is None or not self.path.exists():
            return 1
        with safe_open(str(self.path), "pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
        for name, part in self.parts.items():
            if isinstance(part, torch.Tensor):
                with torch.no_grad():
                    part.copy_(tensors[name])
            else:
                prefix = f"{name}."
                part.load_state_dict(
                    {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
                )
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, index, field = key.split(".", 2)
                state.setdefault(int(index), {})[field] = value
        self.opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
        self.gen.set_state(tensors["generator"])
        # Draws without a generator (a VAE posterior's sample) continue where they stopped too
        torch.set_rng_state(tensors["global_generator"])
        if "cuda_generator" in tensors:
            torch.cuda.set_rng_state(tensors["cuda_generator"])
        console.log(f"resumed {self.path.stem} at step {meta['step']}")
        return int(meta["step"]) + 1

    def step(self, step: int, total: int) -> None:
        """After `step`: save every `every` steps (not after the last: the caller saves the result)."""
        if self.path is None or step % self.every or step == total:
            return
        tensors: dict[str, torch.Tensor] = {}
        for name, part in self.parts.items():
            items = {"": part} if isinstance(part, torch.Tensor) else part.state_dict()
            for k, v in items.items():
                # clone: safetensors refuses tensors that share memory (tied weights)
                tensors[f"{name}.{k}" if k else name] = v.detach().cpu().clone()
        state = self.opt.state_dict()
        for index, moments in state["state"].items():
            for k, v in moments.items():
                tensors[f"opt.{index}.{k}"] = torch.as_tensor(v).detach().cpu().clone()
        tensors["generator"] = self.gen.get_state()
        tensors["global_generator"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            tensors["cuda_generator"] = torch.cuda.get_rng_state()
        meta = {"step": str(step), "param_groups": json.dumps(state["param_groups"])}
        with atomic_path(self.path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)


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
    checkpoints: tuple[Path | None, int] = (None, 0),
) -> torch.nn.Module:
    """Reconstruction training shared by the mini VAEs (L1 + MSE, a light KL); sets `scaling_factor`.

    `checkpoints`: (folder, every) for `StageCheckpoint`; (None, 0) keeps none.
    """
    vae = vae.to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    ckpt = StageCheckpoint(checkpoints, stage, {"vae": vae}, opt, gen)
    started = time.time()
    for step in range(ckpt.resume(), steps + 1):
        cosine_lr(opt, step, steps, lr)
        x = data[torch.randint(len(data), (batch,), generator=gen)].to(device)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + 1e-6 * post.kl().mean()
        update(opt, loss, vae.parameters())
        log_step(stage, step, steps, loss.item(), started)
        ckpt.step(step, steps)
    vae.eval()
    with torch.no_grad():  # unit-variance latents, as diffusers' scaling_factor intends
        z = torch.cat(
            [vae.encode(data[i : i + 8].to(device)).latent_dist.mode() for i in range(0, 64, 8)]
        )
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    return vae.cpu()


# A few steps of every stage: the smoke test CI runs (`anti-i2v world train --quick`).
QUICK = TrainConfig(
    vae_videos=8,  # 72 frames: the scaling factor is read off 64 of them
    vae_steps=2,
    vae_batch=2,
    dit_videos=8,
    dit_steps=2,
    dit_batch=4,
    id_identities=8,
    id_clips=1,
    id_steps=2,
    id_robust_steps=2,
    id_batch=8,
    svd_vae_steps=2,
    svd_vae_batch=2,
    svd_unet_steps=2,
    svd_batch=2,
)

# The v2 world: 96x96 photo-like portraits, a 12-block transformer of width 192 on 12x12 tokens
# per latent frame (`train.mini_transformer`). Measured on 2 idle CPU cores: 2.7 s a VAE step
# (4 clips of 9 frames), 1.6 s a transformer step (8 clips): about 2.5 hours in all, run in the
# background with checkpoints (`anti-i2v world train --world v2` resumes where it stopped).
V2 = TrainConfig(
    world="v2",
    vae_steps=800,
    dit_steps=3000,
    dit_batch=8,
    id_robust_steps=2000,
    # With 384 identities the judge held a held-out portrait through its own head turn at only
    # 0.913 (its gate asks 0.95), and 8 clips per identity instead of 3 reached 0.920; 1024
    # identities reach 0.970 (40 minutes on one core): it is the number of faces that teaches it.
    id_identities=1024,
    # At 1000 steps mini-svd-v2 was level with copying the first frame (+0.08 dB); 3000 steps
    # (38 minutes on one core) beat it by 1.5 dB and lift its video ISM from 0.77 to 0.83 under
    # the 384-identity judge (0.917 under the shipped 1024-identity one).
    svd_unet_steps=3000,
    # Half precision halves the 36.8 MB transformer, so that the v2 models stay under the 60 MB
    # the mini-world-v2 issue allows; its card is measured on the stored weights.
    dit_store_dtype="float16",
)
