"""The mini world on disk: render either world's portraits into sample folders, resumably.

`render_sample` draws one clip of v1 (`render`) or v2 (`render_v2`); `render_dataset` writes a
split's samples (frames, part masks, identity.json) and the flat photo folder the other
commands take. The one module that knows both worlds, so neither imports the other's dispatch.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from anti_i2v.core.common import ToolkitError, atomic_write, write_text_atomic
from anti_i2v.core.distributed import Ranks
from anti_i2v.world import render_v2 as v2
from anti_i2v.world.render import (
    FRAMES,
    LABELS,
    SIZE,
    is_heldout,
    render_video,
    sample_identity,
    sample_motion,
)


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

    side = SIZE if world == "v1" else v2.SIZE_V2
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


WORLDS = ("v1", "v2")  # v2: `render_v2`, photo-like, identity in shape and layout


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
