"""Probe overhead: capture + zarr write against plain forward passes, measured side by side.

For each model, the same denoiser inputs are run (a) as a plain forward pass and (b) through the
probe's nnsight trace of every block plus layout, pooling and the zarr chunk writes. Plain and
probe passes run in alternating blocks (the probe's writes overlap its next pass) and the ratio of
median per-pass times is printed, with the nnsight capture alone (no storage) as `capture`, for
each `--codec`. Then the store's write throughput: the same cells (12 blocks of the midsize
model, float16) written through `CellWriter` to local disk and to an S3-protocol server (moto)
on 127.0.0.1, in MiB/s of float16 data. Usage:
    python bench/probe_overhead.py [--repeats N] [--codecs zstd,lz4,none] [--models mini-cogvideox,midsize]
        [--threads 2]  (e.g. 2,1: the forward pass's torch threads; 1 leaves the writer a core)
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import CogVideoXTransformer3DModel

from anti_i2v.models.backbones import load_backbone
from anti_i2v.models.backbones.cogvideox import CogVideoX
from anti_i2v.models.capture import execution_order, pool_spatial, trace_blocks
from anti_i2v.probe.store import CellWriter, StoreAttrs, create_or_resume


def midsize_cogvideox():
    """The tiny CogVideoX pipeline with a wider, deeper transformer (random weights): real-ish compute."""
    backbone = load_backbone("tiny:cogvideox")
    torch.manual_seed(0)
    backbone.pipe.transformer = (
        CogVideoXTransformer3DModel(
            num_attention_heads=8,
            attention_head_dim=64,
            in_channels=8,
            out_channels=4,
            time_embed_dim=64,
            text_embed_dim=32,
            num_layers=12,
            sample_width=16,
            sample_height=16,
            sample_frames=9,
            patch_size=2,
            temporal_compression_ratio=4,
            max_text_seq_length=16,
            use_rotary_positional_embeddings=True,
            use_learned_positional_embeddings=True,
        )
        .eval()
        .requires_grad_(False)
    )
    return CogVideoX(backbone.pipe, "midsize-cogvideox(random)", resolution=(128, 128), frames=9)


def bench(
    backbone, repeats: int, rounds: int = 3, codec: str = "zstd"
) -> tuple[float, float, float]:
    """Median per-pass seconds of plain forwards, nnsight captures alone, and whole probe passes
    (on the backbone's device; CUDA work is synchronised before each clock read)."""
    image = torch.rand(1, 3, *backbone.resolution, device=backbone.device)

    def clock() -> float:
        if backbone.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    with torch.no_grad():
        cond = backbone.condition(image)
        noisy = backbone.add_noise(cond.clean, torch.randn_like(cond.clean), 500)
        kwargs = backbone.denoiser_kwargs(noisy, cond, 500)
        layers = execution_order(backbone, kwargs)
        trace_blocks(
            backbone, kwargs, layers
        )  # builds the nnsight wrapper once, as a probe run does
    plain, captured, probed = [], [], []
    for r in range(rounds):
        # Blocks, not interleaved passes: the probe's writes overlap its next pass, so a plain pass
        # timed in between would pay for them. Each probe block includes draining its last writes.
        t0 = clock()
        for _ in range(repeats):
            with torch.no_grad():
                backbone.denoiser(**kwargs)
        t1 = clock()
        for _ in range(repeats):
            with torch.no_grad():
                trace_blocks(backbone, kwargs, layers)
        t1b = clock()
        attrs = StoreAttrs(
            model="bench",
            family="cogvideox",
            config_sha256="",
            layers=layers,
            timesteps=list(range(repeats)),
            seeds=[0],
            samples=[{"name": "0"}],
        )
        store = create_or_resume(Path(tempfile.mkdtemp()) / f"b{r}.zarr", attrs)
        with CellWriter(store, "float16", codec=codec) as writer, torch.no_grad():
            for i in range(repeats):
                hidden = trace_blocks(backbone, kwargs, layers)
                writer.put(
                    i,
                    0,
                    {
                        n: pool_spatial(backbone.layout(h, cond).float(), 1)[0].cpu().numpy()
                        for n, h in hidden.items()
                    },
                )
        t2 = clock()
        plain.append((t1 - t0) / repeats)
        captured.append((t1b - t1) / repeats)
        probed.append((t2 - t1b) / repeats)
    return statistics.median(plain), statistics.median(captured), statistics.median(probed)


def write_throughput(where: str, codec: str, cells: int = 20) -> float:
    """MiB/s of float16 data through `CellWriter` at `where` (a path or URL), 12 midsize blocks a cell."""
    layers = [f"transformer_blocks.{i}" for i in range(12)]
    rng = np.random.default_rng(0)
    cell = {n: rng.standard_normal((3, 8, 8, 512), dtype=np.float32) for n in layers}
    attrs = StoreAttrs(
        model="bench",
        family="cogvideox",
        config_sha256="",
        layers=layers,
        timesteps=list(range(cells + 1)),
        seeds=[0],
        samples=[{"name": "0"}],
    )
    store = create_or_resume(where, attrs)
    with CellWriter(store, "float16", codec=codec) as writer:
        writer.put(cells, 0, cell)  # creates the arrays: not timed
    t0 = time.perf_counter()
    with CellWriter(store, "float16", codec=codec) as writer:
        for i in range(cells):
            writer.put(i, 0, cell)
    seconds = time.perf_counter() - t0
    return cells * sum(x.size * 2 for x in cell.values()) / 2**20 / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models", default="mini-cogvideox,midsize")
    parser.add_argument("--codecs", default="zstd,lz4,none")
    # torch threads of the forward pass. With 1, the writer has the other core to itself, as it
    # has on a GPU machine; with 2 it shares the cores with the forward's OpenMP threads.
    parser.add_argument("--threads", default="2")
    args = parser.parse_args()
    codecs = args.codecs.split(",")
    print(
        f"{'model':32s} {'blocks':>6s} {'codec':>5s} {'threads':>7s} {'forward ms':>11s} "
        f"{'capture':>8s} {'probe ms':>9s} {'ratio':>6s}"
    )
    for name in args.models.split(","):
        backbone = midsize_cogvideox() if name == "midsize" else load_backbone(name)
        for codec in codecs:
            for threads in map(int, args.threads.split(",")):
                torch.set_num_threads(threads)
                plain, captured, probed = bench(backbone, args.repeats, codec=codec)
                print(
                    f"{backbone.name:32s} {len(backbone.block_names()):6d} {codec:>5s} "
                    f"{threads:7d} {plain * 1e3:11.1f} {captured / plain:7.2f}x "
                    f"{probed * 1e3:9.1f} {probed / plain:6.2f}x"
                )
    torch.set_num_threads(2)
    import s3fs
    from moto.server import ThreadedMotoServer  # the dev extra's S3-protocol server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    s3fs.S3FileSystem().mkdir("bench")
    print(
        f"{'store writes (12 midsize blocks a cell)':40s} " + " ".join(f"{c:>10s}" for c in codecs)
    )
    local = Path(tempfile.mkdtemp())
    for label, where in (
        ("local disk, MiB/s", str(local / "{codec}.zarr")),
        ("S3 on 127.0.0.1 (moto), MiB/s", "s3://bench/{codec}.zarr"),
    ):
        rates = [write_throughput(where.format(codec=c), c) for c in codecs]
        print(f"{label:40s} " + " ".join(f"{r:10.0f}" for r in rates))
    server.stop()


if __name__ == "__main__":
    main()
