"""The layer explorer: a self-contained folder to see what every block encodes, from a probe store.

`build_explorer` writes:

    OUT/index.html, explorer.js, explorer.css   the page (vanilla JS, no framework, no build step)
    OUT/profile.json                           the profile the page shows
    OUT/data/manifest.js                       layers, token grids, timesteps, samples, kept frames,
                                               the profile's scores, picks and rule, photo and
                                               part-mask thumbnails
    OUT/data/layer-NNN.js                      one per block: for every timestep a PNG sprite of the
                                               PCA-RGB maps (rows: samples, columns: frames) and the
                                               tokens' `dims`-d PCA features in float16

Why scripts holding base64 rather than .png and .bin files: a page opened from file:// may not
fetch() other files (Chromium refuses), but it may load scripts; and pixels drawn from a data:
URL keep a canvas exportable, where an image read from file:// would taint it. Base64 costs 4/3
of the bytes, which `explorer_bytes` counts. Layer files load only when the page shows that
layer, so the page holds a few layers at a time whatever the model's depth.

Each layer gets one PCA, fitted on a seeded, bounded subset of its tokens over every kept
timestep, sample and frame (after the same massive-activation clamp as the analysis), so colours
and similarities compare across timesteps and samples. Similarity in the page is the cosine of
these centred, reduced features: it is the cosine of the full features after removing the
layer's mean token, up to the variance the `dims` components leave out (recorded per layer as
`explained`).

Memory while building: one layer's kept cells at a time (timesteps x kept samples x kept frames
x tokens x channels, float32), never the store.

Two views come from jobs of their own, which need the model (the store does not hold what they
show), and are embedded in the manifest when given:
- the lens strip (`anti-i2v lens`'s folder): per timestep, the decoded frames each block would
  generate, as the bare mosaic `frames-t<t>.png` (one photo);
- the attention view (`anti-i2v attention --maps K`'s folder): per block and timestep, where K
  video queries of one photo attend over every frame; the page shows the recorded query nearest
  the clicked token. The attention share itself is a score (`analyse --attention`) and is drawn
  with the others.
Both are as large as their files (the lens mosaic's cells are at most 96 pixels on a side); the
page never fetches them.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import math
from collections.abc import Callable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.progress import Progress
from sklearn.decomposition import PCA

from anti_i2v.analyses.analyse import AnalysisConfig, check_store, clamped_cell, console
from anti_i2v.analyses.choose import MEASURES
from anti_i2v.analyses.config import ExploreConfig
from anti_i2v.analyses.figures import PART_COLOURS
from anti_i2v.analyses.profile import Profile
from anti_i2v.core.common import ToolkitError, atomic_dir, check_writable_dir, to_uint8
from anti_i2v.core.images import Photo
from anti_i2v.models.layers import split_vae_layers
from anti_i2v.probe.store import ActivationStore

PAGE_FILES = ("index.html", "explorer.js", "explorer.css")
BASE64 = 4 / 3  # bytes written per byte encoded


def is_explorer_folder(folder: Path) -> bool:
    """Whether `folder` holds an explorer that `build_explorer` wrote, and nothing else."""
    manifest = folder / "data" / "manifest.js"
    try:
        head = manifest.read_text(errors="replace")[:32]
    except OSError:
        return False
    own = {*PAGE_FILES, "data", "profile.json"}
    return head.startswith("window.EXPLORER = ") and all(p.name in own for p in folder.iterdir())


def check_explorer_out(out: Path) -> None:
    """Refuse, in one line, an `--out` that the explorer would replace but did not write.

    The explorer replaces its folder as a whole, so an existing folder must be empty or an
    explorer folder: never an `adapt` folder, whose profile and report it would destroy.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ToolkitError(f"--out {out} is a file; give a folder for the explorer")
    if out.is_dir() and any(out.iterdir()) and not is_explorer_folder(out):
        first = sorted(p.name for p in out.iterdir())[0]
        raise ToolkitError(
            f"--out {out} holds files the explorer did not write (such as {first}), which it "
            "would replace; give a new folder (adapt writes its explorer to DIR/explorer)"
        )
    check_writable_dir(out)


def explorer_bytes(
    layers: int,
    timesteps: int,
    samples: int,
    frames: int,
    tokens: int,
    cfg: ExploreConfig = ExploreConfig(),
) -> int:
    """An upper bound on the explorer folder's data, in bytes (the page itself adds ~30 KB).

    Args:
        layers, timesteps, samples, frames: the store's axes (samples and frames before the
            explorer's own caps, which are applied here).
        tokens: height x width of the largest layer's token grid (after the store's pooling).

    Returns:
        Features (float16, `cfg.dims` per token) and sprites (3 bytes per token, PNG at worst
        stored) for every layer and timestep, plus photo and mask thumbnails, all in base64.
    """
    s, f = min(samples, cfg.samples), min(frames, cfg.frames)
    per_cell = f * tokens * (cfg.dims * 2 + 3)
    thumbs = s * cfg.thumbnail**2 * (3 + 4)  # photo (RGB) and mask (RGBA), PNG at worst stored
    return math.ceil((layers * timesteps * s * per_cell + thumbs) * BASE64)


def kept_frames(stored: int, wanted: int) -> list[int]:
    """`wanted` frame indices spread evenly over `stored` frames, first and last included."""
    return [int(i) for i in np.unique(np.linspace(0, stored - 1, min(wanted, stored)).round())]


def _png_data_url(rgb: np.ndarray) -> str:
    """A data: URL of an (H, W, 3|4) uint8 image; PIL writes no metadata unless asked: same bytes."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).astype("<f2").tobytes()).decode()


class _LayerReducer:
    """One layer's PCA over kept cells, and its sprites and float16 features per timestep."""

    def __init__(self, store: ActivationStore, cfg: ExploreConfig, samples: int, frames: list[int]):
        self.store, self.cfg, self.samples, self.frames = store, cfg, samples, frames
        self.ratio = AnalysisConfig().massive_ratio  # the analysis's clamp: the same features

    def cells(self, layer: str) -> list[list[np.ndarray] | None]:
        """[timestep][sample] -> (kept frames, h, w, C) float32, clamped as the analysis does;
        None at a timestep the layer did not run at (one expert's block, the other's band)."""
        n_t = len(self.store.attrs.timesteps)
        return [
            [
                clamped_cell(self.store, layer, ti, s, self.ratio)[self.frames].numpy()
                for s in range(self.samples)
            ]
            if self.store.runs(layer, ti)
            else None
            for ti in range(n_t)
        ]

    def fit(self, cells: list[list[np.ndarray] | None]) -> PCA:
        rng = np.random.default_rng(self.cfg.seed)
        cells = [per_t for per_t in cells if per_t is not None]
        per_cell = max(1, self.cfg.max_fit_rows // (len(cells) * self.samples))
        rows = []
        for per_t in cells:
            for x in per_t:
                flat = x.reshape(-1, x.shape[-1])
                pick = np.sort(rng.choice(len(flat), min(per_cell, len(flat)), replace=False))
                rows.append(flat[pick])
        fit_rows = np.concatenate(rows)
        dims = min(self.cfg.dims, fit_rows.shape[1], fit_rows.shape[0])
        return PCA(n_components=dims, svd_solver="randomized", random_state=self.cfg.seed).fit(
            fit_rows
        )

    def reduce(self, layer: str) -> dict:
        cells = self.cells(layer)
        pca = self.fit(cells)
        f, h, w, c = next(per_t for per_t in cells if per_t is not None)[0].shape
        z = [
            None
            if per_t is None
            else [pca.transform(x.reshape(-1, c)).reshape(f, h, w, -1) for x in per_t]
            for per_t in cells
        ]
        # One colour scale per layer (1st..99th percentile of the first 3 components over every
        # kept cell), so the same colour means the same direction at every timestep and sample.
        first3 = np.concatenate(
            [zz[..., :3].reshape(-1, min(3, zz.shape[-1])) for t in z if t for zz in t]
        )
        lo, hi = np.percentile(first3, 1, axis=0), np.percentile(first3, 99, axis=0)
        timesteps: list[dict | None] = []
        for per_t in z:
            if per_t is None:  # the page says the block does not run at this timestep
                timesteps.append(None)
                continue
            tiles = []
            for zz in per_t:  # (f, h, w, d) -> one row of frames
                rgb = np.clip((zz[..., :3] - lo) / np.maximum(hi - lo, 1e-8), 0, 1)
                if rgb.shape[-1] < 3:
                    rgb = np.pad(rgb, ((0, 0), (0, 0), (0, 0), (0, 3 - rgb.shape[-1])))
                tiles.append(np.concatenate(list(rgb), axis=1))  # (h, f*w, 3)
            sprite = (np.concatenate(tiles, axis=0) * 255).round().astype(np.uint8)
            timesteps.append({"sprite": _png_data_url(sprite), "features": _b64(np.stack(per_t))})
        return {
            "grid": [h, w],
            "dims": int(pca.n_components_),
            "channels": c,
            "explained": round(float(pca.explained_variance_ratio_.sum()), 4),
            "timesteps": timesteps,
        }


def _thumbnail(photo: Photo, side: int) -> str:
    return _png_data_url(to_uint8(photo.work_pixels(side)))


def _mask_thumbnail(labels: np.ndarray, side: int) -> str:
    """Part labels as colours with alpha (background transparent), nearest-neighbour scaled."""
    img = Image.fromarray(labels.astype(np.uint8))
    img.thumbnail((side, side), Image.Resampling.NEAREST)
    lab = np.asarray(img).astype(np.int64)
    rgb = (PART_COLOURS[np.clip(lab, 0, len(PART_COLOURS) - 1)] * 255).round().astype(np.uint8)
    alpha = np.where(lab > 0, 255, 0).astype(np.uint8)[..., None]
    return _png_data_url(np.concatenate([rgb, alpha], axis=-1))


def denoiser_blocks(store: ActivationStore) -> list[str]:
    """The store's denoiser blocks: the explorer (and its in-page rule) leaves out VAE blocks,
    which the analysis figures show (`probe --vae`)."""
    return split_vae_layers(store.layers)[0]


def check_profile_matches(profile: Profile, store: ActivationStore, source: str) -> None:
    """Refuse a profile made from another model or another probe's timesteps, in one line.

    The model check is the profile's own (`Profile.check_model`, as protect uses it).
    """
    attrs = store.attrs
    profile.check_model(attrs.model, denoiser_blocks(store), attrs.config_sha256)
    if profile.timesteps_probed and profile.timesteps_probed != attrs.timesteps:
        raise ToolkitError(
            f"{source} scores timesteps {profile.timesteps_probed}, the store holds "
            f"{attrs.timesteps}; analyse this store again (`anti-i2v analyse`) or leave out --profile"
        )


def lens_view(folder: Path, layers: list[str], model: str) -> dict:
    """The lens strips of `anti-i2v lens`'s folder, for the manifest; one line if unusable.

    Returns:
        photo, shown frames, and per timestep (a string) the mosaic as a data: URL and its rows.
    """
    from anti_i2v.probe.lens import SCHEMA as LENS_SCHEMA

    data = _read_view(
        folder / "lens.json", LENS_SCHEMA, "--lens", "anti-i2v lens MODEL PHOTO --out DIR"
    )
    _same_blocks(data, layers, model, "--lens")
    strips = {}
    for t, entry in data["rows"].items():
        with Image.open(folder / entry["file"]) as img:
            rgb = np.asarray(img.convert("RGB"))
        strips[t] = {"url": _png_data_url(rgb), "rows": entry["rows"]}
    return {"photo": data["photo"], "shown": data["shown"], "strips": strips}


def attention_view(folder: Path, layers: list[str], model: str) -> dict:
    """The attention maps of `anti-i2v attention --maps K`'s folder, for the manifest."""
    from anti_i2v.probe.attention import MAPS_SCHEMA

    data = _read_view(
        folder / "attention-maps.json", MAPS_SCHEMA, "--attention",
        "anti-i2v attention MODEL PHOTOS --maps 8 --out DIR",
    )  # fmt: skip
    unknown = sorted({key.rsplit("@", 1)[0] for key in data["maps"]} - set(layers))
    if data.get("model") != model or unknown:
        raise ToolkitError(
            f"--attention {folder}: measured on {data.get('model')}, not this store's {model}; "
            "measure the store's own model"
        )
    return {k: data[k] for k in ("photo", "grid", "timesteps", "maps")}


def _read_view(path: Path, schema: str, flag: str, how: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ToolkitError(
            f"{flag} {path.parent}: no readable {path.name} there; write it with `{how}`"
        ) from None
    if not isinstance(data, dict) or data.get("schema") != schema:
        raise ToolkitError(f"{flag} {path}: not of schema {schema}; write it with `{how}`")
    return data


def _same_blocks(data: dict, layers: list[str], model: str, flag: str) -> None:
    if data.get("model") != model or not set(data.get("layers", [])) <= set(layers):
        raise ToolkitError(
            f"{flag}: made on {data.get('model')}, not this store's {model}; look at the store's own model"
        )


def manifest(
    store: ActivationStore,
    profile: Profile,
    cfg: ExploreConfig,
    photos: dict[str, Photo],
    masks: dict[str, np.ndarray],
    views: dict | None = None,
) -> dict:
    """Everything the page needs before any layer file: axes, picks, scores, thumbnails, and
    the lens and attention views when given (`views`: their `lens_view`, `attention_view`)."""
    attrs = store.attrs
    n_s = min(cfg.samples, len(attrs.samples))
    stored_frames = store.array(attrs.layers[0]).shape[2]
    names = [s["name"] for s in attrs.samples[:n_s]]
    return {
        "schema": "anti-i2v.explorer/1",
        "model": attrs.model,
        "family": attrs.family,
        "store": store.name,  # a folder name, never a user path: the folder is shared
        "layers": denoiser_blocks(store),
        "timesteps": attrs.timesteps,
        "samples": names,
        "frames": kept_frames(stored_frames, cfg.frames),
        "pool": attrs.pool,
        "profile": {
            "collapse_layers": profile.collapse_layers,
            "anchor_layers": profile.anchor_layers,
            "timesteps": profile.timesteps,
            "semantic": profile.semantic,
            "scores": profile.to_json()["scores"],  # NaN (a block that did not run) as null
            "rule": profile.rule,
            # every score the rule may rank by (the page offers those the profile has)
            "measures": list(MEASURES),
        },
        "lens": (views or {}).get("lens"),
        "attention": (views or {}).get("attention"),
        "photos": {n: _thumbnail(photos[n], cfg.thumbnail) for n in names if n in photos},
        "masks": {n: _mask_thumbnail(masks[n], cfg.thumbnail) for n in names if n in masks},
        "config": {"dims": cfg.dims, "samples": cfg.samples, "frames": cfg.frames},
    }


def build_explorer(
    store: ActivationStore,
    profile: Profile,
    out: Path,
    photos: dict[str, Photo] | None = None,
    masks: dict[str, np.ndarray] | None = None,
    cfg: ExploreConfig = ExploreConfig(),
    source: str = "the profile",
    views: dict | None = None,
) -> Path:
    """Write the explorer folder for a complete store and its profile.

    Args:
        store: a complete activation store (checked chunk by chunk first).
        profile: the profile analysed from this store (checked against it).
        out: the folder to write; replaced as a whole, atomically, so a reader never sees a mix.
        photos: sample name -> the probed photo, shown under the maps (optional).
        masks: sample name -> part labels `(H, W)` for the overlay (optional).
        cfg: what is kept (components, samples, frames) and the seed of the PCA subsets.
        source: how a refusal names the profile (its file, when it came from one).
        views: the lens and attention views to embed (`lens_view`, `attention_view`).

    Returns:
        `out/index.html`.
    """
    check_store(store)
    check_profile_matches(profile, store, source)
    page = manifest(store, profile, cfg, photos or {}, masks or {}, views)
    frames = page["frames"]
    reducer = _LayerReducer(store, cfg, len(page["samples"]), frames)
    assets = resources.files("anti_i2v.analyses") / "explorer"
    with atomic_dir(out) as tmp:
        data = tmp / "data"
        data.mkdir(parents=True)
        for name in PAGE_FILES:
            (tmp / name).write_bytes((assets / name).read_bytes())
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("explore", total=len(page["layers"]))
            for i, layer in enumerate(page["layers"]):
                payload = {"layer": layer, **reducer.reduce(layer)}
                body = json.dumps(payload, separators=(",", ":"))
                (data / f"layer-{i:03d}.js").write_text(f"explorerLayer({i}, {body});\n")
                page.setdefault("grids", []).append(payload["grid"])
                page.setdefault("explained", []).append(payload["explained"])
                progress.advance(task)
        (data / "manifest.js").write_text(f"window.EXPLORER = {json.dumps(page)};\n")
        (tmp / "profile.json").write_text(json.dumps(profile.to_json(), indent=2) + "\n")
    return out / "index.html"


def tensor_of(payload_features: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Decode a layer file's base64 float16 features (for tests and notebooks), `shape` as stored."""
    raw = np.frombuffer(base64.b64decode(payload_features), dtype="<f2").reshape(shape)
    return torch.from_numpy(raw.astype(np.float32))


def serve_folder(
    folder: Path, port: int, ready: Callable[[ThreadingHTTPServer], None] | None = None
) -> None:
    """Serve `folder` on 127.0.0.1:`port` with the standard library's HTTP server until Ctrl-C.

    `ready` is called with the server once it listens (tests stop it with `server.shutdown()`).
    """
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise ToolkitError(
            f"--serve {port}: cannot listen ({exc.strerror}); pick another port"
        ) from None
    console.print(f"serving http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)")
    if ready is not None:
        ready(server)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
