"""Settings of the probe stage, checked on construction (before any model loads).

Kept apart from `probe.run` so the CLI reads its defaults here without importing diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass

from anti_i2v.core.common import ToolkitError

STORAGE_DTYPES = ("float16", "float32")  # zarr has no bfloat16
STORAGE_CODECS = ("zstd", "lz4", "none")  # chunk compressors (`probe.store.compressors`)
MODEL_DTYPES = ("float32", "bfloat16", "float16")
# diffusers' CPU-offload hooks: one whole component on the GPU at a time, or one leaf module
OFFLOADS = ("none", "model", "sequential")
TIMESTEP_RANGE = (0, 1000)  # the 0..1000 training scale every family maps to its own noise level


@dataclass(frozen=True)
class ProbeConfig:
    """Settings of `anti-i2v probe`; recorded in the store's attributes. Checked on construction."""

    model: str
    images: tuple[str, ...]
    out: str
    timesteps: tuple[int, ...] = (100, 500, 900)
    seeds: tuple[int, ...] = (0,)
    frames: int | None = None  # latent frames kept (evenly spaced, first and last included)
    video_frames: int | None = None  # video frames the model runs at (default: the model's own)
    pool: int = 1  # spatial average pooling factor
    dtype: str = "float16"  # storage dtype
    codec: str = "zstd"  # chunk compressor; the values stored do not depend on it
    batch_size: int = 1
    family: str | None = None
    model_dtype: str = "float32"
    offload: str = "none"  # a model larger than the GPU: see OFFLOADS
    device: str = "auto"
    repair: bool = False  # re-write completed cells whose chunks are missing or damaged
    vae: bool = False  # the VAE encoder's blocks too (`vae.encoder.*`), for IRA on the VAE

    def __post_init__(self) -> None:
        check_timesteps(self.timesteps)
        if not self.seeds or any(s < 0 for s in self.seeds):
            raise ToolkitError(f"--seeds {_csv(self.seeds)}: give one or more seeds >= 0")
        for flag, value in (("--frames", self.frames), ("--video-frames", self.video_frames)):
            if value is not None and value < 1:
                raise ToolkitError(
                    f"{flag} {value}: must be at least 1 (leave it out for the model's own)"
                )
        if self.pool < 1:
            raise ToolkitError(
                f"--pool {self.pool}: the pooling factor must be at least 1 (1 = no pooling)"
            )
        if self.batch_size < 1:
            raise ToolkitError(f"--batch-size {self.batch_size}: must be at least 1")
        if self.dtype not in STORAGE_DTYPES:
            raise ToolkitError(
                f"--dtype {self.dtype}: choose {' or '.join(STORAGE_DTYPES)} (zarr has no bfloat16)"
            )
        if self.codec not in STORAGE_CODECS:
            raise ToolkitError(f"--codec {self.codec}: choose {', '.join(STORAGE_CODECS)}")
        if self.offload not in OFFLOADS:
            raise ToolkitError(f"--offload {self.offload}: choose from {', '.join(OFFLOADS)}")
        if self.model_dtype not in MODEL_DTYPES:
            raise ToolkitError(
                f"--model-dtype {self.model_dtype}: choose from {', '.join(MODEL_DTYPES)}"
            )


def check_timesteps(timesteps: tuple[int, ...], flag: str = "--timesteps") -> None:
    """Timesteps are on the 0..1000 training scale: at least one, each in [0, 1000), no repeats."""
    lo, hi = TIMESTEP_RANGE
    if not timesteps:
        raise ToolkitError(f"{flag}: give at least one timestep in {lo}..{hi - 1}")
    bad = [t for t in timesteps if not lo <= t < hi]
    if bad:
        raise ToolkitError(
            f"{flag} {_csv(bad)}: timesteps are on the {lo}..{hi} training scale; "
            f"give values in {lo}..{hi - 1}, e.g. 100,500,900"
        )
    if len(set(timesteps)) != len(timesteps):
        raise ToolkitError(f"{flag} {_csv(timesteps)}: a timestep is repeated; give each once")


def _csv(values) -> str:
    return ",".join(map(str, values))


@dataclass(frozen=True)
class AttentionConfig:
    """What to measure: a model, photos, timesteps and the query subset."""

    model: str
    images: tuple[str, ...]
    out: str
    timesteps: tuple[int, ...] = (100, 300, 500, 700, 900)
    queries: int = 64  # query rows kept per attention call
    seed: int = 0  # the noise and the query subset
    maps: int = 0  # video queries per block and timestep whose whole map is kept (first photo)
    device: str = "auto"

    def __post_init__(self) -> None:
        check_timesteps(self.timesteps)
        if self.queries < 1:
            raise ToolkitError(f"--queries {self.queries}: keep at least 1 query row a call")
        if not 0 <= self.maps <= self.queries:
            raise ToolkitError(
                f"--maps {self.maps}: between 0 and --queries {self.queries} (a map is a kept row)"
            )
        if self.seed < 0:
            raise ToolkitError(f"--seed {self.seed}: give a seed of 0 or more")


@dataclass(frozen=True)
class LensConfig:
    """What to look through: a model, one photo, timesteps and the noise seed."""

    model: str
    image: str
    out: str
    timesteps: tuple[int, ...] = (300, 700)
    seed: int = 0  # the noise
    shown_frames: int = 5  # decoded frames per block in the strip, evenly spaced
    device: str = "auto"

    def __post_init__(self) -> None:
        check_timesteps(self.timesteps)
        if self.seed < 0:
            raise ToolkitError(f"--seed {self.seed}: give a seed of 0 or more")
        if self.shown_frames < 1:
            raise ToolkitError(f"--frames {self.shown_frames}: show at least 1 frame a block")
