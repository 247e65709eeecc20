"""Distortions a protected photo meets on its way to an attacker; deterministic under a seed.

`jpegQ` is real JPEG encoding (Pillow, 4:2:0 chroma subsampling as most platforms use), `blur` a
Gaussian blur (sigma 1 px), `noise` Gaussian noise (sigma 0.02), `resize50` down to half size and
back (bicubic), and `platform` a social network's stack: resize to 1080 px on the long side
(or 75% for small photos), JPEG 80, a 2% border crop, resized back to the original size.
`h264crfN` is one H.264 frame at CRF N (1-51) through diffusers' own function: what LTX-2's
pipeline does to every photo before it encodes it (CRF 33; 18 for LTX-2.5); it needs PyAV.
`vae` is purification by the evaluated model's own VAE (encode, decode), so it needs that model.
"""

from __future__ import annotations

import io
import re

import numpy as np
import torch
from PIL import Image, ImageFilter

from anti_i2v.core.common import to_uint8
from anti_i2v.models.backbones import Backbone
from anti_i2v.protect.config import DISTORTIONS as DEFAULT


def _pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(to_uint8(image), "RGB")


def _tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode and decode as JPEG at `quality`."""
    buf = io.BytesIO()
    _pil(image).save(buf, format="JPEG", quality=quality)
    return _tensor(Image.open(io.BytesIO(buf.getvalue())))


def resize_back(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Down-scale by `factor` and back (bicubic)."""
    img = _pil(image)
    w, h = img.size
    small = img.resize(
        (max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BICUBIC
    )
    return _tensor(small.resize((w, h), Image.Resampling.BICUBIC))


def h264(image: torch.Tensor, crf: int) -> torch.Tensor:
    """Re-compress as one H.264 frame at `crf` (diffusers' `apply_image_conditioning_crf`, the
    LTX-2 pipeline's own step). The codec needs even sides: an odd last row or column, which it
    drops, is given back as a copy of its neighbour, so the photo keeps its size."""
    from diffusers.pipelines.ltx2.utils import apply_image_conditioning_crf

    pixels = to_uint8(image)
    out = apply_image_conditioning_crf(pixels, crf)
    h, w = pixels.shape[:2]
    out = np.pad(out, ((0, h - out.shape[0]), (0, w - out.shape[1]), (0, 0)), mode="edge")
    return torch.from_numpy(out.astype(np.float32) / 255).permute(2, 0, 1)


def platform(image: torch.Tensor) -> torch.Tensor:
    """Resize + JPEG 80 + 2% crop, back to the original size."""
    img = _pil(image)
    w, h = img.size
    scale = min(1080 / max(w, h), 1.0) if max(w, h) > 1080 else 0.75
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    img = Image.open(io.BytesIO(buf.getvalue()))
    cw, ch = img.size
    dx, dy = max(1, round(cw * 0.02)), max(1, round(ch * 0.02))
    img = img.crop((dx, dy, cw - dx, ch - dy))
    return _tensor(img.resize((w, h), Image.Resampling.BICUBIC))


def distort(
    image: torch.Tensor, name: str, seed: int = 0, backbone: Backbone | None = None
) -> torch.Tensor:
    """Apply a named distortion to `(3, H, W)` in [0, 1] (`vae` needs the evaluated `backbone`)."""
    if name == "none":
        return image
    if name == "vae":
        if backbone is None:
            raise ValueError("the vae distortion purifies with a model's VAE: pass the backbone")
        return backbone.vae_roundtrip(image)
    if m := re.fullmatch(r"jpeg(\d+)", name):
        return jpeg(image, int(m.group(1)))
    if name == "blur":
        return _tensor(_pil(image).filter(ImageFilter.GaussianBlur(1.0)))
    if name == "noise":
        noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(seed)) * 0.02
        return (image + noise).clamp(0, 1)
    if m := re.fullmatch(r"resize(\d+)", name):
        return resize_back(image, int(m.group(1)) / 100)
    if name == "platform":
        return platform(image)
    if m := re.fullmatch(r"h264crf(\d+)", name):
        return h264(image, int(m.group(1)))
    raise ValueError(f"unknown distortion {name!r}; choose from none, {', '.join(DEFAULT)}")
