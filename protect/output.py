"""Writing cloaked photos: lossless PNG, no metadata, at the original size and orientation."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from probe.common import atomic_path, to_uint8


def write_png(image: torch.Tensor, path: Path) -> Path:
    """Save a PNG with no EXIF, GPS, ICC or text chunks, atomically."""
    # A fresh Image from raw pixels carries no metadata; PNG is lossless.
    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(image), "RGB").save(tmp, format="PNG", optimize=False)
    return path
