"""Probe overhead: capture + zarr write against plain forward passes, measured side by side.

For each model, the same denoiser inputs are run (a) as a plain forward pass and (b) through the
probe's nnsight trace of every block plus layout, pooling and the zarr chunk writes. Plain and
probe passes run in alternating blocks (the probe's writes overlap its next pass) and the ratio of
median per-pass times is printed, with the nnsight capture alone (no storage) as `capture`. Usage: python bench/probe_overhead.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from diffusers import CogVideoXTransformer3DModel

from probe.backbones import load_backbone
from probe.backbones.cogvideox import CogVideoX
from probe.capture import execution_order, pool_spatial, trace_blocks
from probe.store import CellWriter, StoreAttrs, create_or_resume


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


def bench(backbone, repeats: int, rounds: int = 3) -> tuple[float, float, float]:
    """Median per-pass seconds of plain forwards, nnsight captures alone, and whole probe passes."""
    image = torch.rand(1, 3, *backbone.resolution)
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
        t0 = time.perf_counter()
        for _ in range(repeats):
            with torch.no_grad():
                backbone.denoiser(**kwargs)
        t1 = time.perf_counter()
        for _ in range(repeats):
            with torch.no_grad():
                trace_blocks(backbone, kwargs, layers)
        t1b = time.perf_counter()
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
        with CellWriter(store, "float16") as writer, torch.no_grad():
            for i in range(repeats):
                hidden = trace_blocks(backbone, kwargs, layers)
                writer.put(
                    i,
                    0,
                    {
                        n: pool_spatial(backbone.layout(h, cond).float(), 1)[0].numpy()
                        for n, h in hidden.items()
                    },
                )
        t2 = time.perf_counter()
        plain.append((t1 - t0) / repeats)
        captured.append((t1b - t1) / repeats)
        probed.append((t2 - t1b) / repeats)
    return statistics.median(plain), statistics.median(captured), statistics.median(probed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models", default="mini-cogvideox,midsize")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(
        f"{'model':32s} {'blocks':>6s} {'forward ms':>11s} {'capture':>8s} {'probe ms':>9s} {'ratio':>6s}"
    )
    for name in args.models.split(","):
        backbone = midsize_cogvideox() if name == "midsize" else load_backbone(name)
        plain, captured, probed = bench(backbone, args.repeats)
        print(
            f"{backbone.name:32s} {len(backbone.block_names()):6d} {plain * 1e3:11.1f} {captured / plain:7.2f}x "
            f"{probed * 1e3:9.1f} {probed / plain:6.2f}x"
        )


if __name__ == "__main__":
    main()
