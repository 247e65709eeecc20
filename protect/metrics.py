"""Evaluation metrics: pure functions over images `(3, H, W)` and videos `(F, 3, H, W)` in [0, 1].

PSNR of identical inputs is `inf` (kept in results.csv; summaries cap it at `PSNR_CAP` dB).
Temporal coherence is the mean SSIM of consecutive frames (1 for a still video).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import structural_similarity

from anti_i2v.core.common import psnr

__all__ = [
    "psnr",
    "ssim",
    "ssim_video",
    "temporal_coherence",
    "delta_e",
    "identity_similarity",
    "bootstrap_ci",
]

PSNR_CAP = 100.0


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """SSIM of two `(3, H, W)` images (scikit-image, Gaussian-free 7x7 windows or smaller)."""
    x, y = a.permute(1, 2, 0).double().numpy(), b.permute(1, 2, 0).double().numpy()
    side = min(x.shape[:2])
    win = 7 if side >= 7 else max(3, side - (1 - side % 2))
    return float(structural_similarity(x, y, channel_axis=2, data_range=1.0, win_size=win))


def ssim_video(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-frame SSIM of two videos."""
    return float(np.mean([ssim(x, y) for x, y in zip(a, b, strict=True)]))


def temporal_coherence(video: torch.Tensor) -> float:
    """Mean SSIM between consecutive frames."""
    if video.shape[0] < 2:
        return 1.0
    return float(np.mean([ssim(video[i], video[i + 1]) for i in range(video.shape[0] - 1)]))


def delta_e_map(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """`(H, W)` CIEDE2000 colour difference of two images `(3, H, W)` in [0, 1] (scikit-image)."""
    la = rgb2lab(a.permute(1, 2, 0).double().numpy())
    lb = rgb2lab(b.permute(1, 2, 0).double().numpy())
    return deltaE_ciede2000(la, lb)


def delta_e(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean CIEDE2000 colour difference of two images."""
    return float(delta_e_map(a, b).mean())


# A cloak's visibility is also read at this percentile of its pixels' CIEDE2000: a mean can hide
# a patch that shows.
DELTA_E_PERCENTILE = 95


def identity_similarity(encoder, frames: torch.Tensor, photo: torch.Tensor) -> float:
    """Mean cosine of each frame's identity embedding with the photo's (ISM)."""
    with torch.no_grad():
        return float((encoder(frames.float()) @ encoder(photo[None].float())[0]).mean())


def bootstrap_ci(
    values: np.ndarray, reps: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (seeded)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(reps, len(values)), replace=True).mean(axis=1)
    lo, hi = np.percentile(means, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)
