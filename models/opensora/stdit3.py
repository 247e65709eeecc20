"""STDiT3, Open-Sora 1.2's denoiser: 28 spatial and 28 temporal DiT blocks, run interleaved.

Written from the architecture facts in `shared/models/opensora-dynamicrafter.md`; names and
shapes equal the official `hpcai-tech/OpenSora-STDiT-v3` checkpoint's (a test compares them with
the shipped key list), so `from_pretrained` on a converted folder needs no key map.

Tokens are T-major: a block takes and returns `(B, T*S, C)` with token `t*S + h*W' + w`.
A spatial block attends within each frame, a temporal block across frames at each location
(with rotary positions). Both cross-attend to the T5 caption; every sublayer is modulated by the
timestep (adaLN-single), and latent frames whose `x_mask` is False (the conditioning image) get
the modulation of timestep 0 instead.

Plain PyTorch attention throughout: the official code's xformers block-diagonal caption mask is
`scaled_dot_product_attention` with a key-padding mask, and apex/flash-attn are not needed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def timestep_sinusoid(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """`(B,)` float timesteps -> `(B, dim)` [cos | sin] features (the DiT convention)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """A scalar per sample (timestep or fps) -> `(B, C)`: sinusoid, Linear, SiLU, Linear."""

    def __init__(self, hidden_size: int, frequency_size: int = 256):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.mlp(timestep_sinusoid(t, self.frequency_size).to(dtype))


class Mlp(nn.Module):
    """fc1, tanh-GELU, fc2 (timm's Mlp layout, so the keys are `fc1`, `fc2`)."""

    def __init__(self, dim: int, hidden: int, out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class CaptionEmbedder(nn.Module):
    """T5 features `(B, 1, L, 4096)` -> `(B, L, C)`; `y_embedding` is the learned null caption."""

    def __init__(self, caption_channels: int, hidden_size: int, length: int):
        super().__init__()
        self.y_proj = Mlp(caption_channels, hidden_size, hidden_size)
        self.register_buffer(
            "y_embedding", torch.randn(length, caption_channels) / caption_channels**0.5
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.y_proj(y.squeeze(1))


class RotaryEmbedding(nn.Module):
    """Interleaved rotary positions over the frame axis of temporal attention.

    `freqs` is a (frozen) parameter because the checkpoint stores it as one (`rope.freqs`, 36
    values for head_dim 72), and it counts in the published parameter total.
    """

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2).to(torch.get_default_dtype()) / dim)
        self.freqs = nn.Parameter(freqs, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate `(..., N, D)` queries or keys by their position 0..N-1 along N."""
        n = x.shape[-2]
        pos = torch.arange(n, device=x.device, dtype=torch.float32)
        angles = torch.repeat_interleave(pos[:, None] * self.freqs.float()[None], 2, dim=-1)
        pairs = x.float().unflatten(-1, (-1, 2))
        rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
        return (x.float() * angles.cos() + rotated * angles.sin()).to(x.dtype)


class RMSNorm(nn.Module):
    """Per-head RMS norm of queries and keys (weight only, eps 1e-6)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * self.weight.float()).to(x.dtype)


class SelfAttention(nn.Module):
    """qkv, per-head qk RMS norm, optional rotary positions (after the norm), SDPA, proj."""

    def __init__(self, dim: int, heads: int, rope: RotaryEmbedding | None):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = RMSNorm(dim // heads)
        self.k_norm = RMSNorm(dim // heads)
        self.proj = nn.Linear(dim, dim)
        # Shared with the model (`rope.freqs` is stored once); kept out of this module's state.
        self._rope = [rope] if rope is not None else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        if self._rope:
            q, k = self._rope[0](q), self._rope[0](k)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class CrossAttention(nn.Module):
    """Video tokens attend to their own sample's caption tokens (padding masked out)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x `(B, N, C)`, y `(B, L, C)`, mask `(B, L)` (nonzero = a real caption token)."""
        b, n, c = x.shape
        d = c // self.heads
        q = self.q_linear(x).view(b, n, self.heads, d).transpose(1, 2)
        k, v = self.kv_linear(y).view(b, y.shape[1], 2, self.heads, d).permute(2, 0, 3, 1, 4)
        keep = mask.bool()[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class STDiT3Block(nn.Module):
    """One spatial or temporal block; both keep `(B, T*S, C)` in and out."""

    def __init__(
        self, dim: int, heads: int, mlp_ratio: float, temporal: bool, rope: RotaryEmbedding
    ):
        super().__init__()
        self.temporal = temporal
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.attn = SelfAttention(dim, heads, rope if temporal else None)
        self.cross_attn = CrossAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def _mod(self, t: torch.Tensor, t0: torch.Tensor | None, x_mask, frames: int, spots: int):
        """The six modulations per token `(B, T*S, C)`: t's, or t0's on frames x_mask leaves out."""
        b, c = t.shape[0], self.scale_shift_table.shape[1]
        mods = (self.scale_shift_table[None] + t.view(b, 6, c)).unsqueeze(2)  # (B, 6, 1, C)
        if t0 is None or x_mask is None:
            return mods.unbind(1)
        mods0 = (self.scale_shift_table[None] + t0.view(b, 6, c)).unsqueeze(2)
        use_t = x_mask.bool()[:, None, :, None, None]  # (B, 1, T, 1, 1)
        per_frame = torch.where(use_t, mods.unsqueeze(2), mods0.unsqueeze(2))  # (B,6,T,1,C)
        per_token = per_frame.expand(b, 6, frames, spots, c).reshape(b, 6, frames * spots, c)
        return per_token.unbind(1)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        mask: torch.Tensor,
        x_mask: torch.Tensor | None,
        t0: torch.Tensor | None,
        frames: int,
        spots: int,
    ) -> torch.Tensor:
        b, _, c = x.shape
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self._mod(t, t0, x_mask, frames, spots)
        h = modulate(self.norm1(x), shift_a, scale_a)
        if self.temporal:  # each location attends across frames
            h = h.view(b, frames, spots, c).transpose(1, 2).reshape(b * spots, frames, c)
            h = self.attn(h).view(b, spots, frames, c).transpose(1, 2).reshape(b, -1, c)
        else:  # each frame attends within itself
            h = self.attn(h.reshape(b * frames, spots, c)).view(b, -1, c)
        x = x + gate_a * h
        x = x + self.cross_attn(x, y, mask)
        return x + gate_m * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class PatchEmbed3D(nn.Module):
    def __init__(self, patch: tuple[int, int, int], in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, T*H'*W', C), T-major


class FinalLayer(nn.Module):
    def __init__(self, dim: int, patch: tuple[int, int, int], out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.linear = nn.Linear(dim, math.prod(patch) * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)

    def forward(self, x, t, t0, x_mask, frames: int, spots: int) -> torch.Tensor:
        b, _, c = x.shape
        shift, scale = (self.scale_shift_table[None] + t[:, None]).unsqueeze(2).unbind(1)
        if t0 is not None and x_mask is not None:
            shift0, scale0 = (self.scale_shift_table[None] + t0[:, None]).unsqueeze(2).unbind(1)
            use_t = x_mask.bool()[:, :, None, None]  # (B, T, 1, 1)

            def per_token(a, a0):
                picked = torch.where(use_t, a.unsqueeze(1), a0.unsqueeze(1))
                return picked.expand(b, frames, spots, c).reshape(b, -1, c)

            shift, scale = per_token(shift, shift0), per_token(scale, scale0)
        return self.linear(modulate(self.norm_final(x), shift, scale))


def sincos_2d(
    h: int, w: int, dim: int, scale: float, base_size: int, device: torch.device
) -> torch.Tensor:
    """`(h*w, dim)` 2D sin-cos positions; grids are divided by `scale` and stretched to `base_size`.

    Half the channels encode the row, half the column, each as [sin | cos] over dim/4
    frequencies. UNVERIFIED against the official code's channel order: with the official
    weights, compare one block's output before trusting probes at real size.
    """
    grid_h = torch.arange(h, device=device, dtype=torch.float32) / scale * (base_size / h)
    grid_w = torch.arange(w, device=device, dtype=torch.float32) / scale * (base_size / w)
    gh, gw = torch.meshgrid(grid_h, grid_w, indexing="ij")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(gh), encode(gw)], dim=1)


class STDiT3Model(ModelMixin, ConfigMixin):
    """Open-Sora 1.2's STDiT3 (STDiT3-XL/2 with the defaults: 1,207,643,972 parameters).

    Args:
        in_channels: latent channels (4).
        patch_size: (t, h, w) patch (1, 2, 2).
        hidden_size, depth, num_heads, mlp_ratio: the transformer (1152, 28, 16, 4.0).
        pred_sigma: the output doubles the channels (the second half is unused at sampling).
        caption_channels, model_max_length: the T5 features (4096, 300 tokens).
        input_sq_size: the side whose area the positional scale is relative to (512).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["STDiT3Block"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        pred_sigma: bool = True,
        caption_channels: int = 4096,
        model_max_length: int = 300,
        input_sq_size: int = 512,
    ):
        super().__init__()
        patch = tuple(patch_size)
        self.out_channels = in_channels * 2 if pred_sigma else in_channels
        self.rope = RotaryEmbedding(hidden_size // num_heads)
        self.x_embedder = PatchEmbed3D(patch, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.fps_embedder = TimestepEmbedder(hidden_size)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        self.y_embedder = CaptionEmbedder(caption_channels, hidden_size, model_max_length)
        self.spatial_blocks = nn.ModuleList(
            STDiT3Block(hidden_size, num_heads, mlp_ratio, False, self.rope) for _ in range(depth)
        )
        self.temporal_blocks = nn.ModuleList(
            STDiT3Block(hidden_size, num_heads, mlp_ratio, True, self.rope) for _ in range(depth)
        )
        self.final_layer = FinalLayer(hidden_size, patch, self.out_channels)
        self.gradient_checkpointing = False

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor,
        x_mask: torch.Tensor | None = None,
        fps: torch.Tensor | None = None,
        height: torch.Tensor | float | None = None,
        width: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """One denoiser pass.

        Args:
            x: `(B, 4, T, H, W)` noisy latent.
            timestep: `(B,)` in [0, 1000], 1000 = pure noise.
            y: `(B, 1, L, 4096)` caption features; mask: `(B, L)`, nonzero on real tokens.
            x_mask: `(B, T)` bool, False on latent frames given as conditions (timestep-0
                modulation there); None treats every frame as generated.
            fps: `(B,)` frames per second (24 for video); height, width: `(B,)` pixels (element 0
                sets the positional scale) or numbers; default: the latent size times 8.

        Returns:
            `(B, 2*4 or 4, T, H, W)` float32; channels 0-3 are the velocity x0 - noise.
        """
        cfg = self.config
        b, _, frames, h, w = x.shape
        pt, ph, pw = cfg.patch_size
        if frames % pt:
            raise ValueError(f"{frames} latent frames are not divisible by the patch's {pt}")
        # A latent side that is not a whole number of patches (240x426 gives 30x53) is zero-padded
        # at its end, and the output cut back (at the end, as the 15x27 tokens of 240x426 imply).
        x = F.pad(x, (0, -w % pw, 0, -h % ph))
        dtype = self.x_embedder.proj.weight.dtype
        frames, hp, wp = frames // pt, x.shape[3] // ph, x.shape[4] // pw
        spots = hp * wp
        # Pixels: element 0 of a (B,) tensor, as the official code reads it, or a number (which
        # needs no tensor read: `plan` runs this under FakeTensorMode, where tensors have no values).
        height = h * 8.0 if height is None else height
        width = w * 8.0 if width is None else width
        area = (height[0] if torch.is_tensor(height) else height) * (
            width[0] if torch.is_tensor(width) else width
        )
        scale = math.sqrt(float(area)) / cfg.input_sq_size
        fps = fps if fps is not None else torch.full((b,), 24.0, device=x.device)

        fps_emb = self.fps_embedder(fps.to(x.device), dtype)
        t = self.t_embedder(timestep.to(x.device), dtype) + fps_emb
        t_mod = self.t_block(t)
        t0 = t0_mod = None
        if x_mask is not None:
            t0 = self.t_embedder(torch.zeros_like(timestep, device=x.device), dtype) + fps_emb
            t0_mod = self.t_block(t0)
        text = self.y_embedder(y.to(dtype))

        tokens = self.x_embedder(x.to(dtype))
        pos = sincos_2d(hp, wp, cfg.hidden_size, scale, round(spots**0.5), x.device).to(dtype)
        tokens = (tokens.view(b, frames, spots, -1) + pos).view(b, frames * spots, -1)
        for spatial, temporal in zip(self.spatial_blocks, self.temporal_blocks, strict=True):
            for block in (spatial, temporal):
                args = (tokens, text, t_mod, mask, x_mask, t0_mod, frames, spots)
                if torch.is_grad_enabled() and self.gradient_checkpointing:
                    tokens = self._gradient_checkpointing_func(block, *args)
                else:
                    tokens = block(*args)
        out = self.final_layer(tokens, t, t0, x_mask, frames, spots)
        out = out.view(b, frames, hp, wp, pt, ph, pw, self.out_channels)
        out = out.permute(0, 7, 1, 4, 2, 5, 3, 6)
        out = out.reshape(b, self.out_channels, frames * pt, hp * ph, wp * pw)
        return out[..., :h, :w].float()
