"""DynamiCrafter's image path: the OpenCLIP ViT-H-14 visual tower and the Resampler.

The image, in [-1, 1], is resized to 224 px and CLIP-normalised; the tower's tokens before its
final norm, `(B, 257, 1280)`, go through the Resampler, which reads them with 256 learned
queries (16 per frame for 16 frames) into `(B, 256, 1024)` image tokens for the UNet's context.

Both are written here from the facts. The tower keeps open_clip's parameter names (`conv1`,
`class_embedding`, `transformer.resblocks.N.attn.in_proj_weight`, ...), so the checkpoint's
`embedder.model.visual.*` weights load unchanged, and the Resampler keeps the names under the
checkpoint's `image_proj_model.`. open-clip-torch is not needed: the tower is a plain
pre-norm ViT, and the toolkit never tokenises text (text features come saved).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# CLIP's pixel normalisation (OpenAI's constants, which OpenCLIP's ViT-H-14 also uses).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers)
        )


class OpenCLIPVisionTower(ModelMixin, ConfigMixin):
    """OpenCLIP's ViT visual tower (ViT-H-14 with the defaults: 632 M parameters).

    Args:
        image_size, patch_size: 224 and 14 (257 tokens with the class token).
        width, layers, heads, mlp_ratio: 1280, 32, 16, 4.0.
        output_dim: the projection's width (1024); kept for the checkpoint, unused by DynamiCrafter.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 14,
        width: int = 1280,
        layers: int = 32,
        heads: int = 16,
        mlp_ratio: float = 4.0,
        output_dim: int = 1024,
    ):
        super().__init__()
        grid = image_size // patch_size
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_ratio)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))
        self.gradient_checkpointing = False

    def pixels(self, image: torch.Tensor) -> torch.Tensor:
        """`(B, 3, H, W)` in [-1, 1] -> CLIP input at `image_size` (bicubic, antialiased), differentiably."""
        size = self.config.image_size
        x = F.interpolate(
            image, size=(size, size), mode="bicubic", antialias=True, align_corners=False
        )
        x = (x + 1) / 2
        mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """`(B, 3, H, W)` in [-1, 1] -> every token before `ln_post`, `(B, 1 + grid^2, width)`."""
        x = self.pixels(image).to(self.conv1.weight.dtype)
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype))
        for block in self.transformer.resblocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x)
            else:
                x = block(x)
        return x


class PerceiverAttention(nn.Module):
    """Latent queries attend to [image tokens | latents] (IP-Adapter's Resampler attention)."""

    def __init__(self, dim: int, head_dim: int, heads: int):
        super().__init__()
        inner = head_dim * heads
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x, latents = self.norm1(x), self.norm2(latents)

        def heads(t):
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        q = heads(self.to_q(latents))
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(q, heads(k), heads(v))
        return self.to_out(out.transpose(1, 2).flatten(2))


class Resampler(ModelMixin, ConfigMixin):
    """Image tokens `(B, N, embedding_dim)` -> `(B, num_queries, output_dim)` (48,787,456 parameters).

    Args:
        dim, depth, head_dim, heads: the latent width and its attention (1024, 4, 64, 12).
        num_queries: learned queries: tokens per frame x frames (16 x 16 = 256).
        embedding_dim: the image tower's width (1280); output_dim: the UNet's context width (1024).
        ff_mult: the feed-forward's width multiple (4).
    """

    @register_to_config
    def __init__(
        self,
        dim: int = 1024,
        depth: int = 4,
        head_dim: int = 64,
        heads: int = 12,
        num_queries: int = 256,
        embedding_dim: int = 1280,
        output_dim: int = 1024,
        ff_mult: int = 4,
    ):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim**0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PerceiverAttention(dim, head_dim, heads),
                    nn.Sequential(
                        nn.LayerNorm(dim),
                        nn.Linear(dim, dim * ff_mult, bias=False),
                        nn.GELU(),
                        nn.Linear(dim * ff_mult, dim, bias=False),
                    ),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latents = self.latents.expand(x.shape[0], -1, -1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = latents + attn(x, latents)
            latents = latents + ff(latents)
        return self.norm_out(self.proj_out(latents))
