"""Reading users' photos: any size, mode or orientation, with one clear error when unreadable."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from anti_i2v.core.common import NAME_MAX, ToolkitError, file_sha256

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
# Refuse decompression bombs, allow real large photos (PIL itself refuses above 2 x its 89.5 MP).
MAX_PIXELS = 170_000_000


@dataclass(frozen=True)
class Photo:
    """A decoded photo, upright, plus where it came from.

    `array` is `(H, W, 3)`, uint8 for 8-bit sources (float32 in [0, 1] for 16-bit ones): a
    12000 px photo stays 432 MB, not the 1.7 GB a float copy would take. `pixels` and
    `work_pixels` give float tensors when a stage needs them.
    """

    path: Path
    array: np.ndarray
    sha256: str
    original_mode: str

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) after EXIF rotation."""
        return int(self.array.shape[0]), int(self.array.shape[1])

    @property
    def pixels(self) -> torch.Tensor:
        """The whole photo as float `(3, H, W)` in [0, 1] (a full-size copy: small photos only)."""
        return to_chw_float(self.array)

    def work_size(self, max_side: int) -> tuple[int, int]:
        """(h, w) of `work_pixels(max_side)`, without resizing anything."""
        h, w = self.size
        if max(h, w) <= max_side:
            return h, w
        scale = max_side / max(h, w)
        return max(1, round(h * scale)), max(1, round(w * scale))

    def work_pixels(self, max_side: int) -> torch.Tensor:
        """Float `(3, h, w)` in [0, 1], shrunk (antialiased) so the long side is at most `max_side`."""
        if max(self.size) <= max_side:
            return self.pixels
        size = self.work_size(max_side)[::-1]  # (w, h), as PIL takes it
        if self.array.dtype == np.uint8:  # resized as uint8: no full-size float copy
            return to_chw_float(
                np.asarray(Image.fromarray(self.array).resize(size, Image.Resampling.LANCZOS))
            )
        x = torch.from_numpy(self.array).permute(2, 0, 1)[None]
        return F.interpolate(x, size=size[::-1], mode="bilinear", antialias=True)[0].clamp(0, 1)


def to_chw_float(array: np.ndarray) -> torch.Tensor:
    """`(H, W, 3)` uint8 (or float in [0, 1]) -> float `(3, H, W)` in [0, 1]."""
    ok = array.flags.writeable and array.flags.c_contiguous  # PIL's arrays are read-only views
    x = torch.from_numpy(array if ok else np.array(array)).permute(2, 0, 1)
    return (x.float() / 255) if array.dtype == np.uint8 else x.float().clamp(0, 1)


def gather_images(inputs: list[Path]) -> list[Path]:
    """Expand folders into their image files (sorted); files are kept as given."""
    out: list[Path] = []
    for p in inputs:
        if p.is_dir():
            out += sorted(
                q
                for q in p.iterdir()
                # Hidden files are never photos: the toolkit's own temporary and journal files
                # (`.NAME.cloak.png`) and other tools' (macOS `._NAME.jpg`) start with a dot.
                if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file() and not q.name.startswith(".")
            )
        else:
            out.append(p)
    if not out:
        raise ToolkitError(
            f"no images found in {', '.join(map(str, inputs))}; pass image files or folders of them"
        )
    return out


# The longest suffix the toolkit adds to a photo's name (`NAME.original.jpeg`, `NAME.loss.png`):
# a name longer than the file system's limit minus this cannot get its outputs.
LONGEST_SUFFIX = len(".original.jpeg")


def check_file_name(path: Path) -> None:
    """One line when a photo's name cannot travel into stores, sidecars and CSVs (not valid
    UTF-8), or is too long for the files the toolkit writes beside it."""
    try:
        encoded = path.name.encode("utf-8")
    except UnicodeEncodeError:
        raise ToolkitError(
            f"cannot use {path.name!r}: its file name is not valid UTF-8; rename it"
        ) from None
    stem = len(path.stem.encode("utf-8"))
    if stem + LONGEST_SUFFIX > NAME_MAX:
        raise ToolkitError(
            f"cannot use {path.name[:40]}...: its name is {len(encoded)} bytes, and the files "
            f"written beside it need at most {NAME_MAX - LONGEST_SUFFIX} before the suffix; "
            "rename it shorter"
        )


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> RGB `(H, W, 3)`: uint8 for 8-bit modes, float32 in [0, 1] for 16-bit ones.

    Alpha is composited on white.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float32)
        a = a / (65535.0 if a.max() > 255 else 255.0)
        return np.repeat(a[..., None], 3, axis=2).clip(0, 1)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.array(img.convert("RGB"), dtype=np.uint8)  # a writable copy: torch shares it


def load_photo(path: Path, max_side: int | None = None) -> Photo:
    """Decode an image file upright as RGB; `max_side` shrinks huge photos while decoding."""
    path = Path(path)
    if path.is_dir():
        raise ToolkitError(f"cannot read {path}: it is a folder; pass an image file")
    if not path.is_file():
        raise ToolkitError(f"cannot read {path}: no such file; check the path")
    check_file_name(path)
    sha256 = file_sha256(path)
    try:
        with warnings.catch_warnings():
            # Our own limit is below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
            # Checked here, per photo, instead of setting PIL's global MAX_IMAGE_PIXELS on every load.
            if img.size[0] * img.size[1] > MAX_PIXELS:
                raise Image.DecompressionBombError(f"{img.size[0]}x{img.size[1]} pixels")
            if max_side:  # JPEG decodes straight to a smaller scale: no full-size copy
                img.draft("RGB", (max_side, max_side))
            img.load()
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ToolkitError(
            f"cannot read {path}: not a supported image or too large ({type(exc).__name__}); "
            "re-export it as PNG or JPEG"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ToolkitError(
            f"cannot read {path}: the file is corrupt or truncated ({exc}); re-export it"
        ) from None
    mode = img.mode
    img = ImageOps.exif_transpose(img)  # phones store rotation in EXIF; the pixels are sideways
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return Photo(path=path, array=_to_rgb_array(img), sha256=sha256, original_mode=mode)
