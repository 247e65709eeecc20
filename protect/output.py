"""Writing cloaked photos: lossless PNG, no metadata, at the original size and orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """`(3, H, W)` in [0, 1] -> uint8 `(H, W, 3)` (rounded, so a re-read is within 0.5/255)."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def write_png(image: torch.Tensor, path: Path) -> Path:
    """Save a PNG with no EXIF, GPS, ICC or text chunks, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # A fresh Image from raw pixels carries no metadata; PNG is lossless.
    Image.fromarray(to_uint8(image), "RGB").save(tmp, format="PNG", optimize=False)
    tmp.replace(path)
    return path
