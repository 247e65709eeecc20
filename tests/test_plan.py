"""`anti-i2v plan`: FakeTensorMode planning agrees with real execution, and its CLI."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from anti_i2v.cli import app
from anti_i2v.models.backbones import real_configs
from anti_i2v.plan import PlanRequest, measure, plan, prepared_backbone, run_step

CASES = [
    ("tiny:cogvideox", "protect", False),
    ("tiny:cogvideox", "protect", True),
    ("tiny:cogvideox", "probe", False),
    ("mini-cogvideox", "protect", True),
    ("mini-cogvideox", "generate", False),
]


@pytest.mark.slow  # eleven steps measured in one fresh process (about 70 s)
def test_plan_agrees_with_the_peak_measured_in_a_fresh_process(tmp_path):
    """Tiny and mini models, and a random-weight midsize model: CogVideoX-5B-I2V's configs cut
    to 1024 wide (16 heads), 2 blocks, a 32-channel VAE, 240x352; protect with and without
    checkpointing, probe, generate, the lens and attention capture."""
    folder = tmp_path / "cogvideox-midsize"
    shutil.copytree(real_configs()["cogvideox-5b-i2v"], folder)
    for part, changes in (
        (
            "transformer",
            {"num_layers": 2, "num_attention_heads": 16, "sample_height": 30, "sample_width": 44},
        ),
        ("vae", {"block_out_channels": [32, 32, 32, 32], "norm_num_groups": 8}),
    ):
        config = json.loads((folder / part / "config.json").read_text())
        (folder / part / "config.json").write_text(json.dumps({**config, **changes}))
    reqs = [
        PlanRequest(model=model, task=task, dtype="float32", checkpointing=ckpt)
        for model, task, ckpt in CASES
    ] + [
        PlanRequest(model=str(folder), task=task, dtype="float32", checkpointing=ckpt, frames=5)
        for task, ckpt in (
            ("protect", False),
            ("protect", True),
            ("probe", False),
            ("generate", False),
            ("lens", False),
            ("attention", False),
        )
    ]
    # Seeded random weights for all (the midsize folder has configs only): costs do not
    # depend on weight values.
    for req, measured in zip(reqs, measure(reqs, weights="random", warmup=False), strict=True):
        _agrees(req, measured)


def _agrees(req: PlanRequest, measured: dict) -> None:
    planned = plan(req)
    assert 0.8 <= planned.peak_bytes / measured["peak"] <= 1.2, req
    assert planned.flops_per_step == pytest.approx(measured["flops"], rel=0.01), req
    assert planned.peak_bytes > planned.weights_bytes > 0
    if req.task == "probe":
        assert planned.store_bytes_per_sample == measured["store"] > 0


@pytest.mark.slow  # each plan traces the model under fake tensors (about 3 s)
def test_plan_counts_what_the_same_step_allocates_on_real_tensors():
    req = PlanRequest(model="tiny:cogvideox", dtype="float32")
    peak, flops, _ = run_step(prepared_backbone(req), req, fake=False)
    planned = plan(req)
    assert planned.peak_bytes == pytest.approx(peak, rel=0.05)
    assert planned.flops_per_step == pytest.approx(flops, rel=1e-6)


@pytest.mark.slow  # each plan traces the model under fake tensors (about 3 s)
def test_checkpointing_lowers_the_planned_peak_and_bfloat16_halves_the_weights():
    base = plan(PlanRequest(model="tiny:cogvideox", dtype="float32"))
    ckpt = plan(PlanRequest(model="tiny:cogvideox", dtype="float32", checkpointing=True))
    half = plan(PlanRequest(model="tiny:cogvideox", dtype="bfloat16"))
    assert ckpt.peak_bytes < base.peak_bytes
    assert ckpt.flops_per_step > base.flops_per_step  # the recomputed forward
    assert half.params == base.params  # weights count buffers too; integer buffers keep their size
    assert 0.49 < half.weights_bytes / base.weights_bytes < 0.55
    assert all(g["fits"] for g in base.gpus.values())


@pytest.mark.slow  # traces the model under fake tensors (about 2 s)
def test_plan_cli_prints_json():
    res = CliRunner().invoke(app, ["plan", "tiny:cogvideox", "--json", "--task", "probe"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{") :])
    assert out["request"]["task"] == "probe" and out["store_bytes_per_sample"] > 0
    assert set(out["gpus"]) >= {"h100-80gb", "a100-40gb", "rtx4090-24gb"}


def test_plan_cli_refuses_bad_values_in_one_line():
    for args, why in (
        (["--task", "train"], "--task train"),
        (["--gpu", "tpu"], "--gpu tpu"),
        (["--resolution", "480by720"], "expected HxW"),
        (["--dtype", "int8"], "--dtype int8"),
    ):
        res = CliRunner().invoke(app, ["plan", "tiny:cogvideox", *args])
        assert res.exit_code == 2 and why in res.output, res.output
