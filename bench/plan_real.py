"""Plan table for the six shipped real configs (artifacts/configs): no GPU, no weights.

For each model at its native resolution: protect (the paper's 4 frames, bfloat16) with and
without activation checkpointing, probe (one cell, every block captured, pool 1) and generate
(one sampling step), with the fewest levers that fit each of an A100-40GB and an RTX 4090.
Prints a Markdown table (the README's). Every number comes from `anti_i2v.plan.plan`, which runs
the real diffusers modules under FakeTensorMode.
Usage: python bench/plan_real.py [--models cogvideox-5b-i2v,svd-xt]
"""

from __future__ import annotations

import argparse
import time

from anti_i2v.commands.probe import lever_text
from anti_i2v.models.backbones import real_configs
from anti_i2v.plan import GIB, PlanRequest, plan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(real_configs()))
    args = ap.parse_args()
    print(
        "| model | task | frames | params (B) | weights GiB | peak GiB | peak GiB, checkpointing "
        "| TFLOPs / step | s / step A100 (35%) | A100-40GB | RTX 4090 24GB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for task in ("protect", "probe", "generate"):
            started = time.time()
            req = PlanRequest(model=name, task=task)
            p = plan(req)
            ckpt = (
                f"{plan(PlanRequest(model=name, task=task, checkpointing=True)).peak_bytes / GIB:.1f}"
                if task == "protect"
                else "-"
            )
            print(
                f"| {name} {p.resolution[0]}x{p.resolution[1]} | {task} | {p.frames} "
                f"| {p.params / 1e9:.2f} | {p.weights_bytes / GIB:.1f} | {p.peak_bytes / GIB:.1f} "
                f"| {ckpt} | {p.flops_per_step / 1e12:.1f} "
                f"| {p.gpus['a100-40gb']['seconds_per_step']:.2f} "
                f"| {lever_text(p.gpus['a100-40gb']['levers'])} "
                f"| {lever_text(p.gpus['rtx4090-24gb']['levers'])} |",
                flush=True,
            )
            print(f"<!-- {name} {task}: planned in {time.time() - started:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
