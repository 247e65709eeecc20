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
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from probe.common import ToolkitError
from probe.images import IMAGE_SUFFIXES, gather_images
from protect.sidecar import SIDECAR_SCHEMA

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
    jobs, by_name = [], {}
    for p in files + kept:
        is_kept = p in kept
        name = Path(p.stem).stem if is_kept else p.stem
        if name in by_name:
            raise ToolkitError(
                f"{by_name[name]} and {p} would both be cloaked as {name}.png; "
                "rename one, or cloak them into different --out folders"
            )
        by_name[name] = p
        move = None
        if in_place and not is_kept and _inside(out_r, p.resolve().parent):
            move = p.with_name(f"{p.stem}{ORIGINAL}{p.suffix}")
        jobs.append(Job(source=p, name=name, keep_original_as=move))
    return jobs  # empty when every image is already a cloak or another output of this toolkit


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
