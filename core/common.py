"""What every layer shares: the user-facing error, the version, device choice and safe writes.

The bottom layer (`anti_i2v.core`): nothing here knows about models, stages or the shipped
artifacts (those are `anti_i2v.models.registry`), and it imports nothing of the toolkit.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # torch and numpy load on first use: `anti-i2v --help` stays fast
    import numpy as np
    import torch

F = TypeVar("F", bound=Callable[..., Any])
NAME_MAX = 255  # bytes in one path component on every common file system


class ToolkitError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


def cli_command(fn: F) -> F:
    """Wrap a command body: a ToolkitError becomes one red line and exit 2; Ctrl-C exits 130."""
    import typer
    from rich.console import Console
    from rich.markup import escape

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ToolkitError as exc:
            # escaped: the line quotes user input (paths, names), which must not be read as markup
            Console(stderr=True, soft_wrap=True).print(
                f"[red]error:[/] {escape(str(exc))}", markup=True, highlight=False
            )
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            Console(stderr=True).print(
                "interrupted: finished work is kept; run the same command to resume"
            )
            raise typer.Exit(130) from None
        except OSError as exc:
            line = os_error_line(exc)
            if line is None:
                raise
            Console(stderr=True, soft_wrap=True).print(
                f"[red]error:[/] {escape(line)}", markup=True, highlight=False
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def os_error_line(exc: OSError) -> str | None:
    """One line for the OS errors a user fixes outside the toolkit (a full disk, a quota), or
    None for any other (a bug, shown with its traceback)."""
    import errno

    where = f" writing {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"no space left on the device{where}: free some space, then run the same command "
            "to resume (finished work is kept)"
        )
    if exc.errno == errno.ENAMETOOLONG:
        return f"a file name is too long{where}; choose shorter names"
    return None


def toolkit_version() -> str:
    """The installed package's version (pyproject.toml is the one place it is written)."""
    try:
        return metadata.version("anti-i2v")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"


TOOLKIT_VERSION = toolkit_version()


def pick_device(device: str) -> str:
    """'auto' -> cuda when present, else cpu; anything else is checked and returned."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ToolkitError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ToolkitError(f"--device {device}: no CUDA device is visible here; use --device cpu")
    return device


# --- writes that never leave a half-written file ---------------------------------------------


def _mode_for(path: Path, default: int) -> int:
    """The mode a replaced file keeps, or what a new one would get under the process's umask."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return default & ~umask


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary file path beside `path` for writers that take a file name (PIL, safetensors).

    The temporary name keeps `path`'s suffix, so writers that pick a format from it still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name stays within NAME_MAX however long `path`'s own name is.
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.stem[:48]}.", suffix=f".tmp{path.suffix}"
    )
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes 0600; an ordinary file follows the umask.
        os.chmod(tmp, _mode_for(path, 0o666))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: Path | str, mode: str = "w", **open_kwargs: Any) -> Iterator[Any]:
    """Open a temporary file beside `path`; it replaces `path` only if the block finishes.

    Readers see the old file or the new one, never a part; an error or Ctrl-C leaves `path` as
    it was. `mode` is "w" (text) or "wb".
    """
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f


@contextlib.contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """A temporary folder beside `path` that becomes `path` (replacing it) when the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name[:48]}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, _mode_for(path, 0o777))  # mkdtemp makes 0700
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_sha256(path: Path | str) -> str:
    """The sha256 of a file's bytes, read in blocks (photos, cloaks, targets)."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write a text file atomically (see `atomic_write`)."""
    with atomic_write(path) as f:
        f.write(text)
    return Path(path)


def cached_tensors(
    path: Path, compute: Callable[[], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Load tensors from a safetensors cache file, or compute them and write the file atomically."""
    from safetensors.torch import load_file, save_file

    if path.exists():
        try:
            return load_file(str(path))
        except Exception:  # a damaged cache entry is recomputed, never trusted
            path.unlink(missing_ok=True)
    tensors = compute()
    with atomic_path(path) as tmp:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    return tensors


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
    """Comma-separated integers from a command-line value, or one line naming the flag."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ToolkitError(
            f"{flag} {text!r}: expected comma-separated integers, e.g. 100,500,900"
        ) from None


def file_slug(label: str) -> str:
    """A label (method, judge, photo and method) as a safe file name: `rgb-pgd (eps 8/255)` -> `rgb-pgd-eps-8-255`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-")


def parse_floats(text: str, flag: str) -> tuple[float, ...]:
    """Comma-separated numbers from a command-line value, or one line naming the flag."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ToolkitError(
            f"{flag} {text!r}: expected comma-separated numbers, e.g. 4,8,16"
        ) from None


# Protocols whose files live in this process only: a store or report there vanishes on exit.
EPHEMERAL_PROTOCOLS = ("memory",)


def check_out_given(out: str | Path, flag: str = "--out") -> None:
    """Refuse an empty `--out` (it would write into the current folder, among the user's files)
    and a protocol whose files vanish when the command exits (`memory://`), in one line."""
    text = str(out)
    if not text.strip():
        raise ToolkitError(f'{flag} "": give the folder to write into (it is created if missing)')
    protocol = text.split("://", 1)[0] if is_url(text) else ""
    if protocol in EPHEMERAL_PROTOCOLS:
        raise ToolkitError(
            f"{flag} {text}: a {protocol}:// location lives only while this command runs, so "
            "everything written there would vanish when it exits; give a folder or a lasting "
            "URL (s3://, gs://, ...)"
        )


def check_writable_dir(path: Path, flag: str = "--out") -> Path:
    """Say in one line why `path` cannot become a writable folder; creates nothing.

    The check writes (and removes) a temporary file in `path` or its nearest existing parent,
    which is the only test that also holds for root, read-only mounts and full disks.
    """
    path = Path(path)
    long = next((p for p in path.parts if len(os.fsencode(p)) > NAME_MAX), None)
    if long is not None:
        raise ToolkitError(
            f"{flag}: the folder name {long[:40]}... is {len(os.fsencode(long))} bytes, over the "
            f"file system's limit of {NAME_MAX} per name; choose a shorter one"
        )
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ToolkitError(f"{flag} {path}: {existing} is a file, not a folder; pass a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-check."):
            pass
    except OSError as exc:
        raise ToolkitError(
            f"{flag} {path} cannot be written ({exc.strerror or exc}); "
            "choose a folder you can write to"
        ) from None
    return path


# --- pixels ------------------------------------------------------------------------------------


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """Channels-first `(*, 3, H, W)` in [0, 1] -> channels-last uint8 `(*, H, W, 3)`, rounded.

    Rounding (not truncation) keeps a re-read within 0.5/255 of the tensor.
    """
    import torch

    return (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1).cpu().numpy()


def is_url(where: str | Path) -> bool:
    """Whether a store or output argument is an fsspec URL (`s3://...`) rather than a local path."""
    return "://" in str(where)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two tensors of one shape in [0, 1] (inf when identical)."""
    import math

    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def progress_bar(console: Any, show: bool = True) -> Any:
    """The toolkit's progress bar (description, bar, done/total, time left) on `console`.

    `show=False` under torchrun on ranks other than 0, so bars do not interleave.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not show,
    )


def nan_to_null(rows: dict[str, list[float]]) -> dict[str, list[float | None]]:
    """name -> values with NaN (a block that did not run) as None: JSON has no word for NaN."""
    return {k: [None if math.isnan(v) else v for v in vs] for k, vs in rows.items()}
