"""The analyses stage's settings that the commands show as defaults, free of torch and numpy."""

from __future__ import annotations

from dataclasses import dataclass

from anti_i2v.core.common import ToolkitError


@dataclass(frozen=True)
class ExploreConfig:
    """What the explorer keeps of a store; every size bound follows from these (`explorer_bytes`)."""

    dims: int = 64  # PCA components kept per token (float16)
    samples: int = 4  # the first samples of the store
    frames: int = 2  # latent frames kept per sample, evenly spaced
    max_fit_rows: int = 16384  # tokens fitting each layer's PCA (seeded subset)
    thumbnail: int = 256  # longest side of the photo and mask thumbnails
    seed: int = 0

    def __post_init__(self) -> None:
        for flag, value, low in (
            ("--dims", self.dims, 3),
            ("--samples", self.samples, 1),
            ("--frames", self.frames, 1),
            ("--thumbnail", self.thumbnail, 16),
        ):
            if value < low:
                raise ToolkitError(f"{flag} {value}: give at least {low}")
        if self.max_fit_rows < self.dims:
            raise ToolkitError(
                f"max_fit_rows {self.max_fit_rows} is below --dims {self.dims}: a PCA needs "
                "at least as many tokens as components"
            )
