"""DynamiCrafter's 3D UNet: an SD-style UNet whose blocks add temporal convolutions and attention.

Written from the architecture facts in `shared/models/opensora-dynamicrafter.md`; names and shapes
equal the official `model.ckpt` (prefix `model.diffusion_model.`), checked against the shipped key
list, so a converted state dict loads with no key map (`temopral_conv` is spelled as the keys spell it).

Frames travel in the batch: every block takes and returns `(B*T, C, h, w)`, (b t) order. A
ResBlock adds four temporal convolutions (kernel 3 over T); a SpatialTransformer attends within
each frame and cross-attends to text and, through separate `to_k_ip`/`to_v_ip`, to the image
tokens (the two attentions summed, scale 1); a TemporalTransformer attends over T at every
location (both of its attentions are self-attention, with no positional encoding).

UNVERIFIED without the weights (the keys do not fix them): the head counts of `init_attn` (taken
as 8 x 64) and GroupNorm's 32 groups (SD's), and that a temporal transformer's norm is a GroupNorm
over (C, T) per location. Plain PyTorch attention (SDPA) throughout; no xformers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from anti_i2v.models.opensora.stdit3 import timestep_sinusoid


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-5)


class TemporalConvBlock(nn.Module):
    """Four (norm, SiLU, Conv3d over T) stages with a residual: `(B, C, T, h, w)` in and out."""

    def __init__(self, channels: int, groups: int):
        super().__init__()

        def conv():
            return nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))

        self.conv1 = nn.Sequential(group_norm(channels, groups), nn.SiLU(), conv())
        self.conv2 = nn.Sequential(group_norm(channels, groups), nn.SiLU(), nn.Dropout(0.0), conv())
        self.conv3 = nn.Sequential(group_norm(channels, groups), nn.SiLU(), nn.Dropout(0.0), conv())
        self.conv4 = nn.Sequential(group_norm(channels, groups), nn.SiLU(), nn.Dropout(0.0), conv())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv4(self.conv3(self.conv2(self.conv1(x))))


class ResBlock(nn.Module):
    """SD's ResBlock (timestep added after the first conv), then the temporal convolutions."""

    def __init__(self, cin: int, cout: int, emb: int, groups: int, temporal_conv: bool):
        super().__init__()
        self.in_layers = nn.Sequential(
            group_norm(cin, groups), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, cout))
        self.out_layers = nn.Sequential(
            group_norm(cout, groups),
            nn.SiLU(),
            nn.Dropout(0.0),
            nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.skip_connection = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        if temporal_conv:
            self.temopral_conv = TemporalConvBlock(cout, groups)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, frames: int) -> torch.Tensor:
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        h = self.skip_connection(x) + self.out_layers(h)
        if hasattr(self, "temopral_conv"):
            bt, c, hh, ww = h.shape
            v = h.view(bt // frames, frames, c, hh, ww).transpose(1, 2)
            h = self.temopral_conv(v).transpose(1, 2).reshape(bt, c, hh, ww)
        return h


class Attention(nn.Module):
    """to_q/to_k/to_v (no bias), SDPA, to_out; with `image_dim`, a second key/value pair for image tokens."""

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        context_dim: int | None = None,
        image: bool = False,
    ):
        super().__init__()
        inner, context_dim = heads * head_dim, context_dim or dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(0.0))
        if image:
            self.to_k_ip = nn.Linear(context_dim, inner, bias=False)
            self.to_v_ip = nn.Linear(context_dim, inner, bias=False)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        def heads(t):
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
        return out.transpose(1, 2).flatten(2)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        context = x if context is None else context
        out = self._attend(self.to_q(x), self.to_k(context), self.to_v(context))
        if image is not None:  # image tokens: their own keys and values, summed with scale 1
            out = out + self._attend(self.to_q(x), self.to_k_ip(image), self.to_v_ip(image))
        return self.to_out(out)


class GEGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(
            GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention (or a second self-attention), GEGLU feed-forward; pre-norm."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None, image: bool):
        super().__init__()
        self.attn1 = Attention(dim, heads, head_dim)
        self.ff = FeedForward(dim)
        self.attn2 = Attention(dim, heads, head_dim, context_dim, image)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x, context=None, image=None) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context, image)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Attention within each frame: `(B*T, C, h, w)` as h*w tokens; text and image cross-attention."""

    def __init__(self, channels: int, heads: int, head_dim: int, context_dim: int, groups: int):
        super().__init__()
        inner = heads * head_dim
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, head_dim, context_dim, image=True)]
        )
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        bt, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))
        for block in self.transformer_blocks:
            tokens = block(tokens, text, image)
        return x + self.proj_out(tokens).transpose(1, 2).reshape(bt, c, h, w)


class TemporalTransformer(nn.Module):
    """Attention over T at every location; Linear projections, or Conv1d ones (`init_attn`)."""

    def __init__(
        self, channels: int, heads: int, head_dim: int, groups: int, conv_proj: bool = False
    ):
        super().__init__()
        inner = heads * head_dim
        self.conv_proj = conv_proj
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        proj = (lambda i, o: nn.Conv1d(i, o, 1)) if conv_proj else nn.Linear
        self.proj_in = proj(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, head_dim, None, image=False)]
        )
        self.proj_out = proj(inner, channels)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        bt, c, h, w = x.shape
        # (B*T, C, h, w) -> (B*h*w, C, T): one sequence of T per location
        seq = x.view(bt // frames, frames, c, h * w).permute(0, 3, 2, 1).reshape(-1, c, frames)
        seq = self.norm(seq)
        if self.conv_proj:
            tokens = self.proj_in(seq).transpose(1, 2)
        else:
            tokens = self.proj_in(seq.transpose(1, 2))
        for block in self.transformer_blocks:
            tokens = block(tokens)
        out = (
            self.proj_out(tokens.transpose(1, 2)).transpose(1, 2)
            if self.conv_proj
            else self.proj_out(tokens)
        )
        out = out.reshape(bt // frames, h * w, frames, c).permute(0, 2, 3, 1).reshape(bt, c, h, w)
        return x + out


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class TimestepEmbedSequential(nn.Sequential):
    """A block: its layers in order, each given what it takes (timestep, text/image, frames)."""

    def forward(self, x, emb, text, image, frames):  # noqa: D102
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb, frames)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, text, image)
            elif isinstance(layer, TemporalTransformer):
                x = layer(x, frames)
            else:
                x = layer(x)
        return x


class DynamiCrafterUNet(ModelMixin, ConfigMixin):
    """DynamiCrafter's UNet (1,438,854,980 parameters with the defaults, both 512 and 1024).

    Args:
        in_channels: noisy latent + the repeated image latent (4 + 4).
        out_channels: the v-prediction's channels (4).
        model_channels, channel_mult, num_res_blocks: widths (320, (1, 2, 4, 4), 2).
        attention_levels: levels with transformers (0, 1, 2: downsampling factors 1, 2, 4).
        head_dim: channels per attention head (64).
        context_dim: text and image token width (1024).
        text_length: text tokens at the front of the context (77); the rest are image tokens.
        image_tokens_per_frame: when the context holds this many per frame, frame i gets its own
            (16, with 256 tokens for 16 frames); otherwise every frame sees all image tokens.
        norm_groups: GroupNorm groups (32).
        init_attn_heads: heads of `init_attn`, the temporal transformer after the input conv (8).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["TimestepEmbedSequential"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 8,
        out_channels: int = 4,
        model_channels: int = 320,
        channel_mult: tuple[int, ...] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        attention_levels: tuple[int, ...] = (0, 1, 2),
        head_dim: int = 64,
        context_dim: int = 1024,
        text_length: int = 77,
        image_tokens_per_frame: int = 16,
        norm_groups: int = 32,
        init_attn_heads: int = 8,
    ):
        super().__init__()
        ch, g, emb = model_channels, norm_groups, model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(ch, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.fps_embedding = nn.Sequential(nn.Linear(ch, emb), nn.SiLU(), nn.Linear(emb, emb))

        def transformers(width: int) -> list[nn.Module]:
            heads = width // head_dim
            return [
                SpatialTransformer(width, heads, head_dim, context_dim, g),
                TemporalTransformer(width, heads, head_dim, g),
            ]

        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))]
        )
        self.init_attn = TimestepEmbedSequential(
            TemporalTransformer(ch, init_attn_heads, head_dim, g, conv_proj=True)
        )
        skips, width = [ch], ch
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(width, mult * ch, emb, g, True)]
                width = mult * ch
                if level in attention_levels:
                    layers += transformers(width)
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skips.append(width)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(width)))
                skips.append(width)
        self.middle_block = TimestepEmbedSequential(
            ResBlock(width, width, emb, g, True),
            *transformers(width),
            ResBlock(width, width, emb, g, True),
        )
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(width + skips.pop(), mult * ch, emb, g, True)]
                width = mult * ch
                if level in attention_levels:
                    layers += transformers(width)
                if level and i == num_res_blocks:
                    layers.append(Upsample(width))
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(
            group_norm(width, g), nn.SiLU(), nn.Conv2d(width, out_channels, 3, padding=1)
        )
        self.gradient_checkpointing = False

    def _run(self, block: nn.Module, *args) -> torch.Tensor:
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(block, *args)
        return block(*args)

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, fs: torch.Tensor
    ) -> torch.Tensor:
        """One denoiser pass.

        Args:
            x: `(B, 8, T, h, w)`: the noisy latent and the image latent repeated over T, on channels.
            timesteps: `(B,)` DDPM timesteps (0..999).
            context: `(B, text_length + N, context_dim)`: text tokens, then N image tokens
                (N = image_tokens_per_frame * T gives each frame its own).
            fs: `(B,)` frame stride / fps, added to the timestep embedding.

        Returns:
            `(B, 4, T, h, w)`: the v-prediction.
        """
        cfg = self.config
        b, _, frames, h, w = x.shape
        dtype = self.time_embed[0].weight.dtype
        emb = self.time_embed(timestep_sinusoid(timesteps, cfg.model_channels).to(dtype))
        emb = emb + self.fps_embedding(timestep_sinusoid(fs, cfg.model_channels).to(dtype))
        emb = emb.repeat_interleave(frames, dim=0)
        text, image = context[:, : cfg.text_length], context[:, cfg.text_length :]
        text = text.repeat_interleave(frames, dim=0).to(dtype)
        if image.shape[1] == cfg.image_tokens_per_frame * frames:  # each frame its own tokens
            image = image.reshape(b * frames, cfg.image_tokens_per_frame, -1)
        else:
            image = image.repeat_interleave(frames, dim=0)
        image = image.to(dtype)
        hidden = x.transpose(1, 2).reshape(b * frames, -1, h, w).to(dtype)
        skips = []
        for i, block in enumerate(self.input_blocks):
            hidden = self._run(block, hidden, emb, text, image, frames)
            if i == 0:
                hidden = self._run(self.init_attn, hidden, emb, text, image, frames)
            skips.append(hidden)
        hidden = self._run(self.middle_block, hidden, emb, text, image, frames)
        for block in self.output_blocks:
            hidden = self._run(
                block, torch.cat([hidden, skips.pop()], dim=1), emb, text, image, frames
            )
        out = self.out(hidden)
        return out.view(b, frames, *out.shape[1:]).transpose(1, 2)
