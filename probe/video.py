"""Writing generated videos: GIF or MP4, and a PNG strip of the frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from probe.errors import ToolkitError


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two tensors in [0, 1] (inf when identical)."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * float(np.log10(1.0 / mse))


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """`(F, 3, H, W)` in [0, 1] -> uint8 `(F, H, W, 3)`."""
    return (video.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_video(video: torch.Tensor, out: Path, fps: int = 8) -> Path:
    """Write `(F, 3, H, W)` as .gif (Pillow) or .mp4 (imageio-ffmpeg), atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = to_uint8(video)
    tmp = out.with_name(out.stem + ".tmp" + out.suffix)
    suffix = out.suffix.lower()
    if suffix == ".gif":
        imgs = [Image.fromarray(f) for f in frames]
        imgs[0].save(tmp, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
    elif suffix == ".mp4":
        try:
            import imageio.v2 as imageio

            imageio.mimwrite(tmp, list(frames), fps=fps, macro_block_size=1)
        except (ImportError, ValueError, RuntimeError) as exc:
            raise ToolkitError(f"cannot write MP4 ({exc}); `pip install imageio-ffmpeg` or use .gif") from None
    else:
        raise ToolkitError(f"unsupported video format {out.suffix!r}; use .gif or .mp4")
    tmp.replace(out)
    return out


def strip(video: torch.Tensor) -> np.ndarray:
    """Frames side by side: uint8 `(H, F*W, 3)`."""
    return np.concatenate(list(to_uint8(video)), axis=1)


def write_strip(video: torch.Tensor, out: Path) -> Path:
    """Write the frames side by side as one PNG."""
    Image.fromarray(strip(video)).save(out)
    return out
