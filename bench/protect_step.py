"""Protect step costs, measured side by side in one run on the same photo and model.

Prints: a dual-space step against an RGB step (same objective), an early-exit step (IRC/IRA only,
stopping after the deepest profile layer) against a full step, steps per second, and peak memory
(CUDA peak allocation on a GPU, process peak RSS on CPU). Then the levers: the dual full step in
float32 and bfloat16, each with and without activation checkpointing, as time and live-tensor
peak (`anti_i2v.models.memory.LiveBytes`) ratios to float32 without checkpointing.
Configurations are interleaved over several rounds and the median step of each is compared.
Usage: python bench/protect_step.py [--model mini-cogvideox] [--steps 8] [--rounds 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from anti_i2v.models.backbones import load_backbone
from anti_i2v.protect.loop import perturb_iterative
from anti_i2v.protect.objective import ModelObjective, ObjectiveSpec, clip_frames_for
from anti_i2v.protect.spaces import Space


def time_steps(
    backbone, space: str, weights: dict, layers: list[str], early_exit: bool, steps: int, x
) -> list[float]:
    """Seconds of each optimisation step after the first."""
    n = len(layers)
    spec = ObjectiveSpec(
        weights=weights,
        collapse_layers=layers[:1],
        anchor_layers=layers[n // 2 : n // 2 + 2],
        timesteps=[500],
        clip_frames=clip_frames_for(backbone, 4),
        early_exit=early_exit,
    )
    reference = (
        backbone.condition(backbone.resize(x), spec.clip_frames).clean.detach()
        if "diffusion" in weights
        else None
    )
    objective = ModelObjective(backbone, spec, x, reference, torch.rand_like(x))
    times: list[float] = []
    last = [time.perf_counter()]

    def tick(step: int, _terms: dict) -> None:
        if backbone.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        if step:  # the first step warms up
            times.append(now - last[0])
        last[0] = now

    perturb_iterative(x, objective, Space(space), steps + 1, 1 / 255, on_step=tick)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mini-cogvideox")
    parser.add_argument(
        "--steps", type=int, default=8, help="timed steps per configuration and round"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = load_backbone(args.model, dtype=args.dtype, device=args.device)
    layers = backbone.block_names()
    x = torch.rand(1, 3, *backbone.resolution, device=backbone.device)
    feats = {"irc": 1.0, "ira": 1.0}
    full = {"irc": 1.0, "ira": 1.0, "diffusion": 1.0}
    if backbone.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    configs = {
        "rgb": ("rgb", full, True),
        "dual": ("dual", full, True),
        "early": ("dual", feats, True),
        "no_exit": ("dual", feats, False),
    }
    times: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(args.rounds):  # rounds interleave the configurations so drifts hit all alike
        for key, (space, weights, early_exit) in configs.items():
            times[key] += time_steps(backbone, space, weights, layers, early_exit, args.steps, x)
    rgb, dual, early, no_exit = (statistics.median(times[k]) for k in configs)
    if backbone.device.type == "cuda":
        peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB (CUDA peak allocated)"
    else:
        peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process peak RSS)"
    print(
        f"model {backbone.name} on {backbone.device} ({args.dtype}), {len(layers)} blocks, resolution {backbone.resolution}"
    )
    print(f"rgb step (irc+ira+diffusion)      {rgb * 1e3:9.1f} ms")
    print(f"dual step (irc+ira+diffusion)     {dual * 1e3:9.1f} ms   dual/rgb = {dual / rgb:.3f}x")
    print(f"full step (irc+ira, no early exit){no_exit * 1e3:9.1f} ms")
    print(
        f"early-exit step (irc+ira)         {early * 1e3:9.1f} ms   early/full = {early / no_exit:.3f}x"
    )
    print(f"steps per second (dual, all terms) {1 / dual:8.2f}")
    print(f"peak memory {peak}")
    levers(args)


def step_peak(backbone, x) -> int:
    """Live tensor bytes at the peak of one dual full step (weights included)."""
    from anti_i2v.models.memory import LiveBytes, module_tensors

    layers = backbone.block_names()
    n = len(layers)
    spec = ObjectiveSpec(
        weights={"irc": 1.0, "ira": 1.0, "diffusion": 1.0},
        collapse_layers=layers[:1],
        anchor_layers=layers[n // 2 : n // 2 + 2],
        timesteps=[500],
        clip_frames=clip_frames_for(backbone, 4),
    )
    objective = ModelObjective(backbone, spec, x, None, torch.rand_like(x)).prepare()
    space = Space("dual")
    params = {k: v.requires_grad_(True) for k, v in space.init(x).items()}
    with LiveBytes(module_tensors(backbone.denoiser, backbone.pipe.vae)) as live:
        value, _ = objective(space.apply(x, params))
        torch.autograd.grad(value, list(params.values()))
    return live.peak


def levers(args) -> None:
    """dtype x checkpointing, side by side: step time and peak as ratios to float32 alone."""
    full = {"irc": 1.0, "ira": 1.0, "diffusion": 1.0}
    models = {}
    for dtype in ("float32", "bfloat16"):
        for ckpt in (False, True):
            backbone = load_backbone(args.model, dtype=dtype, device=args.device)
            if ckpt:
                backbone.enable_checkpointing()
            models[dtype, ckpt] = backbone
    x = torch.rand(1, 3, *models["float32", False].resolution, device=args.device)
    times: dict = {k: [] for k in models}
    for _ in range(args.rounds):
        for key, backbone in models.items():
            times[key] += time_steps(
                backbone, "dual", full, backbone.block_names(), True, args.steps, x
            )
    peaks = {key: step_peak(backbone, x) for key, backbone in models.items()}
    base_t, base_p = statistics.median(times["float32", False]), peaks["float32", False]
    print("levers (dual, irc+ira+diffusion)   ms/step   time ratio   peak MiB   peak ratio")
    for (dtype, ckpt), t in times.items():
        med, peak = statistics.median(t), peaks[dtype, ckpt]
        print(
            f"  {dtype:9s} {'checkpointing' if ckpt else '':13s} {med * 1e3:9.1f}   "
            f"{med / base_t:9.3f}x   {peak / 2**20:8.1f}   {peak / base_p:9.3f}x"
        )


if __name__ == "__main__":
    main()
