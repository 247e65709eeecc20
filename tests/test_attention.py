"""Attention capture (`anti_i2v.models.attention`): the model's outputs stay its own, bit for bit,
and the recorded probabilities are the ones its scaled-dot-product calls used."""

from __future__ import annotations

import pytest
import torch
from conftest import EVERY_FAMILY

from anti_i2v.models import attention
from anti_i2v.models.attention import _Recorder, _recording_sdpa, capture_attention


@pytest.mark.parametrize("family", EVERY_FAMILY)
def test_capture_leaves_the_outputs_bit_for_bit_and_rows_sum_to_one(backbones, family):
    backbone = backbones(family)
    cond = backbone.condition(torch.rand(1, 3, 32, 32))
    noise = torch.randn(cond.clean.shape, generator=torch.Generator().manual_seed(0))
    kwargs = backbone.denoiser_kwargs(backbone.add_noise(cond.clean, noise, 500.0), cond, 500.0)
    blocks = backbone.active_blocks(500.0)
    processors = {n: getattr(m, "processor", None) for n, m in backbone.denoiser.named_modules()}
    with torch.no_grad():
        before = backbone.hidden(backbone.denoiser(**kwargs))
        with capture_attention(backbone.denoiser, blocks, queries=8, seed=3) as calls:
            during = backbone.hidden(backbone.denoiser(**kwargs))
        after = backbone.hidden(backbone.denoiser(**kwargs))
    assert torch.equal(before, during) and torch.equal(before, after)
    assert calls
    for call in calls:
        assert any(call.module.startswith(f"{b}.") for b in blocks)
        assert call.probs.shape[-2:] == (len(call.queries), call.n_keys)
        assert len(call.queries) == min(8, call.n_queries) and (call.probs >= 0).all()
        torch.testing.assert_close(call.probs.sum(-1), torch.ones(call.probs.shape[:-1]))
    # every processor, and scaled_dot_product_attention itself, is the model's own again
    assert {
        n: getattr(m, "processor", None) for n, m in backbone.denoiser.named_modules()
    } == processors
    assert torch.nn.functional.scaled_dot_product_attention is attention._SDPA


@pytest.mark.parametrize(
    ("mask", "causal", "kv_heads"),
    [(None, False, 4), ("bool", False, 4), ("float", False, 2), (None, True, 4)],
)
def test_recorded_probabilities_reproduce_the_attention_output(mask, causal, kv_heads):
    """probs @ V of the kept rows is the call's own output: masks, causality, the scale and
    grouped-query heads are read as scaled_dot_product_attention reads them."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, h, 12, 8, generator=g) for h in (4, kv_heads, kv_heads))
    attn_mask = None
    if mask == "bool":
        attn_mask = torch.rand(2, 1, 12, 12, generator=g) > 0.3
        attn_mask[..., 0] = True  # every row keeps a key
    elif mask == "float":
        attn_mask = torch.randn(2, 1, 1, 12, generator=g)
    calls: list = []
    token = attention._CURRENT.set(_Recorder("m", 5, 1, "all", calls))
    try:
        out = _recording_sdpa(q, k, v, attn_mask=attn_mask, is_causal=causal, scale=0.3,
                              enable_gqa=kv_heads != 4)  # fmt: skip
    finally:
        attention._CURRENT.reset(token)
    [call] = calls
    values = v.repeat_interleave(4 // kv_heads, dim=1)
    torch.testing.assert_close(call.probs @ values, out[:, :, call.queries], atol=1e-5, rtol=1e-5)
    # the same seed keeps the same rows
    again: list = []
    token = attention._CURRENT.set(_Recorder("m", 5, 1, "mean", again))
    try:
        _recording_sdpa(q, k, v, attn_mask=attn_mask, is_causal=causal, scale=0.3,
                        enable_gqa=kv_heads != 4)  # fmt: skip
    finally:
        attention._CURRENT.reset(token)
    assert torch.equal(again[0].queries, call.queries)
    torch.testing.assert_close(again[0].probs, call.probs.mean(1))


def test_attention_share_reads_each_layout():
    from anti_i2v.models.attention import AttentionCall, attention_share

    grid = (3, 2, 2)  # 12 video tokens, 4 a frame
    # video self-attention: query 5 (frame 1) puts 0.25 on each of frame 0's tokens' first two
    probs = torch.zeros(1, 2, 12)
    probs[0, 0, 0] = 1.0  # query 1 is on frame 0: not a later frame, not read
    probs[0, 1, :2] = 0.25
    probs[0, 1, 8:] = 0.125
    call = AttentionCall("b.attn1", torch.tensor([1, 5]), probs, 12, 12)
    assert attention_share(call, grid) == {"frame0": pytest.approx(0.5)}
    # joint attention, 3 text tokens first, then the same video: offsets move by 3
    joint = torch.zeros(1, 1, 15)
    joint[0, 0, :3] = 0.2
    joint[0, 0, 3:7] = 0.1  # frame 0 of the video
    joint[0, 0, 7:] = 0.3 / 8
    call = AttentionCall("b.attn", torch.tensor([3 + 9]), joint, 15, 15)
    share = attention_share(call, grid, text_tokens=3)
    assert share == {"frame0": pytest.approx(0.4), "text": pytest.approx(0.6)}
    # temporal attention over 3 frames; a cross-attention call is not read
    temporal = torch.tensor([[[0.5, 0.25, 0.25]]])
    assert attention_share(AttentionCall("t", torch.tensor([2]), temporal, 3, 3), grid) == {
        "frame0": pytest.approx(0.5)
    }
    assert (
        attention_share(AttentionCall("x", torch.tensor([2]), torch.ones(1, 1, 7) / 7, 12, 7), grid)
        is None
    )


# Joint attention (video and context in one sequence): text first, text after the video, and
# HunyuanVideo 1.5's context of SigLIP, ByT5 and Qwen tokens after the video
@pytest.mark.parametrize(
    "family", ["cogvideox", pytest.param("hunyuan", marks=pytest.mark.slow), "hunyuan15"]
)
def test_attention_share_on_a_real_call_is_a_fraction(backbones, family):
    from anti_i2v.models.attention import attention_share

    backbone = backbones(family)
    cond = backbone.condition(torch.rand(1, 3, 32, 32))
    kwargs = backbone.denoiser_kwargs(cond.clean, cond, 500.0)
    with torch.no_grad(), capture_attention(backbone.denoiser, backbone.block_names(), 16) as calls:
        backbone.denoiser(**kwargs)
    grid, text = backbone.token_grid(cond), backbone.joint_text_tokens()
    shares = [attention_share(c, grid, text, backbone.joint_text_first) for c in calls]
    joint = [s for s in shares if s is not None and "text" in s]
    assert joint and len(joint) >= len(backbone.block_names())  # every block's joint call read
    for s in joint:
        assert 0 < s["frame0"] < 1 and 0 < s["text"] < 1 and s["frame0"] + s["text"] <= 1 + 1e-6


def test_the_attention_command_writes_shares_per_block_and_timestep(tmp_path, portraits):
    import json

    from typer.testing import CliRunner

    from anti_i2v.cli import app

    runs = []
    for name in ("a", "b"):
        res = CliRunner().invoke(
            app, ["attention", "tiny:wan22-a14b", str(portraits), "--timesteps", "500,950",
                  "--queries", "16", "--out", str(tmp_path / name)],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        runs.append((tmp_path / name / "attention.json").read_bytes())
    assert runs[0] == runs[1]  # seeded noise and query subsets: the same bytes
    data = json.loads(runs[0])
    assert data["schema"] == "anti-i2v.attention/1" and data["timesteps"] == [500, 950]
    assert data["photos"] == ["p10", "p20", "p30"]
    # each expert's blocks have a share at their own timestep only (null at the other's)
    assert data["frame0"]["low.blocks.0"][1] is None and data["frame0"]["high.blocks.0"][0] is None
    shares = [v for row in data["frame0"].values() for v in row if v is not None]
    assert len(shares) == 4 and all(0 < v < 1 for v in shares)
    assert (tmp_path / "a" / "attention.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--queries", "0"], "--queries 0"), (["--timesteps", "1000"], "--timesteps 1000")],
)
def test_the_attention_command_refuses_bad_input_in_one_line(tmp_path, portraits, args, message):
    from typer.testing import CliRunner

    from anti_i2v.cli import app

    res = CliRunner().invoke(
        app, ["attention", "tiny:cogvideox", str(portraits), "--out", str(tmp_path / "o"), *args]
    )
    assert res.exit_code == 2 and message in res.output and not (tmp_path / "o").exists()


def test_attention_maps_are_the_video_queries_rows_over_the_video_keys():
    from anti_i2v.models.attention import AttentionCall, attention_maps

    grid = (3, 2, 2)  # 12 video tokens after 3 text tokens (joint attention, text first)
    probs = torch.rand(1, 6, 15).softmax(-1)
    queries = torch.tensor([0, 2, 3, 5, 9, 14])  # text, text, then video tokens 0, 2, 6, 11
    call = AttentionCall("b.attn", queries, probs, 15, 15)
    tokens, maps = attention_maps(call, grid, text_tokens=3)
    assert tokens.tolist() == [0, 2, 6, 11]
    torch.testing.assert_close(maps, probs[0, 2:, 3:])
    # a limit spreads the kept queries over the video (first and last kept)
    tokens, maps = attention_maps(call, grid, text_tokens=3, limit=2)
    assert tokens.tolist() == [0, 11] and maps.shape == (2, 12)
    # temporal attention has no map over the video
    temporal = AttentionCall("t", torch.tensor([1]), torch.ones(1, 1, 3) / 3, 3, 3)
    assert attention_maps(temporal, grid) is None
