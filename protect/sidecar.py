"""The sidecar (`NAME.json` beside each cloak): what protect hands to evaluate, and to people.

Its presence means the cloak is done; a damaged one means the photo is redone. It records file
names and content hashes, never paths (unless `--record-paths`): it travels with the cloak.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, replace
from pathlib import Path

SIDECAR_SCHEMA = "anti-i2v.sidecar/1"
# Fields added after sidecars were sealed (`content_sha256`), hashed only when set
LATER_FIELDS = ("region_sha256",)


@dataclass(frozen=True)
class Sidecar:
    """What protect records beside each cloak (`NAME.json`); its presence means the cloak is done."""

    photo: str  # the input's file name (its full path only with --record-paths)
    photo_sha256: str
    size: list[int]  # (height, width) after EXIF rotation
    model: str
    family: str
    config_sha256: str
    profile_sha256: str | None
    settings: dict  # every setting that shapes the cloak, see `Run.settings`
    clip_frames: int
    lpips_available: bool
    collapse_layers: list[str]
    anchor_layers: list[str]
    budget: dict[str, float]  # L-inf used in each space's own units, and in RGB at the working size
    linf_rgb_written: float  # the written PNG against the photo, in [0, 1] units
    psnr: float  # dB, the written PNG against the photo at full size
    ssim: float  # at the working size (both images shrunk alike to <= work_max_side)
    losses: list[dict]  # per step; with --batch-size > 1, the means over the batch's photos
    seconds: float  # with --batch-size > 1, the batch's time shared equally
    toolkit_version: str
    # What one unit of each space's parameters is (eps counts in these units).
    units: dict[str, str] = field(default_factory=dict)
    vae_anchor_layers: list[str] = field(default_factory=list)  # IRA on the VAE encoder too
    original: str | None = None  # in place: where the original photo was kept
    batch_size: int = 1  # photos optimised together in one step (same cloak, within float error)
    region_sha256: str | None = None  # --region with masks: this photo's mask file, by content
    # The written PNG's sha256: evaluate refuses a cloak that was replaced after it was made.
    cloak_sha256: str | None = None
    # sha256 of every other field (`content_digest`): a sidecar edited by hand no longer matches.
    content_sha256: str | None = None
    schema: str = SIDECAR_SCHEMA

    def to_json(self) -> dict:
        return asdict(self)

    def content_digest(self) -> str:
        """sha256 of the canonical JSON of every field but `content_sha256` itself and the time
        taken (`seconds`), so that the same cloak made twice carries the same hash."""
        data = {k: v for k, v in self.to_json().items() if k not in ("content_sha256", "seconds")}
        for key in LATER_FIELDS:  # unset, they are left out: older sidecars still verify
            if data[key] is None:
                data.pop(key)
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def sealed(self, cloak_sha256: str) -> Sidecar:
        """This sidecar for the written cloak with `cloak_sha256`, carrying its own content hash."""
        done = replace(self, cloak_sha256=cloak_sha256, content_sha256=None)
        return replace(done, content_sha256=done.content_digest())

    def tampered(self) -> bool:
        """Whether the sidecar's fields changed after protect wrote it (a sidecar from before
        sealing, with no hash, cannot tell and reads as untouched)."""
        return self.content_sha256 is not None and self.content_sha256 != self.content_digest()

    @classmethod
    def from_json(cls, data: dict) -> Sidecar:
        """Build from parsed JSON; raises ValueError when fields are missing (a damaged sidecar)."""
        if not isinstance(data, dict):
            raise ValueError("a sidecar is a JSON object")
        known = cls.__dataclass_fields__
        missing = [
            k
            for k, f in known.items()
            if k not in data and f.default is MISSING and f.default_factory is MISSING
        ]
        if missing:
            raise ValueError(f"sidecar lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def read(cls, path: Path) -> Sidecar | None:
        """The sidecar at `path`, or None when absent or damaged (the photo is then redone)."""
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
