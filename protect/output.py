"""Writing cloaked photos: lossless PNG, no metadata, at the original size and orientation; to a
local folder or an fsspec URL."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import fsspec
import numpy as np
import torch
from PIL import Image

from anti_i2v.core.common import atomic_path, is_url, to_uint8


def write_png(image: torch.Tensor, path: Path) -> Path:
    """Save `(3, H, W)` in [0, 1] as a PNG with no EXIF, GPS, ICC or text chunks, atomically."""
    return write_png_uint8(to_uint8(image), path)


def write_png_uint8(pixels: np.ndarray, path: Path) -> Path:
    """Save uint8 `(H, W, 3)` as a PNG with no metadata, atomically."""
    # A fresh Image from raw pixels carries no metadata; PNG is lossless.
    with atomic_path(path) as tmp:
        Image.fromarray(pixels, "RGB").save(tmp, format="PNG", optimize=False)
    return path


class OutputFolder:
    """Where a command's outputs go: a local folder, or an fsspec URL (`s3://bucket/cloaks`, ...).

    Every file is first written under `local` with the toolkit's atomic writes. At a URL `local`
    is a staging folder (`staging`, or a private temporary one that `close` removes), and
    `publish` then uploads files with fsspec, in the order given: an object store's PUT is
    atomic, so protect uploads a cloak's sidecar last and its presence at the URL still means
    done, and a resumed run reads the URL to skip finished photos. No lock spans machines (object
    stores have none): ranks of one torchrun never share a photo, but two separate runs into one
    URL can both cloak a photo (the later upload wins, with the same bytes).
    """

    def __init__(self, where: str | Path, staging: Path | None = None):
        self.where = str(where)
        self.url = is_url(where)
        self._temporary = self.url and staging is None
        if self.url:
            self.fs, self.root = fsspec.core.url_to_fs(self.where)
            self.local = staging or Path(tempfile.mkdtemp(prefix="anti-i2v-out-"))
        else:
            self.local = Path(where)

    def done_sidecar(self, name: str) -> Path | None:
        """The local path of NAME's sidecar when NAME's cloak and sidecar are both at the
        destination (fetched from a URL first), else None."""
        side = self.local / f"{name}.json"
        if not self.url:
            return side if (self.local / f"{name}.png").exists() else None
        remote = f"{self.root}/{name}"
        if not (self.fs.exists(f"{remote}.png") and self.fs.exists(f"{remote}.json")):
            return None
        self.fs.get_file(f"{remote}.json", str(side))
        return side

    def publish(self, files: list[str]) -> None:
        """Upload these files of `local` (relative paths) to the URL in order; nothing to do
        for a local folder."""
        if self.url:
            for name in files:
                self.fs.put_file(str(self.local / name), f"{self.root}/{name}")

    def shared_files(self) -> list[str]:
        """Every file under `local` outside hidden folders (caches), relative, sorted."""
        return sorted(
            p.relative_to(self.local).as_posix()
            for p in self.local.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(self.local).parts)
        )

    def close(self) -> None:
        """Remove a temporary staging folder (everything in it is uploaded or cached work)."""
        if self._temporary:
            shutil.rmtree(self.local, ignore_errors=True)
