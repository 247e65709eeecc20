"""Where a cloak's change goes: a weight map that moves the budget towards the face (a lever).

The plain cloak spreads its change over the whole photo. With `protect --region`, the change
each space produces is multiplied, pixel by pixel, by a map that is 1 on the identity-bearing
region and `floor` elsewhere, softened at its edge and scaled to mean 1. The mean change stays
about what the budget gives, and the face takes more of it (up to 1 / mean before the scaling's
clamp to [0, 1]): the question the lever asks is whether identity falls further at the same
mean visibility. Its 95th-percentile ΔE rises with it, so `evaluate` and `study` report both.

The region comes from one of two sources:
- a folder of masks, one per photo as `anti_i2v.analyses.analyse.mask_path` finds them: the mini
  world's part labels (the face's parts count, see `FACE_PARTS`) or a drawn mask, white (255)
  on the region;
- `face`: the largest face dlib's HOG detector finds in the photo (its box), for real photos.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anti_i2v.core.common import ToolkitError
from anti_i2v.core.images import Photo
from anti_i2v.world.render_v2 import LABELS_V2

FACE = "face"  # --region face: dlib's face box
# The mini world's identity-bearing parts (hair, clothes, accessories and background are not)
FACE_PARTS = ("skin", "eyes", "mouth", "brows", "nose", "ears", "facial_hair")
DRAWN = 255  # a drawn mask's region value
EDGE_SIGMA = 0.03  # the map's edge is softened by a Gaussian of this share of the long side


@dataclass(frozen=True)
class Region:
    """`--region` and `--region-floor`, checked: where the budget goes (see the module docstring)."""

    source: str  # FACE, or a folder of masks
    floor: float  # the map's value off the region, before the scaling to mean 1
    # (photo name, sha256, size) -> its region (the name finds the mask, the content the face): a
    # run checks each photo's region before cloaking it and weights it when it does, and dlib's
    # detector is the slow part of both
    _found: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def check(cls, source: str, floor: float) -> Region:
        """The region, or one line naming the problem (before any model loads).

        Raises:
            ToolkitError: a folder that does not exist, or `face` without dlib.
        """
        if source == FACE:
            try:
                import dlib  # noqa: F401
            except ImportError:
                raise ToolkitError(
                    "--region face needs dlib's face detector: `pip install dlib-bin`, or give "
                    "a folder of masks"
                ) from None
        elif not Path(source).is_dir():
            raise ToolkitError(
                f"--region {source}: not a folder of masks; give one (NAME.png or "
                "NAME/masks/000.png per photo, as the mini world writes them) or `face`"
            )
        return cls(source, floor)

    def _mask_file(self, photo: Photo) -> Path:
        from anti_i2v.analyses.analyse import MASK_LAYOUTS, mask_path

        path = mask_path(Path(self.source), photo.name)
        if path is None:
            raise ToolkitError(
                f"--region: no mask for {photo.path.name} in the masks folder (expected "
                f"{' or '.join(MASK_LAYOUTS).replace('<name>', photo.name)}); add one or "
                "leave the photo out"
            )
        return path

    def digest(self, photo: Photo) -> str | None:
        """sha256 of the photo's mask file (None for `face`: the photo alone decides it), so a
        changed mask is other work."""
        if self.source == FACE:
            return None
        return hashlib.sha256(self._mask_file(photo).read_bytes()).hexdigest()

    def binary(self, photo: Photo, size: tuple[int, int]) -> np.ndarray:
        """The region as a bool `(h, w)` array at `size` (the photo's working size).

        Raises:
            ToolkitError: no mask for the photo, a mask that marks nothing, or no face found.
        """
        key = (photo.name, photo.sha256, tuple(size))
        if key not in self._found:
            self._found[key] = self._binary(photo, size)
        return self._found[key]

    def _binary(self, photo: Photo, size: tuple[int, int]) -> np.ndarray:
        h, w = size
        if self.source == FACE:
            import dlib

            small = Image.fromarray(_uint8(photo.array)).resize((w, h), Image.Resampling.LANCZOS)
            faces = dlib.get_frontal_face_detector()(np.asarray(small), 1)
            if not faces:
                raise ToolkitError(
                    f"--region face: dlib finds no face in {photo.path.name}; give a mask "
                    "folder instead, or crop the photo to the face"
                )
            box = max(faces, key=lambda r: r.width() * r.height())
            region = np.zeros((h, w), bool)
            region[max(0, box.top()) : box.bottom(), max(0, box.left()) : box.right()] = True
            return region
        labels = np.asarray(Image.open(self._mask_file(photo)).convert("L"))
        faces = [LABELS_V2[p] for p in FACE_PARTS] + [DRAWN]
        region = np.isin(labels, faces)
        if region.shape != (h, w):  # nearest: labels are not intensities
            region = np.asarray(Image.fromarray(region).resize((w, h), Image.Resampling.NEAREST))
        if not region.any():
            raise ToolkitError(
                f"--region: the mask of {photo.path.name} marks no face (values "
                f"{', '.join(map(str, faces))}); fix the mask or leave the photo out"
            )
        return region

    def weights(self, photo: Photo, size: tuple[int, int]) -> torch.Tensor:
        """The weight map `(1, h, w)` float32: 1 on the region, `floor` off it, edge softened,
        scaled to mean 1 (see the module docstring)."""
        from kornia.filters import gaussian_blur2d

        region = torch.from_numpy(self.binary(photo, size)).float()[None, None]
        sigma = max(1.0, EDGE_SIGMA * max(size))
        side = 2 * int(3 * sigma) + 1
        soft = gaussian_blur2d(region, (side, side), (sigma, sigma), border_type="replicate")
        weight = self.floor + (1 - self.floor) * soft[0]
        return weight / weight.mean()


def _uint8(array: np.ndarray) -> np.ndarray:
    """A photo's array as uint8 (16-bit sources are float in [0, 1])."""
    return (
        array if array.dtype == np.uint8 else (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    )
