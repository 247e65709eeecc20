"""Writing cloaked photos: lossless PNG, no metadata, at the original size and orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from probe.common import atomic_path, to_uint8


def write_png(image: torch.Tensor, path: Path) -> Path:
    """Save `(3, H, W)` in [0, 1] as a PNG with no EXIF, GPS, ICC or text chunks, atomically."""
    return write_png_uint8(to_uint8(image), path)


def write_png_uint8(pixels: np.ndarray, path: Path) -> Path:
    """Save uint8 `(H, W, 3)` as a PNG with no metadata, atomically."""
    # A fresh Image from raw pixels carries no metadata; PNG is lossless.
    with atomic_path(path) as tmp:
        Image.fromarray(pixels, "RGB").save(tmp, format="PNG", optimize=False)
    return path
