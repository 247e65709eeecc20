"""Reference vision encoder (DINO, CLIP, ... through transformers): patch features of photos."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from rich.console import Console

from anti_i2v.core.images import Photo

console = Console(stderr=True)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class VisionEncoder:
    """A transformers vision encoder with its input size and normalisation."""

    def __init__(self, model, size: int, mean, std):
        self.encoder = getattr(model, "vision_model", model)  # CLIP keeps its vision tower inside
        self.size, self.mean, self.std = (
            size,
            torch.tensor(mean).view(1, 3, 1, 1),
            torch.tensor(std).view(1, 3, 1, 1),
        )

    @torch.no_grad()
    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Last hidden states `(B, tokens, C)` of images `(B, 3, H, W)` in [0, 1]."""
        x = F.interpolate(
            images.float(), size=(self.size, self.size), mode="bicubic", antialias=True
        ).clamp(0, 1)
        return self.encoder(pixel_values=(x - self.mean) / self.std).last_hidden_state

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-length image embeddings `(B, C)`: the CLS token, as DINO and CLIP evaluations use."""
        return F.normalize(self.tokens(images)[:, 0], dim=-1)


def load_vision_encoder(model_id: str, purpose: str) -> VisionEncoder | None:
    """A vision encoder from a hub id or folder (safetensors), or None with one line saying why."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    try:
        config = AutoConfig.from_pretrained(model_id)
        model = AutoModel.from_pretrained(model_id, use_safetensors=True).eval()
    except (OSError, ValueError) as exc:
        console.print(
            f"[yellow]note:[/] reference encoder {model_id!r} unavailable ({type(exc).__name__}); "
            f"{purpose} skipped. Pass a local folder to --reference to use one offline"
        )
        return None
    vision = getattr(config, "vision_config", config)
    try:
        proc = AutoImageProcessor.from_pretrained(model_id)
        mean, std = proc.image_mean, proc.image_std
    except (OSError, ValueError, AttributeError):
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return VisionEncoder(model, int(getattr(vision, "image_size", 224)), mean, std)


def reference_features(model_id: str, photos: list[Photo]) -> dict[str, torch.Tensor] | None:
    """Patch features `(h, w, C)` per photo name, or None (with one line) when the encoder is unavailable."""
    encoder = load_vision_encoder(model_id, "reference_cka")
    if encoder is None:
        return None
    out = {}
    for photo in photos:
        tokens = encoder.tokens(photo.pixels[None])[0]
        side = math.isqrt(tokens.shape[0] - 1)
        patches = tokens[-side * side :]  # drop CLS (and any register tokens before the patches)
        out[photo.name] = patches.reshape(side, side, -1)
    return out
