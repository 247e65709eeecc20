"""Cloaking in place (`--in-place`), crash-safe at every step.

In place, a photo's cloak takes the photo's name and the original moves to
`NAME.original.EXT`. Done naively (move the original, write the cloak, write the sidecar), a
kill between two steps leaves a cloak beside its original with no sidecar, which a re-run can
neither tell from a user's photo nor finish. So each photo goes through a journal:

1. the cloak is written to a hidden staging file `.NAME.cloak.png`;
2. the journal `.NAME.in-place.json` records the source, where the original goes, and the
   sealed sidecar (which holds the original's and the cloak's sha256);
3. the original moves to `NAME.original.EXT`;
4. the staged cloak takes its name `NAME.png`;
5. the loss curve and then the sidecar `NAME.json` are written (the sidecar means done);
6. the journal and staging file are removed.

`finish` replays the steps from whatever state a kill left, identifying every file by its
hash, so a resumed run (`recover`) completes a half-done photo without model work and never
mistakes a cloak for an original. Hidden files are never taken as photos (`gather_images`).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console

from anti_i2v.core.common import file_sha256, write_text_atomic
from anti_i2v.protect.output import write_png_uint8
from anti_i2v.protect.sidecar import Sidecar

JOURNAL_SCHEMA = "anti-i2v.in-place/1"
console = Console(stderr=True)


def journal_path(out: Path, name: str) -> Path:
    return out / f".{name}.in-place.json"


def staged_path(out: Path, name: str) -> Path:
    return out / f".{name}.cloak.png"


def _has(path: Path, sha: str | None) -> bool:
    return path.is_file() and sha is not None and file_sha256(path) == sha


def _step(name: str) -> None:
    """A point between two steps; the tests replace it to kill the run exactly there."""


def write_in_place(
    source: Path, kept: Path, name: str, cloak: np.ndarray, sidecar: Sidecar, write_extras
) -> Sidecar:
    """Put `cloak` where `source` was and keep the original as `kept`, through the journal.

    Args:
        source: the photo being cloaked (in the output folder).
        kept: where the original goes (`NAME.original.EXT`).
        name: the cloak's name (`NAME.png`, `NAME.json`).
        cloak: uint8 `(H, W, 3)`.
        sidecar: the cloak's sidecar, not yet sealed.
        write_extras: called with the sealed sidecar before it is written (the loss curve).

    Returns:
        The sealed sidecar, as written.
    """
    out = source.parent
    staged = staged_path(out, name)
    write_png_uint8(cloak, staged)
    _step("staged")
    sealed = sidecar.sealed(file_sha256(staged))
    write_text_atomic(
        journal_path(out, name),
        json.dumps(
            {
                "schema": JOURNAL_SCHEMA,
                "name": name,
                "source": source.name,
                "kept": kept.name,
                "sidecar": sealed.to_json(),
            },
            indent=1,
        ),
    )
    _step("journal")
    finish(journal_path(out, name), write_extras)
    return sealed


def finish(journal: Path, write_extras=None) -> str:
    """Complete the photo a journal describes, from whatever step it stopped at.

    Returns:
        "done" (the cloak, the kept original and the sidecar are in place), "redo" (the
        staged cloak was lost before it took its name: the journal is dropped and the kept
        original is cloaked again), or "stuck" (the original is nowhere to be found with its
        recorded hash: nothing is touched and the journal stays for a person to read).
    """
    entry = json.loads(journal.read_text())
    out, name = journal.parent, entry["name"]
    sidecar = Sidecar.from_json(entry["sidecar"])
    source, kept = out / entry["source"], out / entry["kept"]
    final, staged, side = out / f"{name}.png", staged_path(out, name), out / f"{name}.json"
    if not _has(kept, sidecar.photo_sha256):
        if kept.exists() or not _has(source, sidecar.photo_sha256):
            return "stuck"
        source.rename(kept)
        _step("original moved")
    if not _has(final, sidecar.cloak_sha256):
        if not _has(staged, sidecar.cloak_sha256):
            journal.unlink()
            return "redo"
        os.replace(staged, final)
        _step("cloak placed")
    if write_extras is not None:
        write_extras(sidecar)
    write_text_atomic(side, json.dumps(sidecar.to_json(), indent=1))
    _step("sidecar")
    staged.unlink(missing_ok=True)
    journal.unlink()
    return "done"


def recover(out: Path) -> None:
    """Finish every photo an interrupted in-place run left half done in `out` (no model work)."""
    for journal in sorted(out.glob(".*.in-place.json")):
        try:
            state = finish(journal)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            console.print(f"[yellow]note:[/] {journal.name} cannot be replayed ({exc}); left as is")
            continue
        if state == "stuck":
            console.print(
                f"[yellow]note:[/] {journal.name}: the original photo is no longer where an "
                "interrupted run left it; nothing was changed (read the journal to find it)"
            )


def with_original(sidecar: Sidecar, kept: Path, record_paths: bool) -> Sidecar:
    return replace(sidecar, original=str(kept) if record_paths else kept.name)
