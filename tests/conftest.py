"""Shared fixtures: tiny backbones built once, and small real photos from the mini world."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anti_i2v.models.backbones import FAMILIES, load_backbone
from anti_i2v.world.render import render_video, sample_identity, sample_motion

# The cores shared out among pytest-xdist's workers (`make test` runs two on the 2-core CI machine),
# or OMP_NUM_THREADS when other work shares the cores: torch's OpenMP threads spin on each other at
# every op, and a descheduled one stalls the rest (a 2-thread training step ran 45x slower beside
# one busy core, a 1-thread step at full speed). Set in the environment too, for the processes
# tests start (torchrun ranks, fresh-process measurements).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = int(os.environ.get("OMP_NUM_THREADS", max(1, (os.cpu_count() or 2) // _WORKERS)))
os.environ["OMP_NUM_THREADS"] = str(THREADS)
torch.set_num_threads(THREADS)
# The suite is offline by design (no weights can be fetched here or in CI): without this, LPIPS
# waits about 8 s for a DNS failure in every process that asks for it.
os.environ.setdefault("ANTI_I2V_OFFLINE", "1")


@pytest.fixture(scope="session")
def backbones():
    """Tiny backbones by family, built once per session."""
    cache: dict[str, object] = {}

    def get(family: str):
        if family not in cache:
            cache[family] = load_backbone(f"tiny:{family}")
        return cache[family]

    return get


@pytest.fixture
def retrainable_model(tmp_path):
    """tiny:cogvideox saved as a pipeline folder, and a call that "retrains" it in place: one
    weight moves and the config stays, which every cache of its outputs must tell apart."""
    backbone = load_backbone("tiny:cogvideox")
    folder = tmp_path / "model"
    backbone.pipe.save_pretrained(folder, safe_serialization=True)

    def retrain() -> None:
        with torch.no_grad():
            next(backbone.pipe.transformer.parameters()).add_(1e-2)
        backbone.pipe.save_pretrained(folder, safe_serialization=True)

    return folder, retrain


@pytest.fixture(scope="session")
def portraits(tmp_path_factory) -> Path:
    """A folder of three held-out mini-world portraits (first frames), 64x64 PNG."""
    d = tmp_path_factory.mktemp("portraits")
    for s in (10, 20, 30):
        rgb, _ = render_video(sample_identity(s), sample_motion(s), frames=1)
        Image.fromarray(rgb[0]).save(d / f"p{s}.png")
    return d


@pytest.fixture(scope="session")
def portrait_masks(tmp_path_factory) -> Path:
    """The portraits' part masks (the mini world's labels), `NAME.png` each."""
    d = tmp_path_factory.mktemp("portrait-masks")
    for s in (10, 20, 30):
        _, labels = render_video(sample_identity(s), sample_motion(s), frames=1)
        Image.fromarray(labels[0].astype(np.uint8)).save(d / f"p{s}.png")
    return d


@pytest.fixture(scope="session")
def tiny_profile(tmp_path_factory, portraits) -> Path:
    """A profile of tiny:cogvideox adapted on the portraits (two timesteps), made once per session."""
    from anti_i2v.analyses.run import adapt

    out = tmp_path_factory.mktemp("adapt")
    adapt("tiny:cogvideox", [portraits], out, probe_overrides={"timesteps": (300, 700)})
    return out / "profile.json"


@pytest.fixture
def photos(tmp_path, portraits) -> Path:
    """A copy of the portraits that a test may change (protect --in-place writes into it)."""
    d = tmp_path / "photos"
    shutil.copytree(portraits, d)
    return d


def file_bytes(folder: Path) -> dict[str, bytes]:
    """Every file's bytes in a folder, by name: compare a folder before and after a command."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if anything loads a model: refusals must come first."""
    import anti_i2v.models.backbones as backbones
    import anti_i2v.probe.attention as probe_attention
    import anti_i2v.probe.lens as probe_lens
    import anti_i2v.probe.run as probe_run
    import anti_i2v.protect.run as protect_run

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    for module in (backbones, protect_run, probe_run, probe_attention, probe_lens):
        monkeypatch.setattr(module, "load_backbone", refuse)


ALL_FAMILIES = sorted(FAMILIES)
# The fast tier (`make test-fast`) runs per-family tests on one DiT and one UNet family; the
# whole suite runs them on every family (the others are marked slow).
FAST_FAMILIES = ("cogvideox", "svd")
EVERY_FAMILY = [
    f if f in FAST_FAMILIES else pytest.param(f, marks=pytest.mark.slow) for f in ALL_FAMILIES
]

# Every container of blocks a supported denoiser has, as its own module tree names them.
BLOCK_LISTS = (
    "transformer_blocks",
    "single_transformer_blocks",
    "blocks",
    "vace_blocks",
    "spatial_blocks",
    "temporal_blocks",
    "down_blocks",
    "up_blocks",
    "input_blocks",
    "output_blocks",
)


def count_blocks(denoiser: torch.nn.Module) -> int:
    """Count blocks straight from the module tree, independently of the adapters."""
    experts = [getattr(denoiser, e) for e in ("high", "low") if hasattr(denoiser, e)]
    if experts:  # a model of experts (Wan 2.2 A14B): each expert's blocks
        return sum(count_blocks(e) for e in experts)
    n = sum(len(getattr(denoiser, attr, [])) for attr in BLOCK_LISTS)
    single = ("mid_block", "middle_block", "init_attn")  # blocks that are one module, not a list
    return n + sum(getattr(denoiser, a, None) is not None for a in single)
