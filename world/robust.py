"""The augmentations a face recogniser is trained with, for the mini world's v2 identity judge.

A judge that reads a cloak's colour shift as a new identity measures colour, not identity
(the honest-efficacy issue). Real recognisers are trained to ignore camera and compression
changes; these are the same changes at the mini world's scale, applied per image under a seed:
- colour and white balance: smooth random fields on a* and b* (up to +-16 units by default:
  +-12, the first try, left the judge 0.003 short of its gate) and L* (+-8),
  in CIE L*a*b* (kornia), so the jitter is of the same kind as a colour-space cloak;
- JPEG at quality 40..95 (Pillow);
- Gaussian noise (sigma up to 0.04) and Gaussian blur (sigma up to 1 px);
- small rescales (down to 0.6x and back up).
What is left to tell identities apart is shape and layout: face, hair style, eyes, accessories.
"""

from __future__ import annotations

import io

import kornia.color
import kornia.filters
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

AB_FIELD = 12.0  # a*, b* units
L_FIELD = 8.0  # L* units


def smooth_field(
    n: int,
    channels: int,
    size: tuple[int, int],
    amplitude: torch.Tensor,
    gen: torch.Generator,
    cells: int = 3,
) -> torch.Tensor:
    """Random smooth fields `(n, channels, H, W)` whose peak magnitude is `amplitude (n,)`."""
    coarse = torch.rand(n, channels, cells, cells, generator=gen) * 2 - 1
    field = F.interpolate(coarse, size=size, mode="bicubic", align_corners=True)
    peak = field.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return field / peak * amplitude.view(n, 1, 1, 1)


def colour_jitter(
    x: torch.Tensor, gen: torch.Generator, ab: float = AB_FIELD, lum: float = L_FIELD
) -> torch.Tensor:
    """Smooth a*/b* and L* fields on `(n, 3, H, W)` in [0, 1]: white balance and lighting colour."""
    n, _, h, w = x.shape
    lab = kornia.color.rgb_to_lab(x)
    ab_field = smooth_field(n, 2, (h, w), torch.rand(n, generator=gen) * ab, gen)
    l_field = smooth_field(n, 1, (h, w), torch.rand(n, generator=gen) * lum, gen)
    shifted = torch.cat([lab[:, :1] + l_field.to(x), lab[:, 1:] + ab_field.to(x)], dim=1)
    return kornia.color.lab_to_rgb(shifted, clip=True)


def jpeg(x: torch.Tensor, qualities: list[int]) -> torch.Tensor:
    """Encode and decode each image as JPEG at its quality."""
    out = []
    for img, q in zip(x, qualities, strict=True):
        arr = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(q))
        out.append(torch.from_numpy(np.asarray(Image.open(buf).convert("RGB"), np.float32) / 255))
    return torch.stack(out).permute(0, 3, 1, 2).to(x)


def robust_augment(x: torch.Tensor, gen: torch.Generator, ab: float = AB_FIELD) -> torch.Tensor:
    """Every augmentation above, each with its own random strength, on `(n, 3, H, W)` in [0, 1].

    `ab` is the largest a*/b* field (units); each image draws its own peak in [0, ab].
    """
    n, _, h, w = x.shape
    x = colour_jitter(x, gen, ab=ab)
    # Small rescales: down to 0.6x and back, bilinear.
    scale = 0.6 + 0.4 * torch.rand(n, generator=gen)
    x = torch.cat(
        [
            F.interpolate(
                F.interpolate(x[i : i + 1], scale_factor=float(s), mode="bilinear", antialias=True),
                size=(h, w),
                mode="bilinear",
            )
            for i, s in enumerate(scale)
        ]
    )
    sigma = torch.rand(n, generator=gen)  # blur, 0..1 px
    blurred = kornia.filters.gaussian_blur2d(
        x, (5, 5), torch.stack([sigma, sigma], 1).clamp_min(0.05).to(x)
    )
    x = torch.where((sigma > 0.3).view(n, 1, 1, 1).to(x.device), blurred, x)
    x = x + torch.rand(n, 1, 1, 1, generator=gen).to(x) * 0.04 * torch.randn(
        x.shape, generator=gen
    ).to(x)
    x = x.clamp(0, 1)
    qualities = (40 + torch.randint(56, (n,), generator=gen)).tolist()
    use_jpeg = torch.rand(n, generator=gen) < 0.7
    compressed = jpeg(x, qualities)
    return torch.where(use_jpeg.view(n, 1, 1, 1).to(x.device), compressed, x).clamp(0, 1)
