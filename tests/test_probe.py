"""The probe job end to end on every tiny family: schema, determinism, options, resume, bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EVERY_FAMILY, count_blocks
from PIL import Image
from typer.testing import CliRunner

import anti_i2v.probe.store as probe_store
from anti_i2v.cli import app
from anti_i2v.core.common import ToolkitError
from anti_i2v.core.images import load_photo
from anti_i2v.models.capture import frame_indices, pool_spatial, pooled_size
from anti_i2v.probe.run import ProbeConfig, run_probe
from anti_i2v.probe.store import DIMENSIONS, SCHEMA, open_store

REQUIRED_ATTRS = {
    "schema",
    "model",
    "family",
    "config_sha256",
    "layers",
    "timesteps",
    "seeds",
    "samples",
    "frames",
    "pool",
    "toolkit_version",
}


def _run_probe(tmp_path, model, images, name="s.zarr", **kw):
    cfg = ProbeConfig(
        model=model,
        images=tuple(map(str, images)),
        out=str(tmp_path / name),
        timesteps=kw.pop("timesteps", (200, 800)),
        **kw,
    )
    return run_probe(cfg)


def _chunk_digest(path: Path) -> dict[str, str]:
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file() and "/c/" in str(f.relative_to(path)).replace("\\", "/") + "/"
    }


@pytest.mark.parametrize("family", EVERY_FAMILY)
def test_store_has_every_block(tmp_path, portraits, backbones, family):
    # a model of experts needs a timestep in each expert's band (t >= 900: the high-noise one)
    experts = backbones(family).active_blocks(950) != backbones(family).active_blocks(500)
    timesteps = (950, 500) if experts else (500,)
    result = _run_probe(tmp_path, f"tiny:{family}", [portraits], timesteps=timesteps)
    store = open_store(result.store.path)
    attrs = store.attrs
    assert REQUIRED_ATTRS <= set(store.group.attrs)  # the on-disk schema, as other tools read it
    assert attrs.schema == SCHEMA and attrs.family == family
    denoiser = result.store  # the store alone: count arrays against the model's own module tree
    model = backbones(family).denoiser
    expected = count_blocks(model)
    coordinates = {k for k, a in denoiser.group.arrays() if a.metadata.dimension_names == (k,)}
    assert {"timestep", "sample", "frame", "height", "width", "channel"} <= coordinates
    arrays = [k for k in denoiser.group.array_keys() if k not in coordinates | {"completed"}]
    assert len(arrays) == expected == len(attrs.layers)
    assert [s["name"] for s in attrs.samples] == ["p10", "p20", "p30"]
    for name in attrs.layers:
        arr = store.array(name)
        # A UNet's blocks differ in size: those get their own names, e.g. height_8
        assert all(
            d == base or d.startswith(f"{base}_")
            for d, base in zip(arr.metadata.dimension_names, DIMENSIONS, strict=True)
        )
        assert arr.shape[:2] == (len(timesteps), 3)
        assert arr.chunks[:2] == (1, 1) and arr.chunks[2:] == arr.shape[2:]
        ran = [t for t in range(len(timesteps)) if store.runs(name, t)]
        values = arr[ran]
        assert len(ran) == (1 if experts else len(timesteps))  # each expert: its own band
        assert np.isfinite(values).all()
        assert values.std() > 0
        # a block's cells where it did not run are never written (not even as zeros)
        assert all(not store.has_chunk(name, t, 0) for t in range(len(timesteps)) if t not in ran)
    assert store.is_complete()


@pytest.mark.slow  # end to end: three probe runs
def test_same_seed_same_bytes(tmp_path, portraits):
    a = _run_probe(tmp_path, "tiny:cogvideox", [portraits], "a.zarr", seeds=(3,))
    b = _run_probe(tmp_path, "tiny:cogvideox", [portraits], "b.zarr", seeds=(3,))
    c = _run_probe(tmp_path, "tiny:cogvideox", [portraits], "c.zarr", seeds=(4,))
    da, db, dc = (_chunk_digest(Path(r.store.path)) for r in (a, b, c))
    assert da and da == db
    assert da != dc


def test_pool_and_frames_give_documented_shapes(tmp_path, portraits):
    full = _run_probe(tmp_path, "tiny:ltx", [portraits], "full.zarr", timesteps=(500,))
    small = _run_probe(
        tmp_path, "tiny:ltx", [portraits], "small.zarr", timesteps=(500,), pool=3, frames=2
    )
    for name in full.store.layers:
        _, _, f, h, w, c = full.store.array(name).shape
        assert small.store.array(name).shape == (1, 3, 2, pooled_size(h, 3), pooled_size(w, 3), c)
    assert pooled_size(8, 3) == 3 and pooled_size(8, 1) == 8
    assert frame_indices(13, 4) == [0, 4, 8, 12] and frame_indices(3, 10) == [0, 1, 2]
    x = torch.arange(16.0).reshape(1, 1, 4, 4, 1)
    assert pool_spatial(x, 2)[0, 0, :, :, 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]


def test_multiple_seeds_extend_the_sample_axis(tmp_path, portraits):
    r = _run_probe(tmp_path, "tiny:wan", [portraits], timesteps=(500,), seeds=(0, 1))
    samples = r.store.attrs.samples
    assert [(s["name"], s["seed"]) for s in samples][:2] == [("p10", 0), ("p10", 1)]
    arr = r.store.array(r.store.layers[0])[:]
    assert not np.array_equal(arr[0, 0], arr[0, 1])  # different noise


@pytest.mark.slow  # end to end: two probe runs and a resume
def test_interrupted_run_resumes_to_identical_store(tmp_path, portraits, monkeypatch):
    whole = _run_probe(tmp_path, "tiny:hunyuan", [portraits], "whole.zarr", batch_size=2)
    calls = {"n": 0}
    real = probe_store.mark_done

    def flaky(store, t, s):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # as if Ctrl-C arrived after some cells were written
        real(store, t, s)

    monkeypatch.setattr(probe_store, "mark_done", flaky)
    with pytest.raises(KeyboardInterrupt):
        _run_probe(tmp_path, "tiny:hunyuan", [portraits], "resumed.zarr", batch_size=2)
    partial = open_store(tmp_path / "resumed.zarr")
    assert 0 < partial.completed().sum() < partial.completed().size
    monkeypatch.setattr(probe_store, "mark_done", real)
    resumed = _run_probe(tmp_path, "tiny:hunyuan", [portraits], "resumed.zarr", batch_size=2)
    assert resumed.cells_written == 6 - 3
    for name in whole.store.layers:
        np.testing.assert_array_equal(whole.store.array(name)[:], resumed.store.array(name)[:])


def test_store_with_other_settings_is_refused(tmp_path, portraits):
    _run_probe(tmp_path, "tiny:cogvideox", [portraits], timesteps=(500,))
    with pytest.raises(ToolkitError, match="timesteps differ"):
        _run_probe(tmp_path, "tiny:cogvideox", [portraits], timesteps=(400,))


def test_store_of_a_model_since_retrained_is_refused(tmp_path, portraits, retrainable_model):
    """Same folder and config, new weights: resuming would mix two models' activations."""
    folder, retrain = retrainable_model
    _run_probe(tmp_path, str(folder), [portraits], timesteps=(500,))
    retrain()
    with pytest.raises(ToolkitError, match="weights_sha256 differ"):
        _run_probe(tmp_path, str(folder), [portraits], timesteps=(500,))


# --- bad input -----------------------------------------------------------------------------


def _img(path: Path, mode: str, size=(40, 30), **save) -> Path:
    arr = (np.random.default_rng(0).random((size[1], size[0], 4)) * 255).astype(np.uint8)
    if mode == "I;16":
        img = Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
        assert img.mode == "I;16"
    else:
        img = Image.fromarray(arr, "RGBA").convert(mode)
    img.save(path, **save)
    return path


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [
        ("RGBA", ".png"),
        ("L", ".png"),
        ("CMYK", ".jpg"),
        ("I;16", ".png"),
        ("P", ".png"),
        ("LA", ".png"),
    ],
)
def test_any_image_mode_becomes_rgb(tmp_path, mode, suffix):
    photo = load_photo(_img(tmp_path / f"x{suffix}", mode))
    assert photo.pixels.shape == (3, 30, 40)
    assert 0 <= photo.pixels.min() and photo.pixels.max() <= 1 and photo.pixels.std() > 0


def test_sixteen_bit_keeps_its_range(tmp_path):
    arr = np.full((8, 8), 65535 // 2, np.uint16)
    Image.fromarray(arr).save(tmp_path / "h.png")
    assert load_photo(tmp_path / "h.png").pixels.mean().item() == pytest.approx(0.5, abs=1e-3)


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_photo(tmp_path / "r.jpg").size == (40, 20)  # (height, width) after rotation


@pytest.mark.slow
def test_huge_image_is_shrunk_while_decoding(tmp_path):
    Image.new("RGB", (6000, 4000), (10, 200, 30)).save(tmp_path / "big.png")
    photo = load_photo(tmp_path / "big.png", max_side=128)
    assert max(photo.size) == 128


@pytest.mark.parametrize(
    "content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00"]
)
def test_unreadable_files_name_the_problem(tmp_path, content):
    (tmp_path / "bad.png").write_bytes(content)
    with pytest.raises(ToolkitError, match=r"cannot read .*bad\.png: .*re-export"):
        load_photo(tmp_path / "bad.png")


def test_bad_image_among_good_is_skipped_and_listed(tmp_path, portraits):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    r = _run_probe(
        tmp_path,
        "tiny:cogvideox",
        [portraits / "p10.png", tmp_path / "broken.jpg"],
        timesteps=(500,),
    )
    assert [s["name"] for s in r.store.attrs.samples] == ["p10"]
    assert r.skipped and "broken.jpg" in r.skipped[0][0]


# --- CLI ---------------------------------------------------------------------------------


def test_cli_probe_prints_summary(tmp_path, portraits):
    res = CliRunner().invoke(
        app,
        [
            "probe",
            "tiny:svd",
            str(portraits / "p10.png"),
            "--out",
            str(tmp_path / "c.zarr"),
            "--timesteps",
            "500",
            "--pool",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "mid_block" in res.output and "5 layers" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["probe", "nonexistent-model", "IMG", "--out", "OUT"],
            "unknown model 'nonexistent-model'",
        ),
        (["probe", "tiny:wan", "missing.png", "--out", "OUT"], "none of the images could be read"),
    ],
)
def test_cli_bad_input_is_one_line_and_nonzero(tmp_path, portraits, args, message):
    args = [
        a.replace("IMG", str(portraits / "p10.png")).replace("OUT", str(tmp_path / "o.zarr"))
        for a in args
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    assert message in res.output
    assert res.output.strip().count("\n") == 0  # one line, no traceback


def test_cli_models_lists_builtins():
    res = CliRunner().invoke(app, ["models"])
    assert res.exit_code == 0
    for name in ("mini-cogvideox", "tiny:svd", "tiny:wan22", "opensora", "dynamicrafter"):
        assert name in res.output


@pytest.mark.slow  # a probe run read back through xarray
@pytest.mark.parametrize("family", ["cogvideox", "svd"])
def test_xarray_reads_a_store_by_label(tmp_path, portraits, family):
    """Coordinates as xarray's zarr convention expects: select by timestep value and sample name."""
    import xarray as xr

    result = _run_probe(tmp_path, f"tiny:{family}", [portraits], frames=1)
    store = open_store(result.store.path)
    ds = xr.open_zarr(str(result.store.path))
    assert list(ds["timestep"].values) == [200, 800]
    assert list(ds["sample"].values) == ["p10", "p20", "p30"]
    layer = store.layers[-1]
    cell = ds[layer].sel(timestep=800, sample="p20").values
    np.testing.assert_array_equal(cell, store.read_cell(layer, 1, 1))
    assert ds[layer].dims[:2] == ("timestep", "sample")
    assert ds["completed"].sel(timestep=200).values.all()


@pytest.mark.parametrize("family", ["svd", "cogvideox"])  # an image VAE and a causal video VAE
def test_vae_blocks_are_stored_beside_the_denoisers_unchanged(tmp_path, portraits, family):
    """`--vae` adds the VAE encoder's blocks after the denoiser's, on its frame axis and token
    grid, the photo's features at every frame; the denoiser's chunks keep their bytes."""
    plain = _run_probe(tmp_path, f"tiny:{family}", [portraits], "plain.zarr", timesteps=(500,))
    both = _run_probe(
        tmp_path, f"tiny:{family}", [portraits], "vae.zarr", timesteps=(500,), vae=True
    )
    blocks, layers = plain.store.layers, both.store.layers
    vae = layers[len(blocks) :]
    assert layers[: len(blocks)] == blocks
    assert vae[-1] == "vae.encoder.mid_block" and all(v.startswith("vae.encoder.") for v in vae)
    for name in blocks:
        assert np.array_equal(both.store.array(name)[:], plain.store.array(name)[:])
    first = both.store.array(blocks[0]).shape
    for name in vae:
        x = both.store.array(name)[:]
        assert x.shape[:5] == first[:5]  # (timestep, sample, frame, height, width)
        assert np.isfinite(x).all() and x.std() > 0
        assert np.array_equal(x[:, :, :1].repeat(x.shape[2], axis=2), x)  # a still video
    assert both.store.attrs.config["vae"] is True


@pytest.mark.parametrize("family", EVERY_FAMILY)
def test_every_familys_vae_encoder_blocks_are_read_while_the_photo_is_encoded(backbones, family):
    from anti_i2v.models.capture import capture_vae

    backbone = backbones(family)
    names = backbone.vae_block_names()
    assert names[-1] == "vae.encoder.mid_block" and len(names) >= 3
    with torch.no_grad(), capture_vae(backbone, names) as got:
        backbone.condition(torch.rand(2, 3, *backbone.resolution))
    assert list(got) == names  # in the order they run: the down blocks, then the mid block
    for name, x in got.items():
        assert x.dim() == 5 and x.shape[0] == 2 and x.shape[1] == 1, (name, x.shape)  # the photo
    # The hooks are gone afterwards: encoding again records nothing.
    got.clear()
    with torch.no_grad():
        backbone.condition(torch.rand(2, 3, *backbone.resolution))
    assert got == {}


def test_probing_a_model_of_experts_refuses_timesteps_that_miss_an_expert(tmp_path, portraits):
    out = tmp_path / "acts.zarr"
    res = CliRunner().invoke(
        app, ["probe", "tiny:wan22-a14b", str(portraits), "--timesteps", "100,500",
              "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 2 and "never run 2 of" in res.output and "high.blocks.0" in res.output
    assert not out.exists()
