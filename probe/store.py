"""The activation store: a zarr v3 group, schema `anti-i2v.activations/1`.

Root attributes describe the run (model, family, config hash, ordered layers, timesteps,
seeds, samples, frames, pool, toolkit version). One array per layer, named by the block's
module path, shaped `(timestep, sample, frame, height, width, channel)`; one chunk per
(timestep, sample) so every write is a whole chunk and no two writers share one (zarr issue
3682). A `completed` array of the same (timestep, sample) grid is set only after every layer's
chunk is written, so an interrupted run never takes a half-written chunk as done.

Where a store lives: a local path, or any fsspec URL (`s3://bucket/acts.zarr`, `gs://...`,
`memory://...`), opened through zarr's fsspec store. Credentials and endpoints come from the
file system's own configuration (for S3: the AWS variables and files, `AWS_ENDPOINT_URL` for an
S3-compatible server), so nothing here is S3-specific.

Who writes what (under torchrun, `anti_i2v.core.distributed`): rank 0 alone creates the group, its
attributes, the `completed` array, every layer array and every coordinate array; after that, each
chunk of a layer array and of `completed` belongs to one (timestep, sample) cell, and a cell is
written, chunks first and its `completed` flag last, by the one rank whose shard holds it. So no
chunk is ever written by two ranks, and rank 0 consolidates the metadata once every rank is done.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import tempfile
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import fsspec
import numpy as np
import zarr
from zarr.codecs import BloscCodec
from zarr.core.sync import sync

from anti_i2v.core.common import ToolkitError, check_writable_dir, is_url
from anti_i2v.probe.config import STORAGE_CODECS

SCHEMA = "anti-i2v.activations/1"
DIMENSIONS = ("timestep", "sample", "frame", "height", "width", "channel")
# zarr skips chunks equal to the fill value; a cell of zeros must still exist as an object, or it
# could not be told apart from a lost one (`ActivationStore.read_cell`).
WRITE_EVERY_CHUNK = {"write_empty_chunks": True}
# Not block names: block names always contain a dot or end in "_block"
COMPLETED = "completed"


def compressors(codec: str) -> list[BloscCodec] | None:
    """The chunk compressor for `--codec` (names in `probe.config.STORAGE_CODECS`).

    zstd with bit-shuffle (the default): activations compress well and decode fast. lz4 with
    byte-shuffle: faster to write, larger. none: raw chunks, the fastest to write.
    """
    if codec == "zstd":
        return [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")]
    if codec == "lz4":
        return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]
    if codec == "none":
        return None
    raise ToolkitError(f"--codec {codec}: choose {', '.join(STORAGE_CODECS)}")


@dataclass(frozen=True)
class StoreAttrs:
    """The run a store holds, written as the zarr group's attributes (schema `anti-i2v.activations/1`)."""

    model: str
    family: str
    config_sha256: str  # the denoiser's config: ties the store to one architecture
    layers: list[str]  # block module paths, in execution order
    timesteps: list[int]  # the timestep axis, on the 0..1000 scale
    seeds: list[int]
    samples: list[dict[str, Any]]  # the sample axis: name, sha256, size, seed, image index
    frames: int | None = None  # latent frames kept (None: all)
    pool: int = 1
    dtype: str = "float16"
    resolution: list[int] | None = None
    video_frames: int | None = None
    toolkit_version: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # the probe command's settings
    weights_sha256: str = ""  # the loaded weights (`anti_i2v.models.backbones.weights_sha256`)
    schema: str = SCHEMA
    # layer -> timestep indices at which it does not run, so its cells there are never written:
    # a model of experts (Wan 2.2 A14B) runs one expert's blocks per timestep. Empty otherwise,
    # and then not written at all (stores of other models read exactly as before).
    inactive: dict[str, list[int]] = field(default_factory=dict)

    # What must match for a store to be resumed rather than refused: everything that decides
    # which values a cell holds. The version, resolution and the command's paths may differ.
    IDENTITY = (
        "schema",
        "model",
        "family",
        "config_sha256",
        "weights_sha256",
        "layers",
        "timesteps",
        "seeds",
        "samples",
        "frames",
        "pool",
        "dtype",
        "inactive",
    )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if not data["inactive"]:
            del data["inactive"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoreAttrs:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})

    def differences(self, other: StoreAttrs) -> list[str]:
        """The identity fields in which `other` differs (empty: the same run)."""
        mine, theirs = asdict(self), asdict(other)
        return [k for k in self.IDENTITY if mine[k] != theirs[k]]


def store_name(where: str | Path) -> str:
    """The store's own name (`acts.zarr`), never the folder or bucket it is in: safe to share."""
    return PurePosixPath(urlsplit(str(where)).path).name if is_url(where) else Path(where).name


# Object stores have buckets, not folders: a prefix exists only once an object is under it.
BUCKETED = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")


def check_location(where: str | Path, flag: str = "--out") -> None:
    """Say in one line why a store cannot be written at `where`, before any model work.

    Local: the folder must be writable. URL: the protocol's file system must be installed, and
    on an object store the bucket must exist and be reachable with the configured credentials.
    """
    if not is_url(where):
        check_writable_dir(Path(where).parent, flag)
        return
    try:
        fs, path = fsspec.core.url_to_fs(str(where))
    except (ImportError, ValueError) as exc:  # unknown protocol, or its package is missing
        raise ToolkitError(f"{flag} {where}: {exc}") from None
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if not set(protocols) & set(BUCKETED):
        return
    bucket = path.strip("/").split("/")[0]
    endpoint = _endpoint(fs)
    unreachable = _unreachable(endpoint) if endpoint else None
    if unreachable:
        raise ToolkitError(
            f"{flag} {where}: cannot reach the endpoint {endpoint} ({unreachable}); check the "
            "address (AWS_ENDPOINT_URL for S3) and that the server is up"
        )
    try:
        found = fs.exists(bucket)
    except Exception as exc:  # credentials, endpoint, network: the file system's own error
        raise ToolkitError(
            f"{flag} {where}: cannot reach it ({type(exc).__name__}: {exc})"
        ) from None
    if not found:
        raise ToolkitError(f"{flag} {where}: bucket {bucket} does not exist; create it first")


def _endpoint(fs) -> str | None:
    """The URL of the server an object-store file system talks to, when one is set (an
    S3-compatible server); None for the cloud's own endpoints."""
    kwargs = getattr(fs, "client_kwargs", None) or {}
    return (
        getattr(fs, "endpoint_url", None)
        or kwargs.get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )


def _unreachable(endpoint: str, timeout: float = 5.0) -> str | None:
    """Why a TCP connection to `endpoint` fails within `timeout` seconds, or None when it opens.

    Asked before the file system's own calls, which retry an unreachable server for half a
    minute and then report it as a missing bucket.
    """
    import socket

    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


@dataclass
class ActivationStore:
    """An open store; `attrs` is the run description, `group` the zarr group.

    `path` is where it lives as given: a local path or an fsspec URL.
    """

    path: str
    group: zarr.Group
    _chunk_keys: dict[str, set[str]] = field(default_factory=dict, repr=False)

    @property
    def attrs(self) -> StoreAttrs:
        return StoreAttrs.from_json(dict(self.group.attrs))

    @property
    def layers(self) -> list[str]:
        return list(self.attrs.layers)

    @property
    def name(self) -> str:
        return store_name(self.path)

    @functools.cached_property
    def _inactive(self) -> dict[str, set[int]]:
        return {layer: set(ts) for layer, ts in self.attrs.inactive.items()}

    def runs(self, layer: str, t: int) -> bool:
        """Whether `layer` ran at timestep index t (a model of experts runs one expert's blocks
        per timestep; its other cells are never written and never read)."""
        return t not in self._inactive.get(layer, ())

    def stored_bytes(self, layer: str) -> int:
        """Bytes of one layer's objects as stored (compressed), local or at a URL."""
        fs, root = fsspec.core.url_to_fs(str(self.path))
        return int(fs.du(f"{root.rstrip('/')}/{layer}", total=True))

    def array(self, layer: str) -> zarr.Array:
        """The activations of one layer, `(timestep, sample, frame, height, width, channel)`."""
        try:
            return self.group[layer]
        except KeyError:
            raise ToolkitError(
                f"{self.path} lists layer {layer} but has no array for it; "
                f"repair the store with `anti-i2v probe ... --repair` (the same command)"
            ) from None

    @functools.cached_property
    def completed_array(self) -> zarr.Array:
        """The `completed` grid's array, opened once (each opening reads its metadata: a request
        per cell on object storage)."""
        return self.group[COMPLETED]

    def completed(self) -> np.ndarray:
        """Bool `(timestep, sample)`: which cells are fully written."""
        return self.completed_array[:].astype(bool)

    def is_complete(self) -> bool:
        return bool(self.completed().all())

    def has_chunk(self, layer: str, t: int, s: int) -> bool:
        """Whether cell (t, s) of `layer` exists as an object (zarr reads a missing one as fill)."""
        if layer not in self._chunk_keys:  # one listing per layer, not one request per cell
            arr = self.array(layer)
            self._chunk_keys[layer] = set(sync(_collect(arr.store.list_prefix(f"{arr.path}/"))))
        arr = self.array(layer)
        key = arr.metadata.encode_chunk_key((t, s) + (0,) * (arr.ndim - 2))
        return f"{arr.path}/{key}" in self._chunk_keys[layer]

    def read_cell(self, layer: str, t: int, s: int) -> np.ndarray:
        """Cell (t, s) of `layer`, `(frame, height, width, channel)`; a missing or damaged chunk is an error.

        zarr returns the fill value for an absent chunk, which would enter every score as zeros;
        here it names the layer and the cell instead.
        """
        fix = "re-run the probe command with --repair to re-write the damaged cells"
        where = f"{self.path}: layer {layer}, timestep index {t}, sample {s}"
        if not self.has_chunk(layer, t, s):
            raise ToolkitError(f"{where}: the chunk is missing; {fix}")
        try:
            return np.asarray(self.array(layer)[t, s])
        except ToolkitError:
            raise
        except Exception as exc:  # truncated or random bytes: the codec fails in its own way
            raise ToolkitError(
                f"{where}: the chunk cannot be decoded ({type(exc).__name__}); {fix}"
            ) from None

    def damaged_cells(self) -> list[tuple[int, int]]:
        """Completed cells with a layer chunk that is absent or cannot be decoded (reads every chunk)."""
        done = self.completed()
        bad = set()
        for layer in self.layers:
            for t, s in zip(*np.nonzero(done), strict=True):
                if (int(t), int(s)) in bad or not self.runs(layer, int(t)):
                    continue
                try:
                    self.read_cell(layer, int(t), int(s))
                except ToolkitError:
                    bad.add((int(t), int(s)))
        return sorted(bad)


async def _collect(iterator: Any) -> list[str]:
    return [k async for k in iterator]


def open_store(where: str | Path) -> ActivationStore:
    """Open an existing store (local path or fsspec URL) for reading; refuses anything else."""
    if is_url(where):
        check_location(where, "store")  # the protocol installed, the server and bucket reachable
    try:
        group = zarr.open_group(str(where), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError):
        raise ToolkitError(
            f"{where} is not an activation store; make one with `anti-i2v probe`"
        ) from None
    except OSError as exc:  # a server that stopped answering, or a permission denied
        raise ToolkitError(f"cannot read {where} ({type(exc).__name__}: {exc})") from None
    if group.attrs.get("schema") != SCHEMA:
        raise ToolkitError(f"{where} has schema {group.attrs.get('schema')!r}, expected {SCHEMA!r}")
    return ActivationStore(str(where), group)


def _exists(where: str) -> bool:
    fs, path = fsspec.core.url_to_fs(where)
    return bool(fs.exists(path))


def create_or_resume(where: str | Path, attrs: StoreAttrs) -> ActivationStore:
    """Create a store with `attrs`, or reopen one written with the same settings to resume it.

    A local store is built in a hidden folder beside `where` and renamed into place whole, so
    no reader, and no second probe creating the same store at that moment, ever sees a half-made
    one: the second finds the first's complete store and resumes it. A store whose creation was
    cut short before this (a full disk) holds no attributes and only the creation's own arrays;
    it is made again.
    """
    where = str(where)
    if _exists(where):
        group = _open_existing(where)
        if group is None:  # a creation cut short: nothing in it was ever written
            _remove(where)
        else:
            diff = StoreAttrs.from_json(dict(group.attrs)).differences(attrs)
            if diff:
                raise ToolkitError(
                    f"{where} was written with other settings ({', '.join(diff)} differ); "
                    "use a new --out, or delete it to start over"
                )
            return ActivationStore(where, group)
    if is_url(where):  # object stores have no rename: attributes are written last instead
        _populate(zarr.open_group(where, mode="w-"), attrs)
        return ActivationStore(where, zarr.open_group(where, mode="r+"))
    target = Path(where)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(
        tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name[:48]}.", suffix=".creating")
    )
    try:
        _populate(zarr.open_group(str(tmp), mode="w"), attrs)
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if _exists(where) and _open_existing(where) is not None:  # another probe won: resume it
            return create_or_resume(where, attrs)
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ActivationStore(where, zarr.open_group(where, mode="r+"))


# What a store holds between its creation and its attributes (`_populate`)
_CREATION_ARRAYS = {COMPLETED, "timestep", "sample"}


def _open_existing(where: str) -> zarr.Group | None:
    """The existing store at `where` opened for writing; None for a creation cut short.

    Raises:
        ToolkitError: something else is there.
    """
    other = ToolkitError(f"{where} exists and is not an activation store; choose another --out")
    try:
        group = zarr.open_group(where, mode="r+")
    except Exception:
        raise other from None
    schema = group.attrs.get("schema")
    if schema is None and not dict(group.attrs) and set(group.keys()) <= _CREATION_ARRAYS:
        return None
    if schema != SCHEMA:
        raise other
    return group


def _remove(where: str) -> None:
    fs, path = fsspec.core.url_to_fs(where)
    fs.rm(path, recursive=True)


def _populate(group: zarr.Group, attrs: StoreAttrs) -> None:
    """A new store's `completed` flags, coordinates and, last, its attributes."""
    shape = (len(attrs.timesteps), len(attrs.samples))
    group.create_array(
        COMPLETED,
        shape=shape,
        chunks=(1, 1),
        dtype="uint8",
        fill_value=0,
        dimension_names=DIMENSIONS[:2],
    )
    # Coordinates by label, the way xarray reads zarr: an array named like its one dimension.
    _coordinate(group, "timestep", np.asarray(attrs.timesteps, dtype="int32"))
    _coordinate(group, "sample", np.asarray([s["name"] for s in attrs.samples], dtype=str))
    # Written last: a store without attributes is not taken as one
    group.attrs.update(attrs.to_json())


def _coordinate(group: zarr.Group, name: str, values: np.ndarray) -> None:
    arr = group.create_array(
        name,
        shape=values.shape,
        dtype=str if values.dtype.kind == "U" else values.dtype,
        dimension_names=[name],
    )
    arr[:] = values


def _dimensions(group: zarr.Group, cell_shape: tuple[int, ...], frames: list[int]) -> list[str]:
    """The dimension names of a layer with cells `(frame, height, width, channel)`.

    xarray needs one size per dimension name across a store. DiT blocks all share one token grid;
    a UNet's blocks do not, so a size met for the second time under another size gets its own
    name (`height_16`), each with a coordinate array (frames: the latent frame indices kept).
    """
    names = []
    for base, size in zip(DIMENSIONS[2:], cell_shape, strict=True):
        # Frame indices when they describe this layer's frames (a family may lay out more)
        given = base == "frame" and len(frames) == size
        values = np.asarray(frames if given else range(size), dtype="int32")
        for name in (base, f"{base}_{size}"):
            if name not in group:
                _coordinate(group, name, values)
            if group[name].shape == (size,):
                names.append(name)
                break
    return [*DIMENSIONS[:2], *names]


def ensure_layer(
    store: ActivationStore,
    layer: str,
    cell_shape: tuple[int, ...],
    dtype: str,
    frames: list[int] | None = None,
    codec: str = "zstd",
) -> zarr.Array:
    """The array of `layer`, created on first use with one chunk per (timestep, sample).

    `frames`: the latent frame indices the cells keep (default: 0, 1, ...), its coordinate.
    `codec`: the chunk compressor (`compressors`); an existing array keeps its own.
    """
    if layer in store.group:
        arr = store.group[layer].with_config(WRITE_EVERY_CHUNK)
        if tuple(arr.shape[2:]) != tuple(cell_shape):
            raise ToolkitError(
                f"layer {layer} in {store.path} has cells {arr.shape[2:]}, this run gives {cell_shape}"
            )
        return arr
    attrs = store.attrs
    t, s = len(attrs.timesteps), len(attrs.samples)
    return store.group.create_array(
        layer,
        shape=(t, s, *cell_shape),
        chunks=(1, 1, *cell_shape),
        dtype=dtype,
        fill_value=0,
        compressors=compressors(codec),
        dimension_names=_dimensions(
            store.group, tuple(cell_shape), frames or list(range(cell_shape[0]))
        ),
        config=WRITE_EVERY_CHUNK,
    )


def mark_done(store: ActivationStore, t: int, s: int, done: bool = True) -> None:
    """Record that cell (t, s) is fully written (call after every layer's chunk), or that it is not."""
    store.completed_array[t, s] = int(done)


class CellWriter:
    """Writes whole cells (every layer's chunk of one (timestep, sample)) on a background thread.

    The probe computes the next cell while this one is compressed and written; a cell is marked
    completed only after all its chunks are on disk. At most `depth` cells wait, so memory stays
    bounded. Leaving the `with` block (also on Ctrl-C) waits for the cells already handed over.
    A cell's chunks go to zarr's async API together, in one trip to its event loop, so they are
    encoded and written concurrently (one trip per chunk cost ~2 ms each in thread hand-offs).
    """

    def __init__(
        self,
        store: ActivationStore,
        dtype: str,
        depth: int = 1,
        frames: list[int] | None = None,
        codec: str = "zstd",
    ):
        self.store, self.dtype, self.depth, self.frames = store, dtype, depth, frames
        self.codec = codec
        self._arrays: dict[str, zarr.Array] = {}
        self._pending: deque[Future] = deque()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zarr-writer")

    def put(self, t: int, s: int, cells: dict[str, np.ndarray]) -> None:
        """Queue cell (t, s): one array per layer, already in the store's layout."""
        for name, cell in cells.items():  # arrays are created here, in order, not on the writer
            if name not in self._arrays:
                self._arrays[name] = ensure_layer(
                    self.store, name, cell.shape, self.dtype, self.frames, self.codec
                )
        while len(self._pending) >= self.depth:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._write, t, s, cells))

    def _write(self, t: int, s: int, cells: dict[str, np.ndarray]) -> None:
        async def chunks() -> None:
            await asyncio.gather(
                *(
                    self._arrays[name].async_array.setitem(
                        (t, s), cell.astype(self.dtype, copy=False)
                    )
                    for name, cell in cells.items()
                )
            )

        sync(chunks())
        mark_done(self.store, t, s)  # after every chunk: a half-written cell is never "done"

    def close(self) -> None:
        """Wait for every queued cell; re-raise the first write error."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> CellWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def finish(store: ActivationStore) -> None:
    """Consolidate metadata once all cells are written, so readers open the store in one read."""
    with warnings.catch_warnings():  # zarr notes that consolidation is not yet in the v3 spec
        warnings.simplefilter("ignore", category=UserWarning)
        zarr.consolidate_metadata(store.path)
