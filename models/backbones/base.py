"""The small interface every backbone adapter implements.

An adapter wraps a diffusers image-to-video pipeline and answers the questions the toolkit
asks of any video denoiser: which blocks it has, what each block returns, how to turn an
image in [0, 1] into the denoiser's conditioning (differentiably), how to noise a latent at a
timestep, and how to call the denoiser. Family files (`cogvideox.py`, `wan.py`, ...) subclass
:class:`Backbone` and are meant to be read top to bottom.

Timesteps are always given on the 0..1000 training scale; each family maps them to its own
noise level (DDPM alphas, flow-matching sigma = t/1000, or Karras sigma for SVD).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch._subclasses.fake_tensor import unset_fake_temporarily

from anti_i2v.core.common import ToolkitError, to_uint8


@dataclass
class Conditioning:
    """What the denoiser needs for one image batch: conditioning tensors and the clean latent.

    `clean` is the latent of a still video of the image (the image repeated over frames), in
    the denoiser's own latent layout; probing noises it at the requested timestep.
    """

    tensors: dict[str, torch.Tensor]
    clean: torch.Tensor
    # (frames, height, width) in tokens, for layouts whose shape does not show it (packed
    # tokens); plain ints, so shape logic never reads tensor values (fake tensors have none).
    grid: tuple[int, int, int] | None = None


class Backbone(ABC):
    """Base adapter: holds a pipeline and its text conditioning; families fill in the rest."""

    family: ClassVar[str]
    pipeline_class: ClassVar[type]
    # Child containers whose children are "blocks", in forward order (single modules allowed).
    block_containers: ClassVar[tuple[str, ...]]
    # Pipeline components never loaded: text conditioning comes from saved embeddings.
    skip_components: ClassVar[tuple[str, ...]] = ("text_encoder", "tokenizer")
    # Denoiser passes per sampling step in the published pipeline: 2 with classifier-free
    # guidance (conditional and unconditional, batched). Used by `plan --task generate`.
    guidance_passes: ClassVar[int] = 2
    # Joint attention (text and video tokens in one sequence): whether the text comes first
    # (CogVideoX) or after the video (HunyuanVideo); read by `attention_share`.
    joint_text_first: ClassVar[bool] = True

    def joint_text_tokens(self) -> int:
        """Context tokens beside the video in joint attention: the prompt embedding's length
        (0 without one); a family that adds other context tokens counts them too."""
        text = self.text.get("prompt_embeds")
        return 0 if text is None else int(text.shape[1])

    # Pipeline components besides the denoiser that conditioning runs (frozen here; `plan`
    # counts their weights); those a pipeline lacks are skipped.
    conditioning_parts: ClassVar[tuple[str, ...]] = ("vae", "image_encoder")

    @classmethod
    def stand_in_components(cls) -> dict[str, Any]:
        """Pipeline components given at load time instead of read from the folder (Cosmos'
        guardrail, whose package may be absent): none for most families."""
        return {}

    # The loaded weights' hash (`anti_i2v.models.backbones.weights_sha256`), set by `load_backbone`.
    weights_sha256: str = ""

    def __init__(
        self,
        pipe: Any,
        name: str,
        text: dict[str, torch.Tensor] | None = None,
        resolution: tuple[int, int] | None = None,
        frames: int | None = None,
    ):
        self.pipe = pipe
        self.name = name
        self.execution_device: torch.device | None = None  # set under CPU offload
        self.text = text if text is not None else self.null_text()
        self.resolution = resolution or self.native_resolution()
        self.default_frames = frames or self.native_frames()
        self.denoiser.eval().requires_grad_(False)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)  # the toolkit shows its own progress
        for part in self.conditioning_parts:
            module = getattr(pipe, part, None)
            if isinstance(module, nn.Module):
                module.eval().requires_grad_(False)

    # --- what the model is -------------------------------------------------------------
    @property
    def denoiser(self) -> nn.Module:
        """The video denoiser (transformer or UNet)."""
        return self.pipe.transformer

    @property
    def device(self) -> torch.device:
        """Where inputs go: the GPU the offload hooks run on, else where the weights are."""
        if self.execution_device is not None:
            return self.execution_device
        return next(self.denoiser.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.denoiser.parameters()).dtype

    def config_sha256(self) -> str:
        """Hash of the denoiser's config: ties stores and profiles to one architecture."""
        cfg = {k: v for k, v in dict(self.denoiser.config).items() if not k.startswith("_")}
        return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()

    def model_key(self) -> str:
        """What decides this model's outputs, short: its config's and its weights' hashes.

        The key of every on-disk cache of its outputs (`weights_sha256` is set by `load_backbone`;
        an adapter built by hand has none, and its key names the config only).
        """
        return f"{self.config_sha256()[:16]}-{self.weights_sha256[:16]}".rstrip("-")

    def block_names(self) -> list[str]:
        """Every block's module path, in registration order (see `capture.execution_order`)."""
        names = []
        for container in self.block_containers:
            module = self.denoiser.get_submodule(container)
            if isinstance(module, nn.ModuleList):
                names += [f"{container}.{i}" for i in range(len(module))]
            else:
                names.append(container)
        return names

    def active_blocks(self, t: float) -> list[str]:
        """The blocks a denoiser call at timestep t runs: all of them, but for models whose
        experts split the timesteps between them (Wan 2.2 A14B), where one expert's."""
        return self.block_names()

    def vae_block_names(self) -> list[str]:
        """The VAE encoder's blocks (`vae.encoder.down_blocks.0`, ..., `vae.encoder.mid_block`).

        Every diffusers video VAE (and SVD's image VAE) names them so; IRA can anchor them too.
        """
        encoder = self.pipe.vae.encoder
        names = [f"vae.encoder.down_blocks.{i}" for i in range(len(encoder.down_blocks))]
        return names + ["vae.encoder.mid_block"]

    def hidden(self, output: Any) -> torch.Tensor:
        """The hidden-state element of a block's output (tuples carry it first)."""
        return output[0] if isinstance(output, (tuple, list)) else output

    # --- sizes -------------------------------------------------------------------------
    @abstractmethod
    def native_resolution(self) -> tuple[int, int]:
        """(height, width) the model was made for (the pipeline's default)."""

    @abstractmethod
    def native_frames(self) -> int:
        """Video frames the pipeline generates by default."""

    def generated_frames(self, frames: int) -> int:
        """Video frames `generate(frames=frames)` returns (the pipeline's own count)."""
        return frames

    def latent_frames(self, frames: int) -> int:
        """Latent frames for `frames` video frames (4x temporal compression + 1 by default)."""
        return (frames - 1) // 4 + 1

    @abstractmethod
    def token_grid(self, cond: Conditioning) -> tuple[int, int, int]:
        """(frames, height, width) of the token grid one block output covers."""

    def layout(self, hidden: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """A block's hidden state as `(B, F, H, W, C)`; DiTs give `(B, F*H*W, C)` video tokens."""
        f, h, w = self.token_grid(cond)
        b, n, c = hidden.shape
        if n != f * h * w:
            raise ValueError(f"{self.family}: block output has {n} tokens, expected {f}x{h}x{w}")
        return hidden.reshape(b, f, h, w, c)

    @staticmethod
    def frames_in_batch_layout(hidden: torch.Tensor, frames: int) -> torch.Tensor:
        """UNet blocks' `(B*F, C, H, W)`, frames in the batch in (b f) order -> `(B, F, H, W, C)`."""
        bf, c, h, w = hidden.shape
        return hidden.reshape(bf // frames, frames, c, h, w).permute(0, 1, 3, 4, 2)

    def alpha_bar(self, t: float) -> float:
        """The DDPM schedule's alphas_cumprod at timestep t (0..999), as a number.

        Read outside FakeTensorMode (`anti-i2v plan`), where a tensor read would have no value.
        """
        with unset_fake_temporarily():
            return float(self.pipe.scheduler.alphas_cumprod[min(int(round(t)), 999)])

    def enable_checkpointing(self) -> list[str]:
        """Activation checkpointing (diffusers' own) in the denoiser's blocks and the VAE.

        The backward of protect then recomputes each block's activations instead of keeping
        them: peak memory falls, the gradient is the same. Returns the parts it is on.

        Raises:
            ToolkitError: neither part supports it.
        """
        on = []
        for name, module in (("denoiser", self.denoiser), ("vae", self.pipe.vae)):
            if getattr(module, "_supports_gradient_checkpointing", False):
                module.enable_gradient_checkpointing()
                on.append(name)
        if not on:
            raise ToolkitError(
                f"{self.name}: neither its denoiser nor its VAE supports checkpointing"
            )
        return on

    # --- images in -----------------------------------------------------------------------
    def resize(self, image: torch.Tensor) -> torch.Tensor:
        """Differentiable resize of `(B, 3, H, W)` in [0, 1] to the model's resolution."""
        size = self.resolution
        if tuple(image.shape[-2:]) == size:
            return image
        return F.interpolate(
            image, size=size, mode="bilinear", antialias=True, align_corners=False
        ).clamp(0, 1)

    @abstractmethod
    def condition(self, image: torch.Tensor, frames: int | None = None) -> Conditioning:
        """Image `(B, 3, H, W)` in [0, 1] -> conditioning, differentiable w.r.t. the image."""

    @abstractmethod
    def add_noise(self, clean: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
        """Noise a clean latent at timestep `t` (0..1000) with the model's own schedule."""

    @abstractmethod
    def denoiser_kwargs(self, noisy: torch.Tensor, cond: Conditioning, t: float) -> dict[str, Any]:
        """Keyword arguments for one conditional-branch denoiser call."""

    @abstractmethod
    def predict_clean(self, noisy: torch.Tensor, output: torch.Tensor, t: float) -> torch.Tensor:
        """The denoiser's estimate of the clean latent from its output at timestep t."""

    @abstractmethod
    def target(self, clean: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
        """What a perfect denoiser outputs for `add_noise(clean, noise, t)`: its training target
        (the velocity, the noise, ...), in the family's parameterisation.

        Written from the schedule, not by inverting `predict_clean`, so that the adapter contract
        (`anti_i2v.contract`) can check that the two agree: `predict_clean` of the target is `clean`.
        """

    @abstractmethod
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """Video `(B, F, 3, H, W)` in [0, 1] at the model's resolution -> clean latent (like `Conditioning.clean`)."""

    def traceable(self) -> contextlib.AbstractContextManager:
        """Anything `plan` needs switched while it traces the denoiser under FakeTensorMode, where
        tensors have no values: nothing for most families (HunyuanVideo 1.5 swaps in a forward
        with no data-dependent branch)."""
        return contextlib.nullcontext()

    @classmethod
    def generation_refusal(cls) -> str | None:
        """Why this family cannot generate on this install (an optional package its pipeline
        needs is missing), or None. Asked before any model loads (`check_generates`)."""
        return None

    # Why a family offers no lens (`anti_i2v.models.lens`); None where it does.
    lens_refusal: ClassVar[str | None] = None

    def lens_blocks(self, t: float) -> list[str]:
        """The blocks with a lens at timestep t: every block a call at t runs, for a DiT."""
        return [] if self.lens_refusal is not None else self.active_blocks(t)

    def lens_pass_on(self, left: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        """What a block after the lens's block returns in its place: the lens's block's own
        output (`left`), since every block of a DiT reads and returns the same stream. A family
        that changes the stream between blocks (VACE's hints) passes its input on instead."""
        return left

    def lens_context(self, block: str) -> contextlib.AbstractContextManager:
        """Anything else the lens of `block` must switch off in the forward pass that follows
        it (VACE: the hints added after later blocks); nothing by default."""
        return contextlib.nullcontext()

    def decode_video(self, latent: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """A clean latent (laid out like `cond.clean`) -> video `(B, F, 3, H, W)` in [0, 1], as the
        pipeline decodes its final latent: the inverse of `encode_video`.

        Written for the families with a lens (`anti_i2v.models.lens`); `cond` gives what the
        latent's shape does not show (LTX's packed token grid).
        """
        raise ToolkitError(f"{self.family}: no decode_video written for this family")

    def _decode(self, z: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """The VAE's decode of `[B, C, F, h, w]` in its own scale -> `(B, F, 3, H, W)` in [0, 1]."""
        video = self.pipe.vae.decode(z.to(self.pipe.vae.dtype), **kwargs).sample
        return ((video.float() + 1) / 2).clamp(0, 1).permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def vae_roundtrip(self, image: torch.Tensor) -> torch.Tensor:
        """A photo `(3, H, W)` in [0, 1] encoded and decoded by the model's own VAE, back at its size.

        This is the purification an attacker gets for free from the model itself. Video VAEs take
        `[B, C, F, H, W]`: the photo is a one-frame video (SVD's per-frame VAE overrides this).
        """
        vae = self.pipe.vae
        x = (self.resize(image[None].float()).to(self.device) * 2 - 1).to(vae.dtype).unsqueeze(2)
        y = vae.decode(vae.encode(x).latent_dist.mode()).sample[:, :, 0]
        return self._back_to(y, image)

    @staticmethod
    def _back_to(decoded: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Decoded `[1, 3, h, w]` in [-1, 1] -> `(3, H, W)` in [0, 1] at `image`'s size, on the CPU."""
        y = ((decoded.float().cpu() + 1) / 2).clamp(0, 1)
        if tuple(y.shape[-2:]) != tuple(image.shape[-2:]):
            y = F.interpolate(
                y, size=image.shape[-2:], mode="bicubic", antialias=True, align_corners=False
            )
        return y[0].clamp(0, 1)

    # --- text ------------------------------------------------------------------------------
    @abstractmethod
    def null_text(self) -> dict[str, torch.Tensor]:
        """Text conditioning used when no prompt embeddings are saved: zeros of the right shape."""

    def text_batch(self, batch: int) -> dict[str, torch.Tensor]:
        """Text conditioning expanded to a batch, on the denoiser's device and dtype."""
        out = {}
        for k, v in self.text.items():
            v = v.to(self.device)
            out[k] = v.expand(batch, *v.shape[1:]) if v.shape[0] == 1 else v
            if out[k].is_floating_point():
                out[k] = out[k].to(self.dtype)
        return out

    # --- generation -------------------------------------------------------------------------
    @abstractmethod
    def pipeline_kwargs(self) -> dict[str, Any]:
        """Extra pipeline-call arguments for generation (text embeddings, guidance)."""

    def pipeline_image(self, image: torch.Tensor) -> dict[str, Any]:
        """How the pipeline takes the photo `(3, H, W)`: resized to the adapter's resolution, with
        that height and width."""
        height, width = self.resolution
        return {
            "image": self.resize(image[None].float()).to(self.device),
            "height": height,
            "width": width,
        }

    def photo_image(self, image: torch.Tensor) -> Image.Image:
        """The photo `(3, H, W)` in [0, 1] at the adapter's resolution, as an 8-bit PIL image:
        `pipeline_image` for pipelines that take PIL photos (HunyuanVideo 1.5, LTX-2)."""
        return Image.fromarray(to_uint8(self.resize(image[None].float())[0]))

    @torch.no_grad()
    def generate(
        self, image: torch.Tensor, frames: int | None = None, steps: int = 20, seed: int = 0
    ) -> torch.Tensor:
        """Generate a video `(F, 3, H, W)` in [0, 1] from one image `(3, H, W)` with the pipeline."""
        video = self.pipe(
            **self.pipeline_image(image),
            num_frames=frames or self.default_frames,
            num_inference_steps=steps,
            generator=torch.Generator(device="cpu").manual_seed(seed),
            output_type="pt",
            **self.pipeline_kwargs(),
        ).frames
        return video[0].float().clamp(0, 1).cpu()


class FlowMatchBackbone(Backbone):
    """Families trained with rectified flow (Wan, LTX, HunyuanVideo): sigma = t / 1000.

    The noisy latent is `(1 - sigma) x0 + sigma noise` and the denoiser predicts the velocity
    `noise - x0`, so both directions are one line and shared here rather than copied per family.
    """

    def add_noise(self, clean: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
        s = t / 1000.0
        return (1 - s) * clean + s * noise

    def target(self, clean: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
        return noise - clean  # d(noisy)/d(sigma)

    def predict_clean(self, noisy: torch.Tensor, output: torch.Tensor, t: float) -> torch.Tensor:
        return noisy - (t / 1000.0) * output  # the velocity is noise - x0
