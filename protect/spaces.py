"""Perturbation spaces: pure, differentiable functions over images `(*, 3, H, W)` in [0, 1].

- `lab`: additive noise on the a* and b* channels of CIE L*a*b* (kornia), L* untouched; a*, b*
  are counted in normalised units (divided by 128, the half-range, as images in [-1, 1] are):
  the 16/255 budget is about 8 a*/b* units.
- `dct`: additive noise on the K low-frequency 2-D DCT-II coefficients (torch-dct, orthonormal)
  of each RGB channel. Units: a coefficient moves by `delta * sqrt(H W) / (2 K)`; since every
  orthonormal basis image is at most 2 / sqrt(H W) in magnitude, an L-inf budget eps on delta
  keeps every pixel's change within eps however the K coefficients combine.
- `dual`: DCT then Lab, each with the full budget in its own units (the paper's DSP).
- `rgb`: plain additive RGB noise, the baseline.

Every space has the same shape of API: `init` parameters, `apply` them to an image, `project`
them into the L-inf budget. The loop in `protect.loop` needs nothing else.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import kornia.color
import torch
import torch_dct

from anti_i2v.protect.config import SPACES

AB_SCALE = 128.0  # normalised a*/b* unit: a*/b* divided by their half-range (the default)
# The colour code the paper's code imports (as in AntiForgery's) divides a* and b* by 110:
# the same eps is then 110/128 as many a*/b* units. Selectable with `--ab-unit 110`.
AB_UNITS = (128.0, 110.0)


def rgb_to_lab(image: torch.Tensor) -> torch.Tensor:
    """sRGB `(*, 3, H, W)` in [0, 1] -> L*a*b* (L* in [0, 100], a*, b* roughly [-128, 127])."""
    return kornia.color.rgb_to_lab(image)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """L*a*b* -> sRGB in [0, 1] (clipped: out-of-gamut colours are clamped)."""
    return kornia.color.lab_to_rgb(lab, clip=True)


def apply_lab(image: torch.Tensor, delta_ab: torch.Tensor, unit: float = AB_SCALE) -> torch.Tensor:
    """Add `delta_ab (*, 2, H, W)` to a* and b*, in units of `unit` a*/b* points; L* is unchanged."""
    if delta_ab.shape[-3] != 2:
        raise ValueError(
            f"delta_ab must have 2 channels (a*, b*), got shape {tuple(delta_ab.shape)}"
        )
    lab = rgb_to_lab(image)
    shifted = torch.cat([lab[..., :1, :, :], lab[..., 1:, :, :] + unit * delta_ab], dim=-3)
    return lab_to_rgb(shifted)


@functools.lru_cache(maxsize=16)
def lowpass_mask(height: int, width: int, cutoff: float = 0.25, device=None) -> torch.Tensor:
    """DCT mask `(H, W)`: 1 where u/H + v/W < cutoff (the low frequencies), else 0."""
    u = torch.arange(height, device=device).view(-1, 1) / height
    v = torch.arange(width, device=device).view(1, -1) / width
    return ((u + v) < cutoff).float()


@functools.lru_cache(maxsize=16)
def dct_matrix(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The orthonormal DCT-II matrix `D (n, n)`, with `dct(x) = D @ x`, built by torch-dct."""
    # torch-dct transforms the rows of the identity, giving D's columns.
    return (
        torch_dct.dct(torch.eye(n, dtype=torch.float64), norm="ortho")
        .T.to(device, dtype)
        .contiguous()
    )


def dct2(image: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two dimensions."""
    # Two matrix products with torch-dct's own matrix: the same transform as torch_dct.dct_2d,
    # and 4-6x faster at photo sizes than its FFT route, which the optimisation pays every step.
    h, w = image.shape[-2:]
    return (
        dct_matrix(h, image.device, image.dtype)
        @ image
        @ dct_matrix(w, image.device, image.dtype).T
    )


def idct2(coeffs: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2` (the matrix is orthogonal, so its transpose)."""
    h, w = coeffs.shape[-2:]
    return (
        dct_matrix(h, coeffs.device, coeffs.dtype).T
        @ coeffs
        @ dct_matrix(w, coeffs.device, coeffs.dtype)
    )


def apply_dct(image: torch.Tensor, delta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Add `delta (*, 3, H, W)` to the masked DCT coefficients (units: see the module docstring)."""
    h, w = image.shape[-2:]
    scale = math.sqrt(h * w) / (2 * mask.sum().clamp_min(1))
    return idct2(dct2(image) + scale * delta * mask).clamp(0, 1)


@dataclass(frozen=True)
class Space:
    """A perturbation space: parameter shapes, how to apply them, and the budget."""

    name: str
    eps: float = 16 / 255
    cutoff: float = 0.25  # DCT low-pass cutoff (dct and dual)
    ab_unit: float = AB_SCALE  # a*/b* points per unit of the lab parameters (see AB_UNITS)
    # `(B, 1, H, W)` weights of the change per pixel (`protect.region`, mean 1), or None: uniform
    region: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def units(self) -> dict[str, str]:
        """What one unit of each parameter is, for the sidecar (eps is counted in these units)."""
        return {
            "ab": f"a*/b* divided by {self.ab_unit:g} (eps {self.eps * 255:g}/255 = "
            f"{self.eps * self.ab_unit:.2f} a*/b* points)",
            "dct": "orthonormal DCT-II coefficients scaled so eps bounds every pixel's change",
            "rgb": "RGB in [0, 1]",
        }

    def init(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Zero-initialised parameters (random start: see `random_init`)."""
        b, _, h, w = image.shape
        params = {}
        if self.name in ("lab", "dual"):
            params["ab"] = torch.zeros(b, 2, h, w)
        if self.name in ("dct", "dual"):
            params["dct"] = torch.zeros(b, 3, h, w)
        if self.name == "rgb":
            params["rgb"] = torch.zeros(b, 3, h, w)
        if not params:
            raise ValueError(f"unknown space {self.name!r}; use {', '.join(SPACES)}")
        return {k: v.to(image.device) for k, v in params.items()}  # float32, see `apply`

    def random_init(
        self, image: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Uniform noise in [-eps, eps] for every parameter (the random-noise baseline)."""
        return {
            k: ((torch.rand(v.shape, generator=generator) * 2 - 1) * self.eps).to(v)
            for k, v in self.init(image).items()
        }

    def apply(self, image: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The perturbed image in [0, 1], float32 whatever the image's dtype.

        The perturbation and its transforms stay float32 even when the model runs in bfloat16:
        bfloat16's spacing near 0.5 is 1/256, so a 1/255 step would round away. With a
        `region`, the change is then weighted per pixel (and clamped to [0, 1] again).
        """
        x = image.float()
        params = {k: v.float() for k, v in params.items()}
        if "dct" in params:
            x = apply_dct(x, params["dct"], lowpass_mask(*x.shape[-2:], self.cutoff, x.device))
        if "ab" in params:
            x = apply_lab(x, params["ab"], self.ab_unit)
        if "rgb" in params:
            x = x + params["rgb"]
        x = x.clamp(0, 1)
        if self.region is not None:  # the same change, moved towards the region
            x = (image.float() + self.region.to(x) * (x - image.float())).clamp(0, 1)
        return x

    def project(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Clip every parameter into the L-inf budget (each space in its own units)."""
        return {k: v.clamp(-self.eps, self.eps) for k, v in params.items()}


def budget_used(
    image: torch.Tensor, adv: torch.Tensor, params: dict[str, torch.Tensor]
) -> dict[str, float]:
    """L-inf size of the perturbation in each space it lives in, and in RGB."""
    out = {f"linf_{k}": float(v.abs().max()) for k, v in params.items()}
    out["linf_rgb_effective"] = float((adv - image).abs().max())
    return out
