"""Procedural portrait videos with known identity, part masks and motion (the "mini world").

Everything is drawn analytically with numpy, so no external asset is needed and the same
seed gives the same bytes on every machine. A portrait is described by an :class:`Identity`
(what stays fixed) and a :class:`Motion` (what changes across frames).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from anti_i2v.probe.common import ToolkitError, atomic_write, write_text_atomic
from anti_i2v.probe.distributed import Ranks

# Part labels written in masks/*.png (uint8 values).
LABELS: dict[str, int] = {
    "background": 0,
    "skin": 1,
    "hair": 2,
    "eyes": 3,
    "mouth": 4,
    "accessory": 5,
    "clothes": 6,
}

SIZE = 64  # output resolution of the mini world (square)
FRAMES = 9  # frames per video (CogVideoX-style 4k+1)
_SUPERSAMPLE = 2  # render at 2x then box-filter: anti-aliased edges

_SKIN = np.array(
    [
        [255, 224, 196],
        [241, 194, 155],
        [224, 172, 125],
        [198, 134, 86],
        [141, 85, 54],
        [95, 60, 40],
    ],
    dtype=np.float32,
)
_HAIR = np.array(
    [[20, 18, 16], [70, 45, 25], [140, 90, 45], [220, 190, 110], [170, 60, 30], [150, 150, 155]],
    dtype=np.float32,
)
_EYES = np.array([[60, 40, 25], [40, 90, 160], [60, 130, 70], [110, 110, 120]], dtype=np.float32)
HAIR_STYLES = ("short", "long", "bun", "bald")


def is_heldout(identity_seed: int) -> bool:
    """Fixed split: every tenth identity seed is held out of training."""
    return identity_seed % 10 == 0


@dataclass(frozen=True)
class Identity:
    """Everything about a portrait that does not change over time."""

    seed: int
    face_width: float  # half-width of the face ellipse, in image fractions
    face_height: float
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_style: str
    eyes: tuple[float, float, float]
    glasses: bool
    earrings: bool
    clothes: tuple[float, float, float]
    background: tuple[float, float, float]
    background_stripes: float  # stripe frequency, 0 = plain


@dataclass(frozen=True)
class Motion:
    """Per-video motion: the head settles from an off-centre, tilted start; one blink; mouth.

    The head's drift toward the centre and its return to upright are visible in the first
    frame, so a model can learn to predict them; the blink and the mouth are the random part.
    """

    x0: float  # start offset of the head from the centre (image fractions)
    y0: float
    settle: float  # fraction of the offset and tilt recovered by the last frame
    tilt: float  # start tilt in radians
    blink_frame: int  # -1: no blink
    mouth_speed: float  # cycles over the clip
    mouth_phase: float


def sample_identity(seed: int) -> Identity:
    """Draw an identity from its seed (the seed decides everything)."""
    rng = np.random.default_rng([seed, 1])

    def jitter(palette: np.ndarray, amount: float) -> tuple[float, float, float]:
        base = palette[rng.integers(len(palette))]
        col = np.clip(base + rng.normal(0, amount, 3), 0, 255)
        return tuple(float(c) for c in col)

    return Identity(
        seed=seed,
        face_width=float(rng.uniform(0.17, 0.23)),
        face_height=float(rng.uniform(0.23, 0.29)),
        skin=jitter(_SKIN, 8),
        hair=jitter(_HAIR, 10),
        hair_style=HAIR_STYLES[rng.choice(4, p=[0.4, 0.35, 0.15, 0.1])],
        eyes=jitter(_EYES, 10),
        glasses=bool(rng.random() < 0.3),
        earrings=bool(rng.random() < 0.25),
        clothes=tuple(float(c) for c in rng.uniform(30, 230, 3)),
        background=tuple(float(c) for c in rng.uniform(40, 220, 3)),
        background_stripes=float(rng.choice([0.0, 0.0, rng.uniform(3, 8)])),
    )


def sample_motion(seed: int, frames: int = FRAMES) -> Motion:
    """Draw a motion for one clip."""
    rng = np.random.default_rng([seed, 2])
    return Motion(
        x0=float(rng.uniform(-0.14, 0.14)),
        y0=float(rng.uniform(-0.06, 0.06)),
        settle=float(rng.uniform(0.6, 1.0)),
        tilt=float(rng.uniform(-0.35, 0.35)),
        blink_frame=int(rng.integers(1, max(frames, 2))) if rng.random() < 0.6 else -1,
        mouth_speed=float(rng.uniform(0.5, 1.5)),
        mouth_phase=float(rng.uniform(0, 2 * np.pi)),
    )


def _ellipse(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float
) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def render_frame(identity: Identity, motion: Motion, t: float, blink: bool, size: int = SIZE):
    """Render one frame at progress t in [0, 1]: returns (rgb uint8 HxWx3, labels uint8 HxW)."""
    n = size * _SUPERSAMPLE
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float32)
    xs, ys = (xs + 0.5) / n, (ys + 0.5) / n

    # Background: plain or diagonal stripes, static over time.
    bg = np.array(identity.background, np.float32)
    rgb = np.broadcast_to(bg, (n, n, 3)).copy()
    if identity.background_stripes > 0:
        stripe = (np.sin((xs + ys) * identity.background_stripes * 2 * np.pi) > 0)[..., None]
        rgb = np.where(stripe, rgb * 0.8, rgb)
    labels = np.zeros((n, n), np.uint8)

    remaining = 1.0 - motion.settle * t  # share of the start offset and tilt still left
    cx = 0.5 + motion.x0 * remaining
    cy = 0.45 + motion.y0 * remaining
    angle = motion.tilt * remaining

    def paint(mask: np.ndarray, colour, label: str) -> None:
        nonlocal rgb
        rgb = np.where(mask[..., None], np.asarray(colour, np.float32), rgb)
        labels[mask] = LABELS[label]

    # Shoulders and neck do not tilt with the head.
    paint(_ellipse(xs, ys, cx, 1.08, 0.42, 0.3), identity.clothes, "clothes")
    paint(
        (np.abs(xs - cx) < identity.face_width * 0.45) & (ys > cy) & (ys < 0.85),
        np.array(identity.skin) * 0.85,
        "skin",
    )

    # Head-local coordinates (rotate around the head centre).
    ca, sa = np.cos(angle), np.sin(angle)
    u = ca * (xs - cx) + sa * (ys - cy)
    v = -sa * (xs - cx) + ca * (ys - cy)
    fw, fh = identity.face_width, identity.face_height

    hair = np.array(identity.hair, np.float32)
    if identity.hair_style == "long":
        paint(_ellipse(u, v, 0, 0.05, fw * 1.3, fh * 1.25) & (v > -fh * 1.3), hair, "hair")
    if identity.hair_style == "bun":
        paint(_ellipse(u, v, 0, -fh * 1.15, fw * 0.5, fh * 0.35), hair, "hair")
    face = _ellipse(u, v, 0, 0, fw, fh)
    # Soft shading from the top left so faces are not flat discs.
    shade = 1.0 - 0.25 * np.clip(u / fw * 0.5 + v / fh * 0.5, -1, 1)[..., None]
    rgb = np.where(face[..., None], np.asarray(identity.skin, np.float32) * shade, rgb)
    labels[face] = LABELS["skin"]
    if identity.hair_style != "bald":
        cap = _ellipse(u, v, 0, -fh * 0.25, fw * 1.1, fh * 0.95) & (v < -fh * 0.45)
        paint(cap, hair, "hair")
    if identity.earrings:
        for side in (-1, 1):
            paint(
                _ellipse(u, v, side * fw * 1.02, fh * 0.25, 0.02, 0.02), (230, 200, 60), "accessory"
            )

    # Eyes: white with a coloured iris, a thin line while blinking.
    for side in (-1, 1):
        ex, ey = side * fw * 0.42, -fh * 0.12
        if blink:
            paint(_ellipse(u, v, ex, ey, fw * 0.22, 0.008), np.array(identity.skin) * 0.5, "eyes")
        else:
            paint(_ellipse(u, v, ex, ey, fw * 0.22, fh * 0.09), (245, 245, 245), "eyes")
            paint(_ellipse(u, v, ex, ey, fw * 0.1, fh * 0.08), identity.eyes, "eyes")
        if identity.glasses:
            ring = _ellipse(u, v, ex, ey, fw * 0.34, fh * 0.2) & ~_ellipse(
                u, v, ex, ey, fw * 0.27, fh * 0.15
            )
            paint(ring, (25, 25, 25), "accessory")

    opening = 0.5 + 0.5 * np.sin(2 * np.pi * motion.mouth_speed * t + motion.mouth_phase)
    paint(
        _ellipse(u, v, 0, fh * 0.5, fw * 0.35, fh * (0.04 + 0.12 * opening)), (120, 30, 40), "mouth"
    )

    # Box-filter down to the output size; labels take the top-left sample of each block.
    out = rgb.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), labels[
        ::_SUPERSAMPLE, ::_SUPERSAMPLE
    ].copy()


def render_video(identity: Identity, motion: Motion, frames: int = FRAMES, size: int = SIZE):
    """Render a clip: returns (rgb uint8 FxHxWx3, labels uint8 FxHxW)."""
    rgb, lab = [], []
    for f in range(frames):
        blink = motion.blink_frame in (f, f - 1) and motion.blink_frame >= 0
        a, b = render_frame(identity, motion, f / max(frames - 1, 1), blink, size)
        rgb.append(a)
        lab.append(b)
    return np.stack(rgb), np.stack(lab)


def identity_seeds(count: int, seed: int, split: str) -> list[int]:
    """The first `count` identity seeds of a split ('train' or 'heldout'), starting at `seed`."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    out, s = [], seed * 1_000_003
    while len(out) < count:
        if is_heldout(s) == (split == "heldout"):
            out.append(s)
        s += 1
    return out


def check_render_fits(out: Path, count: int, frames: int, world: str, photos: bool) -> None:
    """Refuse, in one line, a render whose samples cannot fit on the disk under `out`.

    The bound is generous (uncompressed frames and masks, about twice what PNG writes), so
    a render that passes may still fill the disk only when something else fills it meanwhile.
    """
    import shutil

    from anti_i2v.probe.world.render_v2 import SIZE_V2

    side = SIZE if world == "v1" else SIZE_V2
    per_sample = frames * side * side * 4 + (side * side * 3 if photos else 0) + 4096
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    need = count * per_sample
    if need > free:
        raise ToolkitError(
            f"--count {count}: {count} portraits of {frames} frames need up to "
            f"{need / 1e9:.3g} GB, and {existing} has {free / 1e9:.3g} GB free; render fewer"
        )


WORLDS = ("v1", "v2")  # v2: `probe.world.render_v2`, photo-like, identity in shape and layout


def render_sample(
    identity_seed: int, motion_seed: int, frames: int = FRAMES, world: str = "v1"
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One clip of a world: (rgb uint8 `(F, H, W, 3)`, labels uint8 `(F, H, W)`, its description).

    In v2 the motion seed also draws the scene (light, white balance, background, clothes), so
    every video of a person is shot differently.
    """
    if world == "v1":
        identity, motion = sample_identity(identity_seed), sample_motion(motion_seed, frames)
        rgb, lab = render_video(identity, motion, frames)
        meta = {"identity": asdict(identity), "motion": asdict(motion), "labels": LABELS}
    elif world == "v2":
        # Imported here: render_v2 builds on this module's palettes and shapes.
        from anti_i2v.probe.world import render_v2 as v2

        identity, scene = v2.sample_identity_v2(identity_seed), v2.sample_scene(motion_seed)
        motion = v2.sample_motion_v2(motion_seed, frames)
        rgb, lab = v2.render_video_v2(identity, scene, motion, frames)
        meta = {
            "identity": asdict(identity),
            "scene": asdict(scene),
            "motion": asdict(motion),
            "labels": v2.LABELS_V2,
        }
    else:
        raise ValueError(f"world must be one of {WORLDS}, got {world!r}")
    # v1's identity.json stays as it was before v2 existed: no "world" means v1
    return rgb, lab, meta if world == "v1" else {"world": world, **meta}


def write_sample(
    directory: Path, identity_seed: int, motion_seed: int, frames: int = FRAMES, world: str = "v1"
) -> Path:
    """Render one sample into `directory/frames`, `directory/masks` and `identity.json`."""
    rgb, lab, meta = render_sample(identity_seed, motion_seed, frames, world)
    (directory / "frames").mkdir(parents=True, exist_ok=True)
    (directory / "masks").mkdir(parents=True, exist_ok=True)
    for f in range(frames):
        Image.fromarray(rgb[f]).save(directory / "frames" / f"{f:03d}.png", optimize=False)
        Image.fromarray(lab[f]).save(directory / "masks" / f"{f:03d}.png", optimize=False)
    meta["split"] = "heldout" if is_heldout(identity_seed) else "train"
    write_text_atomic(directory / "identity.json", json.dumps(meta, indent=2, sort_keys=True))
    return directory


def render_dataset(
    out: Path,
    count: int,
    seed: int,
    split: str = "heldout",
    frames: int = FRAMES,
    photos: Path | None = None,
    world: str = "v1",
) -> list[Path]:
    """Render `count` samples of a split of a world into `out/<sample>/`; finished samples are kept.

    With `photos`, each sample's first frame is also copied there as `<sample>.png`: the
    photo a user would protect, in a flat folder the other commands take directly.

    Under torchrun each rank renders its shard of the samples (every sample is its own folder,
    so no two ranks write one file; no collective is needed). Returns every sample's folder.
    """
    seeds = identity_seeds(count, seed, split)
    for s in seeds:  # a finished sample of the other world is never taken as this one's
        done = out / f"id{s:09d}" / "identity.json"
        if done.exists():
            found = json.loads(done.read_text()).get("world", "v1")
            if found != world:
                raise ToolkitError(
                    f"{out} holds {found} portraits; render the {world} world into another folder"
                )
    for s in Ranks.from_env().shard(seeds):
        d = out / f"id{s:09d}"
        if not (d / "identity.json").exists():  # identity.json is written last: its presence = done
            write_sample(d, s, motion_seed=s, frames=frames, world=world)
        if photos is not None:
            photos.mkdir(parents=True, exist_ok=True)
            with atomic_write(photos / f"{d.name}.png", "wb") as f:
                f.write((d / "frames" / "000.png").read_bytes())
    return [out / f"id{s:09d}" for s in seeds]
