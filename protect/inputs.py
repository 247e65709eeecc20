"""Which files protect cloaks and where each cloak goes, decided before any model work.

A privacy tool must never destroy the photo it protects. So, before anything loads:
- an `--out` that is, or lies inside, an input folder is refused (it would replace originals),
  unless `--in-place` is given, which first renames each original to `NAME.original.EXT`;
- the toolkit's own outputs (cloaks with their sidecars, loss plots, kept originals) are never
  taken as inputs, so a re-run never cloaks a cloak;
- two inputs that would write the same cloak (`a.png` and `a.jpg`, or one name in two folders)
  are refused with both names.
A lock file per photo (`NAME.lock`, created with O_EXCL) lets two runs on one `--out` share the
work instead of both doing all of it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from anti_i2v.core.common import ToolkitError, psnr
from anti_i2v.core.images import IMAGE_SUFFIXES, gather_images, load_photo
from anti_i2v.protect.sidecar import SIDECAR_SCHEMA, Sidecar

ORIGINAL = ".original"  # in-place: NAME.original.EXT keeps the photo beside its cloak
LOSS_PLOT = ".loss.png"


@dataclass(frozen=True)
class Job:
    """One photo to cloak: the file to read, the cloak's name, and (in place) where the original goes."""

    source: Path
    name: str  # the cloak is OUT/NAME.png, its sidecar OUT/NAME.json
    keep_original_as: Path | None = (
        None  # in place: rename the source here before writing the cloak
    )
    # In place: a cloak an interrupted older run left without its sidecar, replaced by this one
    half_done: Path | None = None


def is_sidecar(path: Path) -> bool:
    """Whether `path` is a protect sidecar (so the image beside it is a cloak), damaged or not.

    Looser than `Sidecar.read` on purpose: a truncated sidecar still marks its PNG as a cloak,
    so it is redone from the original, never taken as an input.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return False
    return SIDECAR_SCHEMA in text or '"photo_sha256"' in text


def is_toolkit_output(path: Path) -> bool:
    """Loss plots, kept originals, and cloaks (an image with a sidecar beside it)."""
    name = path.name.lower()
    if name.endswith(LOSS_PLOT) or Path(path.stem).suffix == ORIGINAL:
        return True
    return path.suffix.lower() == ".png" and is_sidecar(path.with_suffix(".json"))


def pending_path(out: Path, name: str) -> Path:
    """The marker protect writes before a cloak's files and removes after its sidecar."""
    return out / f".{name}.pending.json"


def _pending_for(out: Path, name: str, photo_sha256: str) -> bool:
    try:
        return json.loads(pending_path(out, name).read_text())["photo_sha256"] == photo_sha256
    except (OSError, ValueError, KeyError, TypeError):
        return False


def foreign_output(job: Job, out: Path, photo_sha256: str) -> str | None:
    """Why the cloak of `job` may not be written into the local folder `out`, or None.

    The cloak's files (`NAME.png`, `NAME.json`, `NAME.loss.png`) may replace only what this
    toolkit wrote there for this photo: files with a sidecar recording the same photo (a redo
    with other settings, or a damaged sidecar), or with the marker of a run killed while it
    wrote them (`pending_path`). Anything else there is somebody's file.
    """
    side = out / f"{job.name}.json"
    existing = [
        p
        for p in (out / f"{job.name}.png", side, out / f"{job.name}{LOSS_PLOT}")
        if p.exists()
        and not (p.resolve() == job.source.resolve() and job.keep_original_as)
        and p != job.half_done
    ]
    if not existing or _pending_for(out, job.name, photo_sha256):
        return None  # nothing there, or what a killed run of this photo was writing
    if is_sidecar(side):
        old = Sidecar.read(side)
        if old is None or old.photo_sha256 == photo_sha256:
            return None  # a damaged sidecar of ours, or this photo's earlier cloak
        return (
            f"{side} belongs to the cloak of another photo named {job.name} (its photo's sha256 "
            "differs): move those files away, or choose another --out"
        )
    return (
        f"{existing[0]} already exists and anti-i2v did not write it for this photo: move it "
        "away, or choose another --out (nothing was replaced)"
    )


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def plan_jobs(inputs: list[Path], out: Path | None, in_place: bool = False) -> list[Job]:
    """The photos to cloak and their output names; refuses unsafe or ambiguous requests.

    `out`: the local output folder; None for a URL, which no local input can be inside.

    Raises:
        ToolkitError: `out` would overwrite inputs (without `in_place`), or two inputs share a
            cloak name.
    """
    out_r = out.resolve() if out is not None else None
    folders = [p.resolve() for p in inputs if p.is_dir()]
    parents = [p.resolve().parent for p in inputs if p.is_file()]
    clash = out_r and (
        next((f for f in folders if _inside(out_r, f)), None)
        or next((d for d in parents if d == out_r), None)
    )
    if clash and not in_place:
        raise ToolkitError(
            f"--out {out} is inside the input folder {clash}: cloaks would replace the original "
            "photos. Choose another --out, or pass --in-place to keep each original as "
            "NAME.original.EXT beside its cloak"
        )
    files = [p for p in gather_images(inputs) if not is_toolkit_output(p)]
    # In place, an original already set aside whose cloak is unfinished is still to do (resume).
    kept = []
    if in_place:
        for folder in [p for p in inputs if p.is_dir()]:
            for p in sorted(folder.iterdir()):
                if (
                    p.suffix.lower() in IMAGE_SUFFIXES
                    and Path(p.stem).suffix == ORIGINAL
                    and not is_sidecar(out / f"{Path(p.stem).stem}.json")
                ):
                    kept.append(p)
    half_done = {}  # a cloak a killed older version left beside its kept original: redone
    if kept:
        by_stem = {Path(k.stem).stem: k for k in kept}
        half_done = {
            p.stem: p
            for p in files
            if p.stem in by_stem and _looks_like_cloak_of(p, by_stem[p.stem])
        }
        files = [p for p in files if half_done.get(p.stem) != p]
    jobs, by_name = [], {}
    for p in files + kept:
        is_kept = p in kept
        name = Path(p.stem).stem if is_kept else p.stem
        if name in by_name and is_kept:
            raise ToolkitError(
                f"{by_name[name]} and the kept original {p} have no sidecar, and {by_name[name]} "
                "is not a cloak of it: move one of them away, then run again"
            )
        if name in by_name:
            raise ToolkitError(
                f"{by_name[name]} and {p} would both be cloaked as {name}.png; "
                "rename one, or cloak them into different --out folders"
            )
        by_name[name] = p
        move = None
        if in_place and not is_kept and _inside(out_r, p.resolve().parent):
            move = p.with_name(f"{p.stem}{ORIGINAL}{p.suffix}")
        jobs.append(
            Job(
                source=p,
                name=name,
                keep_original_as=move,
                half_done=half_done.get(name) if is_kept else None,
            )
        )
    return jobs  # empty when every image is already a cloak or another output of this toolkit


def _looks_like_cloak_of(candidate: Path, original: Path, min_psnr: float = 20.0) -> bool:
    """Whether `candidate` is a cloak of `original`: the same size and within `min_psnr` dB
    (a cloak is 25-45 dB from its photo; two different photos are far below 20)."""
    try:
        a, b = load_photo(candidate).pixels, load_photo(original).pixels
    except ToolkitError:  # unreadable: not a cloak this toolkit wrote
        return False
    return a.shape == b.shape and psnr(a, b) >= min_psnr


@contextlib.contextmanager
def photo_lock(out: Path, name: str) -> Iterator[bool]:
    """Hold `OUT/NAME.lock` while a photo is cloaked; yields False when another live run holds it.

    The lock holds the owner's PID; a lock left by a process that no longer runs (killed) is
    taken over, so a crash never blocks a photo for good.
    """
    path = out / f"{name}.lock"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _owner_alive(path):
                yield False
                return
            path.unlink(missing_ok=True)  # stale: its owner died
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        try:
            yield True
        finally:
            path.unlink(missing_ok=True)
        return
    yield False


def _owner_alive(path: Path) -> bool:
    try:
        pid = int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
