"""Reading users' photos: any size, mode or orientation, with one clear error when unreadable."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from probe.common import ToolkitError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
MAX_PIXELS = 200_000_000  # refuse decompression bombs, allow real large photos


@dataclass(frozen=True)
class Photo:
    """A decoded photo: `pixels (3, H, W)` in [0, 1], upright, plus where it came from."""

    path: Path
    pixels: torch.Tensor
    sha256: str
    original_mode: str

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) after EXIF rotation."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[2])


def gather_images(inputs: list[Path]) -> list[Path]:
    """Expand folders into their image files (sorted); files are kept as given."""
    out: list[Path] = []
    for p in inputs:
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
        else:
            out.append(p)
    if not out:
        raise ToolkitError(f"no images found in {', '.join(map(str, inputs))}; pass image files or folders of them")
    return out


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> float32 RGB in [0, 1]; alpha is composited on white, 16-bit kept precise."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float32)
        a = a / (65535.0 if a.max() > 255 else 255.0)
        return np.repeat(a[..., None], 3, axis=2).clip(0, 1)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def load_photo(path: Path, max_side: int | None = None) -> Photo:
    """Decode an image file upright as RGB; `max_side` shrinks huge photos while decoding."""
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"cannot read {path}: no such file; check the path")
    data = path.read_bytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            img = Image.open(path)
            img.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ToolkitError(
            f"cannot read {path}: not a supported image or too large ({type(exc).__name__}); "
            "re-export it as PNG or JPEG"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ToolkitError(f"cannot read {path}: the file is corrupt or truncated ({exc}); re-export it") from None
    mode = img.mode
    img = ImageOps.exif_transpose(img)  # phones store rotation in EXIF; the pixels are sideways
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    pixels = torch.from_numpy(_to_rgb_array(img)).permute(2, 0, 1).contiguous()
    return Photo(path=path, pixels=pixels, sha256=hashlib.sha256(data).hexdigest(), original_mode=mode)
