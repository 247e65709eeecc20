"""Open-Sora 1.2's video VAE: the SDXL-layout 2D VAE per frame, then a causal temporal VAE.

Written from the facts in `shared/models/opensora-dynamicrafter.md` and the temporal VAE's key
list. The state dict equals the official `hpcai-tech/OpenSora-VAE-v1.2/model.safetensors`'s:
`spatial_vae.module.*` (diffusers' AutoencoderKL), `temporal_vae.*`, and the `scale`/`shift`
buffers that normalise the latent.

Video `(B, 3, T, H, W)` in [-1, 1] -> latent `(B, 4, T', H/8, W/8)` with T' = ceil(T/17)*5 for
whole 17-frame chunks (17 -> 5, 51 -> 15) and 1 -> 1.

What the key list fixes (names, shapes, where the 2x temporal strides sit) is exact. The temporal
VAE's forward is inferred from it and from the facts, and is UNVERIFIED without the weights:
causal convolutions pad the front of the time axis by repeating the first frame; a chunk is
zero-padded at the front to a multiple of 4 frames; the decoder's 2x temporal upsampling is a
depth-to-space of doubled channels, and the front padding is cut after decoding.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# The SDXL VAE's published config (PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers/vae).
SDXL_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
}
SHIFT = (-0.10, 0.34, 0.27, 0.98)
SCALE = (3.85, 2.32, 2.33, 3.06)


class CausalConv3d(nn.Module):
    """Conv3d that sees only the present and past frames: the time axis is padded at the front."""

    def __init__(self, cin: int, cout: int, kernel: int, stride_t: int = 1, bias: bool = True):
        super().__init__()
        self.time_pad = kernel - 1
        self.conv = nn.Conv3d(
            cin,
            cout,
            kernel,
            stride=(stride_t, 1, 1),
            padding=(0, kernel // 2, kernel // 2),
            bias=bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_pad:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)
        return self.conv(x)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, conv, GroupNorm, SiLU, conv (no biases), a 1x1x1 `conv3` when widths differ."""

    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = CausalConv3d(cin, cout, 3, bias=False)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv2 = CausalConv3d(cout, cout, 3, bias=False)
        if cin != cout:
            self.conv3 = CausalConv3d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.conv3(x) if hasattr(self, "conv3") else x)


class TemporalEncoder(nn.Module):
    def __init__(self, cin, cout, ch, mults, blocks, downsample, groups):
        super().__init__()
        self.conv_in = CausalConv3d(cin, ch, 3, bias=False)
        self.block_res_blocks = nn.ModuleList()
        self.conv_blocks = nn.ModuleList()
        width = ch
        for i, mult in enumerate(mults):
            out = ch * mult
            self.block_res_blocks.append(
                nn.Sequential(
                    *(ResBlock(width if j == 0 else out, out, groups) for j in range(blocks))
                )
            )
            width = out
            if i < len(mults) - 1:
                self.conv_blocks.append(
                    CausalConv3d(width, width, 3, stride_t=2) if downsample[i] else nn.Identity()
                )
        self.res_blocks = nn.Sequential(*(ResBlock(width, width, groups) for _ in range(blocks)))
        self.norm1 = nn.GroupNorm(groups, width, eps=1e-6)
        self.conv2 = CausalConv3d(width, 2 * cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for i, blocks in enumerate(self.block_res_blocks):
            x = blocks(x)
            if i < len(self.conv_blocks):
                x = self.conv_blocks[i](x)
        return self.conv2(F.silu(self.norm1(self.res_blocks(x))))


class TimeUpsample(CausalConv3d):
    """Causal conv to doubled channels, then depth-to-space on time: `(B, C, T, ...) -> (B, C', 2T, ...)`."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, 2 * cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        b, c2, t, h, w = x.shape
        x = x.view(b, c2 // 2, 2, t, h, w).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, c2 // 2, 2 * t, h, w)


class TemporalDecoder(nn.Module):
    def __init__(self, cin, cout, ch, mults, blocks, downsample, groups):
        super().__init__()
        width = ch * mults[-1]
        self.conv1 = CausalConv3d(cin, width, 3)
        self.res_blocks = nn.Sequential(*(ResBlock(width, width, groups) for _ in range(blocks)))
        levels = len(mults)
        self.block_res_blocks = nn.ModuleList([nn.Identity()] * levels)
        self.conv_blocks = nn.ModuleList([nn.Identity()] * (levels - 1))
        for i in reversed(range(levels)):
            out = ch * mults[i]
            self.block_res_blocks[i] = nn.Sequential(
                *(ResBlock(width if j == 0 else out, out, groups) for j in range(blocks))
            )
            width = out
            if i > 0 and downsample[i - 1]:
                self.conv_blocks[i - 1] = TimeUpsample(width, width)
        self.norm1 = nn.GroupNorm(groups, width, eps=1e-6)
        self.conv_out = CausalConv3d(width, cout, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.res_blocks(self.conv1(z))
        for i in reversed(range(len(self.block_res_blocks))):
            x = self.block_res_blocks[i](x)
            if i > 0:
                x = self.conv_blocks[i - 1](x)
        return self.conv_out(F.silu(self.norm1(x)))


class TemporalVAE(nn.Module):
    """The causal temporal VAE over 2D-VAE latents (4x in time, none in space)."""

    def __init__(self, channels: int, ch: int, mults, blocks: int, downsample, groups: int):
        super().__init__()
        self.encoder = TemporalEncoder(channels, channels, ch, mults, blocks, downsample, groups)
        self.quant_conv = CausalConv3d(2 * channels, 2 * channels, 1)
        self.post_quant_conv = CausalConv3d(channels, channels, 1)
        self.decoder = TemporalDecoder(channels, channels, ch, mults, blocks, downsample, groups)
        self.factor = 2 ** sum(bool(d) for d in downsample)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, C, T, h, w)` -> posterior mean `(B, C, ceil(T/factor), h, w)` (front zero-padded)."""
        pad = (self.factor - x.shape[2] % self.factor) % self.factor
        x = F.pad(x, (0, 0, 0, 0, pad, 0))
        moments = self.quant_conv(self.encoder(x))
        return moments.chunk(2, dim=1)[0]

    def decode(self, z: torch.Tensor, frames: int) -> torch.Tensor:
        x = self.decoder(self.post_quant_conv(z))
        return x[:, :, x.shape[2] - frames :]


class SpatialWrapper(nn.Module):
    """Holds the 2D VAE under `module` (the official checkpoint's `spatial_vae.module.` prefix)."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.module = AutoencoderKL.from_config(config)


class OpenSoraVAE(ModelMixin, ConfigMixin):
    """Open-Sora 1.2's VAE pipeline as one model: `encode(video)` and `decode(latent, frames)`.

    Args:
        spatial: the 2D VAE's AutoencoderKL config (SDXL's by default).
        spatial_scaling: the factor on 2D latents (0.18215, as Open-Sora uses, not SDXL's own).
        temporal_channels, temporal_multipliers, temporal_res_blocks, temporal_downsample,
            norm_groups: the temporal VAE (128, (1, 2, 2, 4), 4, (False, True, True), 32).
        micro_frame_size: frames per temporal chunk (17, giving 5 latent frames).
        micro_batch_size: frames per 2D-VAE call (4; memory only, the result is the same).
        latent_shift, latent_scale: the normalisation (z - shift) / scale; the `shift` and
            `scale` buffers hold them (as the checkpoint does), and the checkpoint's values win.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        spatial: dict[str, Any] | None = None,
        spatial_scaling: float = 0.18215,
        latent_channels: int = 4,
        temporal_channels: int = 128,
        temporal_multipliers: tuple[int, ...] = (1, 2, 2, 4),
        temporal_res_blocks: int = 4,
        temporal_downsample: tuple[bool, ...] = (False, True, True),
        norm_groups: int = 32,
        micro_frame_size: int = 17,
        micro_batch_size: int = 4,
        latent_shift: tuple[float, ...] = SHIFT,
        latent_scale: tuple[float, ...] = SCALE,
    ):
        super().__init__()
        self.spatial_vae = SpatialWrapper(spatial or SDXL_VAE)
        self.temporal_vae = TemporalVAE(
            latent_channels,
            temporal_channels,
            tuple(temporal_multipliers),
            temporal_res_blocks,
            tuple(temporal_downsample),
            norm_groups,
        )
        self.register_buffer("scale", torch.tensor(latent_scale, dtype=torch.float32))
        self.register_buffer("shift", torch.tensor(latent_shift, dtype=torch.float32))

    @property
    def encoder(self) -> nn.Module:
        """The 2D VAE's encoder: its `down_blocks`/`mid_block` are what IRA can anchor on."""
        return self.spatial_vae.module.encoder

    def latent_frames(self, frames: int) -> int:
        """Latent frames for `frames` video frames (17 -> 5, 51 -> 15, 1 -> 1)."""
        chunk, factor = self.config.micro_frame_size, self.temporal_vae.factor
        whole, rest = divmod(frames, chunk)
        return whole * -(-chunk // factor) + -(-rest // factor)

    def _norm(self, z: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1, 1)
        return (z - self.shift.view(shape).to(z)) / self.scale.view(shape).to(z)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """`(B, 3, T, H, W)` in [-1, 1] -> normalised latent `(B, 4, T', H/8, W/8)` (posterior means)."""
        b, _, t = video.shape[:3]
        frames = video.permute(0, 2, 1, 3, 4).reshape(b * t, *video.shape[1:2], *video.shape[3:])
        vae = self.spatial_vae.module
        parts = [
            vae.encode(frames[i : i + self.config.micro_batch_size]).latent_dist.mode()
            for i in range(0, b * t, self.config.micro_batch_size)
        ]
        z = torch.cat(parts) * self.config.spatial_scaling
        z = z.view(b, t, *z.shape[1:]).permute(0, 2, 1, 3, 4)
        chunk = self.config.micro_frame_size
        z = torch.cat(
            [self.temporal_vae.encode(z[:, :, i : i + chunk]) for i in range(0, t, chunk)], dim=2
        )
        return self._norm(z)

    def decode(self, latent: torch.Tensor, frames: int) -> torch.Tensor:
        """Normalised latent -> video `(B, 3, frames, H, W)` in [-1, 1] (roughly)."""
        shape = (1, -1, 1, 1, 1)
        z = latent * self.scale.view(shape).to(latent) + self.shift.view(shape).to(latent)
        chunk, per = self.config.micro_frame_size, self.latent_frames(self.config.micro_frame_size)
        pieces, left = [], frames
        for i in range(0, z.shape[2], per):
            n = min(chunk, left)
            pieces.append(self.temporal_vae.decode(z[:, :, i : i + per], n))
            left -= n
        z = torch.cat(pieces, dim=2) / self.config.spatial_scaling
        b, c, t = z.shape[:3]
        flat = z.permute(0, 2, 1, 3, 4).reshape(b * t, c, *z.shape[3:])
        vae = self.spatial_vae.module
        out = torch.cat(
            [
                vae.decode(flat[i : i + self.config.micro_batch_size]).sample
                for i in range(0, b * t, self.config.micro_batch_size)
            ]
        )
        return out.view(b, t, *out.shape[1:]).permute(0, 2, 1, 3, 4)
