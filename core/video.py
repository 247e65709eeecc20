"""Writing generated videos: GIF or MP4, and a PNG strip of the frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anti_i2v.core.common import ToolkitError, atomic_path, to_uint8


def write_video(video: torch.Tensor, out: Path, fps: int = 8) -> Path:
    """Write `(F, 3, H, W)` as .gif (Pillow) or .mp4 (imageio-ffmpeg), atomically."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ToolkitError(f"unsupported video format {out.suffix!r}; use .gif or .mp4")
    frames = to_uint8(video)
    with atomic_path(out) as tmp:
        if suffix == ".gif":
            imgs = [Image.fromarray(f) for f in frames]
            imgs[0].save(
                tmp, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0
            )
        else:
            try:
                import imageio.v2 as imageio

                imageio.mimwrite(tmp, list(frames), fps=fps, macro_block_size=1)
            except (ImportError, ValueError, RuntimeError) as exc:
                raise ToolkitError(
                    f"cannot write MP4 ({exc}); `pip install imageio-ffmpeg` or use .gif"
                ) from None
    return out


def strip(video: torch.Tensor) -> np.ndarray:
    """Frames side by side: uint8 `(H, F*W, 3)`."""
    return np.concatenate(list(to_uint8(video)), axis=1)


def write_strip(video: torch.Tensor, out: Path) -> Path:
    """Write the frames side by side as one PNG (atomically)."""
    with atomic_path(out) as tmp:
        Image.fromarray(strip(video)).save(tmp)
    return out
