"""The v1 world's portraits: procedural videos with known identity, part masks and motion.

Everything is drawn analytically with numpy, so no external asset is needed and the same
seed gives the same bytes on every machine. A portrait is described by an :class:`Identity`
(what stays fixed) and a :class:`Motion` (what changes across frames). The v2 world
(`render_v2`) draws with this module's palettes and shapes; `dataset` renders either world
into folders.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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

SKIN_TONES = np.array(
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
HAIR_COLOURS = np.array(
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
        skin=jitter(SKIN_TONES, 8),
        hair=jitter(HAIR_COLOURS, 10),
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


def ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
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
    paint(ellipse(xs, ys, cx, 1.08, 0.42, 0.3), identity.clothes, "clothes")
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
        paint(ellipse(u, v, 0, 0.05, fw * 1.3, fh * 1.25) & (v > -fh * 1.3), hair, "hair")
    if identity.hair_style == "bun":
        paint(ellipse(u, v, 0, -fh * 1.15, fw * 0.5, fh * 0.35), hair, "hair")
    face = ellipse(u, v, 0, 0, fw, fh)
    # Soft shading from the top left so faces are not flat discs.
    shade = 1.0 - 0.25 * np.clip(u / fw * 0.5 + v / fh * 0.5, -1, 1)[..., None]
    rgb = np.where(face[..., None], np.asarray(identity.skin, np.float32) * shade, rgb)
    labels[face] = LABELS["skin"]
    if identity.hair_style != "bald":
        cap = ellipse(u, v, 0, -fh * 0.25, fw * 1.1, fh * 0.95) & (v < -fh * 0.45)
        paint(cap, hair, "hair")
    if identity.earrings:
        for side in (-1, 1):
            paint(
                ellipse(u, v, side * fw * 1.02, fh * 0.25, 0.02, 0.02), (230, 200, 60), "accessory"
            )

    # Eyes: white with a coloured iris, a thin line while blinking.
    for side in (-1, 1):
        ex, ey = side * fw * 0.42, -fh * 0.12
        if blink:
            paint(ellipse(u, v, ex, ey, fw * 0.22, 0.008), np.array(identity.skin) * 0.5, "eyes")
        else:
            paint(ellipse(u, v, ex, ey, fw * 0.22, fh * 0.09), (245, 245, 245), "eyes")
            paint(ellipse(u, v, ex, ey, fw * 0.1, fh * 0.08), identity.eyes, "eyes")
        if identity.glasses:
            ring = ellipse(u, v, ex, ey, fw * 0.34, fh * 0.2) & ~ellipse(
                u, v, ex, ey, fw * 0.27, fh * 0.15
            )
            paint(ring, (25, 25, 25), "accessory")

    opening = 0.5 + 0.5 * np.sin(2 * np.pi * motion.mouth_speed * t + motion.mouth_phase)
    paint(
        ellipse(u, v, 0, fh * 0.5, fw * 0.35, fh * (0.04 + 0.12 * opening)), (120, 30, 40), "mouth"
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
