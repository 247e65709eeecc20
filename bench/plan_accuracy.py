"""Plan accuracy: `anti-i2v plan`'s predicted peak memory and FLOPs against a measured step.

For each (model, task, lever) the plan runs under FakeTensorMode (no memory, no weights needed)
and the same step then runs on real tensors in a fresh process (`anti_i2v.plan.measure`), side by
side. Prints predicted and measured peak live bytes and their ratio (the tests hold it within
±20%), FLOPs predicted and counted, and the measured seconds per step with the CPU throughput
that implies (what `plan` would need as its utilisation to predict this machine's time). Usage:
    python bench/plan_accuracy.py [--models tiny:cogvideox,tiny:svd,mini-cogvideox,mini-svd]
"""

from __future__ import annotations

import argparse

from anti_i2v.plan import PlanRequest, measure, plan

CASES = (("protect", False), ("protect", True), ("probe", False))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="tiny:cogvideox,tiny:svd,mini-cogvideox,mini-svd")
    args = ap.parse_args()
    print(
        f"{'model':16s} {'task':8s} {'ckpt':>4s} {'planned MiB':>11s} {'measured MiB':>12s} "
        f"{'ratio':>6s} {'GFLOP':>9s} {'flops ratio':>11s} {'s/step':>7s} {'GFLOP/s':>8s}"
    )
    for model in args.models.split(","):
        for task, ckpt in CASES:
            req = PlanRequest(model=model, task=task, dtype="float32", checkpointing=ckpt)
            planned, measured = plan(req), measure(req)
            print(
                f"{model:16s} {task:8s} {'yes' if ckpt else 'no':>4s} "
                f"{planned.peak_bytes / 2**20:11.1f} {measured['peak'] / 2**20:12.1f} "
                f"{planned.peak_bytes / measured['peak']:6.2f} {planned.flops_per_step / 1e9:9.2f} "
                f"{planned.flops_per_step / measured['flops']:11.3f} {measured['seconds']:7.3f} "
                f"{measured['flops'] / measured['seconds'] / 1e9:8.1f}"
            )


if __name__ == "__main__":
    main()
