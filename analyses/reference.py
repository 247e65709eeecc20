"""Reference vision encoder (DINO, CLIP, ... through transformers): patch features of photos."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from rich.console import Console

from probe.images import Photo

console = Console(stderr=True)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def reference_features(model_id: str, photos: list[Photo]) -> dict[str, torch.Tensor] | None:
    """Patch features `(h, w, C)` per photo name, or None (with one line) when the encoder is unavailable."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    try:
        config = AutoConfig.from_pretrained(model_id)
        model = AutoModel.from_pretrained(model_id, use_safetensors=True).eval()
    except (OSError, ValueError) as exc:
        console.print(f"[yellow]note:[/] reference encoder {model_id!r} unavailable ({type(exc).__name__}); "
                      "reference_cka skipped. Pass a local folder to --reference to use one offline")
        return None
    vision = getattr(config, "vision_config", config)
    size = int(getattr(vision, "image_size", 224))
    try:
        proc = AutoImageProcessor.from_pretrained(model_id)
        mean, std = proc.image_mean, proc.image_std
    except (OSError, ValueError, AttributeError):
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    encoder = getattr(model, "vision_model", model)
    out = {}
    with torch.no_grad():
        for photo in photos:
            x = F.interpolate(photo.pixels[None], size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)
            x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
            tokens = encoder(pixel_values=x).last_hidden_state[0]
            side = math.isqrt(tokens.shape[0] - 1)
            patches = tokens[-side * side :]  # drop CLS (and any register tokens before the patches)
            out[photo.name] = patches.reshape(side, side, -1)
    return out
