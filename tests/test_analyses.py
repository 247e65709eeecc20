"""Analyses: each score on features with a known answer, the choice rule, profiles, streaming, CLI."""

from __future__ import annotations

import json
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from anti_i2v.analyses.analyse import AnalysisConfig, analyse_store
from anti_i2v.analyses.choose import ChoiceRule, choose
from anti_i2v.analyses.profile import Profile, load_profile, save_profile
from anti_i2v.analyses.run import analyse
from anti_i2v.analyses.scores import (
    LinearCKA,
    clamp_massive,
    labels_to_grid,
    linear_cka,
    mask_readout_score,
    spatial_coherence,
    temporal_stability,
)
from anti_i2v.cli import app
from anti_i2v.core.common import ToolkitError
from anti_i2v.probe.store import (
    SCHEMA,
    StoreAttrs,
    create_or_resume,
    ensure_layer,
    finish,
    mark_done,
    open_store,
)


def _blob_masks(n: int, h: int = 8, w: int = 8, seed: int = 0) -> np.ndarray:
    """n label maps (h, w) with 3 parts: background, a disc, and a bar, placed at random."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((n, h, w), np.int64)
    for i in range(n):
        cy, cx = rng.integers(2, h - 2), rng.integers(2, w - 2)
        out[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= 4] = 1
        out[i][yy == rng.integers(0, h)] = 2
    return out


def _features(
    masks: np.ndarray, semantic: float, channels: int = 16, frames: int = 2, seed: int = 0
) -> np.ndarray:
    """(n, frames, h, w, C): semantic * (part embedding) + (1 - semantic) * noise."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(masks.max() + 1, channels))
    noise = rng.normal(size=(len(masks), frames, *masks.shape[1:], channels))
    part = emb[masks][:, None].repeat(frames, 1)
    return (semantic * part + (1 - semantic) * noise).astype(np.float32)


def _store(path, layers: dict[str, np.ndarray], timesteps=(500,)):
    n = next(iter(layers.values())).shape[0]
    attrs = {
        "schema": SCHEMA,
        "model": "synthetic",
        "family": "cogvideox",
        "config_sha256": "abc" * 10,
        "layers": list(layers),
        "timesteps": list(timesteps),
        "seeds": [0],
        "samples": [
            {"name": f"s{i}", "sha256": "0", "size": [8, 8], "seed": 0, "image": i}
            for i in range(n)
        ],
        "frames": None,
        "pool": 1,
        "dtype": "float32",
        "toolkit_version": "test",
        "config": {"images": []},
    }
    store = create_or_resume(path, StoreAttrs.from_json(attrs))
    for ti in range(len(timesteps)):
        for s in range(n):
            for name, feats in layers.items():
                ensure_layer(store, name, feats.shape[1:], "float32")[ti, s] = feats[s] * (1 + ti)
            mark_done(store, ti, s)
    finish(store)
    return open_store(path)


# --- scores with known answers --------------------------------------------------------------


def test_cka_of_a_layer_with_itself_is_one_and_invariances():
    x = torch.randn(300, 12, generator=torch.Generator().manual_seed(0))
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=torch.Generator().manual_seed(1)))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, 3 * x @ q + 5) == pytest.approx(1.0, abs=1e-9)  # rotation, scale, shift
    y = torch.randn(300, 12, generator=torch.Generator().manual_seed(2))
    assert linear_cka(x, y) < 0.15
    streaming = LinearCKA()
    for i in range(0, 300, 70):
        streaming.update(x[i : i + 70], y[i : i + 70])
    assert streaming.value() == pytest.approx(linear_cka(x, y), abs=1e-9)


def test_mask_one_hot_features_score_high_and_noise_low():
    masks = _blob_masks(8)

    def rows(feats):
        return feats[:, 0].reshape(8, -1, feats.shape[-1])

    lab = masks.reshape(8, -1)
    good, bad = rows(_features(masks, 1.0)), rows(_features(masks, 0.0))

    def split(a):  # even samples train, odd samples test
        flat = (lambda x: x.reshape(-1, a.shape[-1])) if a.ndim == 3 else (lambda x: x.reshape(-1))
        return flat(a[::2]), flat(a[1::2])

    (gt, gv), (bt, bv), (lt, lv) = split(good), split(bad), split(lab)
    assert mask_readout_score(gt, lt, gv, lv) > 0.95
    assert mask_readout_score(bt, lt, bv, lv) < 0.5  # chance is 1/3


def test_spatial_coherence_orders_structure_above_noise():
    masks = torch.from_numpy(_blob_masks(1)[0])
    smooth = torch.from_numpy(_features(_blob_masks(1), 1.0)[0])
    noise = torch.from_numpy(_features(_blob_masks(1), 0.0)[0])
    assert spatial_coherence(smooth) > 0.2
    assert abs(spatial_coherence(noise)) < 0.1
    assert len(masks.unique()) > 2  # the blobs the smooth features follow are really there


def test_temporal_stability_and_massive_clamp():
    x = torch.randn(3, 4, 4, 8)
    assert temporal_stability(x[:1].repeat(3, 1, 1, 1)) == pytest.approx(1.0, abs=1e-6)
    assert temporal_stability(x) < 0.5
    y = x.clone()
    y[..., 2] *= 1000
    z = clamp_massive(y, ratio=8.0)
    assert z[..., 2].pow(2).mean().sqrt() <= 8.01 * y.reshape(-1, 8).pow(2).mean(0).sqrt().median()
    torch.testing.assert_close(z[..., [0, 1, 3]], y[..., [0, 1, 3]])


def test_labels_to_grid_takes_the_majority():
    lab = torch.zeros(8, 8, dtype=torch.long)
    lab[:4, :4] = 2
    lab[0, 0] = 1
    assert labels_to_grid(lab, (2, 2), 3).tolist() == [[2, 0], [0, 0]]


# --- choice rule and profiles ---------------------------------------------------------------


def test_rule_picks_mid_depth_semantic_anchor_and_early_collapse():
    layers = [f"blocks.{i}" for i in range(10)]
    sem = [
        0.1,
        0.2,
        0.3,
        0.5,
        0.7,
        0.9,
        0.8,
        0.6,
        0.5,
        0.95,
    ]  # the last is high but outside the band
    scores = {
        "mask_probe": {layer: [s, s * 0.5] for layer, s in zip(layers, sem, strict=True)},
        "cka_first": {layer: [1 - i / 10] * 2 for i, layer in enumerate(layers)},
    }
    picks = choose(
        scores, layers, [300, 700], ChoiceRule(n_anchors=2, n_timesteps=1, min_timestep=0)
    )
    assert picks["collapse_layers"] == ["blocks.0"]
    assert picks["anchor_layers"] == ["blocks.5", "blocks.6"]
    assert picks["timesteps"] == [300]  # the more semantic timestep
    # By default only the noisier half is eligible (the attack's leverage is there) ...
    assert choose(scores, layers, [300, 700], ChoiceRule(n_anchors=2, n_timesteps=1))[
        "timesteps"
    ] == [700]
    # ... unless no probed timestep is in it.
    assert choose(scores, layers, [100, 300], ChoiceRule(n_anchors=2, n_timesteps=1))[
        "timesteps"
    ] == [100]


def _profile_json(**fields) -> dict:
    """A minimal valid profile of two tiny:cogvideox blocks, with `fields` replaced."""
    return {
        "schema": "anti-i2v.profile/1",
        "model": "tiny:cogvideox",
        "family": "cogvideox",
        "config_sha256": "a" * 64,
        "layers": ["transformer_blocks.0", "transformer_blocks.1"],
        "scores": {},
        "collapse_layers": ["transformer_blocks.0"],
        "anchor_layers": ["transformer_blocks.1"],
        "timesteps": [500],
        "rule": {},
        **fields,
    }


def test_profile_round_trip_and_mismatch_refusal(tmp_path):
    profile = Profile.from_json(_profile_json())
    path = save_profile(profile, tmp_path / "p.json")
    assert load_profile(path) == profile
    profile.check_model("tiny:cogvideox", profile.layers, "a" * 64)  # accepted
    with pytest.raises(
        ToolkitError,
        match=r"not tiny:wan: config hash .*layers only in the profile: \['transformer",
    ):
        profile.check_model("tiny:wan", ["blocks.0", "blocks.1"], "b" * 64)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ToolkitError, match="not valid JSON"):
        load_profile(tmp_path / "bad.json")


@pytest.mark.slow
def test_synthetic_store_recovers_the_semantic_layer(tmp_path):
    masks = _blob_masks(6)
    strengths = [0.0, 0.2, 0.9, 0.5, 0.3]
    layers = {f"blocks.{i}": _features(masks, s, seed=i) for i, s in enumerate(strengths)}
    layers["blocks.0"] = _features(masks, 0.0, seed=0)
    mdir = tmp_path / "masks"
    mdir.mkdir()
    for i, m in enumerate(masks):
        Image.fromarray(m.astype(np.uint8)).save(mdir / f"s{i}.png")
    store = _store(tmp_path / "syn.zarr", layers, timesteps=(200, 800))
    profile = analyse(store.path, tmp_path / "p.json", tmp_path / "figures", mdir)
    assert profile.anchor_layers[0] == "blocks.2"
    assert profile.collapse_layers == ["blocks.0"]
    mp = profile.scores["mask_probe"]
    assert mp["blocks.2"][0] > 0.9 > 0.6 > mp["blocks.0"][0]
    assert profile.scores["cka_first"]["blocks.0"] == pytest.approx([1.0, 1.0], abs=1e-6)
    for f in ("pca_grid.png", "scores.png", "mask_overlays.png"):
        assert (tmp_path / "figures" / f).stat().st_size > 1000
    assert "blocks.2" in (tmp_path / "index.html").read_text()
    again = analyse(store.path, tmp_path / "p2.json", None, mdir)
    assert (
        json.loads((tmp_path / "p.json").read_text())["scores"] == again.scores
    )  # same input, same profile


@pytest.mark.slow
def test_analysis_streams_with_bounded_memory(tmp_path):
    """A store many times larger than the analysis's peak allocation."""
    masks = _blob_masks(16, 16, 16)
    layers = {f"blocks.{i}": _features(masks, 0.5, channels=48, frames=4, seed=i) for i in range(3)}
    store = _store(tmp_path / "big.zarr", layers, timesteps=(100, 500, 900))
    store_bytes = sum(a.nbytes for a in layers.values()) * 3
    del layers
    tracemalloc.start()
    # Memory is set by the config (one cell, C x C sums, a token subset), not by the store's size.
    analyse_store(store, AnalysisConfig(pca_samples=1, pca_frames=1, max_tokens_per_sample=128))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert store_bytes > 25e6
    assert peak < store_bytes / 5, (peak, store_bytes)


def test_incomplete_store_is_refused(tmp_path):
    masks = _blob_masks(2)
    store = _store(tmp_path / "s.zarr", {"blocks.0": _features(masks, 0.5)})
    store = create_or_resume(tmp_path / "s.zarr", store.attrs)
    store.group["completed"][0, 1] = 0
    with pytest.raises(ToolkitError, match="incomplete"):
        analyse_store(store)


@pytest.mark.slow
def test_cli_adapt_end_to_end_on_tiny_model(tmp_path, portraits):
    res = CliRunner().invoke(
        app,
        [
            "adapt",
            "tiny:svd",
            str(portraits),
            "--out",
            str(tmp_path / "a"),
            "--timesteps",
            "300,700",
        ],
    )
    assert res.exit_code == 0, res.output
    profile = load_profile(tmp_path / "a" / "profile.json")
    assert profile.layers == [
        "down_blocks.0",
        "down_blocks.1",
        "mid_block",
        "up_blocks.0",
        "up_blocks.1",
    ]
    assert set(profile.anchor_layers) <= set(profile.layers) and profile.collapse_layers
    assert {"spatial_coherence", "cka_first", "cka_last", "temporal_stability"} <= set(
        profile.scores
    )
    assert (tmp_path / "a" / "index.html").exists() and (
        tmp_path / "a" / "figures" / "pca_grid.png"
    ).exists()
    res = CliRunner().invoke(
        app,
        [
            "analyse",
            str(tmp_path / "a" / "activations.zarr"),
            "--out",
            str(tmp_path / "p.json"),
            "--reference",
            str(tmp_path / "no-such-encoder"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "reference_cka skipped" in res.output


@pytest.mark.slow
def test_reference_encoder_from_a_local_folder(tmp_path, portraits):
    from transformers import Dinov2Config, Dinov2Model

    Dinov2Model(
        Dinov2Config(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            image_size=32,
            patch_size=8,
        )
    ).save_pretrained(tmp_path / "dino")
    res = CliRunner().invoke(
        app,
        [
            "adapt",
            "tiny:cogvideox",
            str(portraits),
            "--out",
            str(tmp_path / "a"),
            "--timesteps",
            "500",
            "--reference",
            str(tmp_path / "dino"),
        ],
    )
    assert res.exit_code == 0, res.output
    ref = load_profile(tmp_path / "a" / "profile.json").scores["reference_cka"]
    values = [v[0] for v in ref.values()]
    assert (
        all(np.isfinite(values)) and max(values) - min(values) > 1e-3
    )  # a real score: it varies by layer


def test_vae_blocks_are_chosen_among_themselves_and_change_no_denoiser_pick():
    """Rule step 6: VAE anchors are the most semantic VAE blocks; steps 1-5 ignore the VAE."""
    layers = [f"blocks.{i}" for i in range(6)]
    vae = ["vae.encoder.down_blocks.0", "vae.encoder.down_blocks.1", "vae.encoder.mid_block"]
    sem = dict(zip(layers + vae, [0.1, 0.3, 0.9, 0.7, 0.4, 0.2, 0.2, 0.8, 0.5], strict=True))
    scores = {
        "mask_probe": {layer: [s, s] for layer, s in sem.items()},
        "cka_first": {layer: [1.0 - i / 10] * 2 for i, layer in enumerate(layers + vae)},
    }
    rule = ChoiceRule(n_anchors=1, n_timesteps=1)
    alone = choose(
        {m: {k: v[k] for k in layers} for m, v in scores.items()}, layers, [300, 700], rule
    )
    both = choose(scores, layers + vae, [300, 700], rule)
    assert alone["vae_anchor_layers"] == []
    for key in ("collapse_layers", "anchor_layers", "timesteps"):
        assert both[key] == alone[key]
    assert both["vae_anchor_layers"] == ["vae.encoder.down_blocks.1"]
    assert both["semantic"]["vae.encoder.down_blocks.1"] == 1.0  # normalised among the VAE's
    assert (
        choose(scores, layers + vae, [300, 700], replace(rule, n_vae_anchors=0))[
            "vae_anchor_layers"
        ]
        == []
    )
    with pytest.raises(ToolkitError, match="--vae-anchors -1"):
        ChoiceRule(n_vae_anchors=-1)


def test_profile_vae_anchors_are_checked_against_its_and_the_models_vae(tmp_path):
    data = _profile_json(
        vae_layers=["vae.encoder.down_blocks.0", "vae.encoder.mid_block"],
        vae_anchor_layers=["vae.encoder.mid_block"],
    )
    profile = Profile.from_json(data)
    profile.check_model("tiny:cogvideox", profile.layers, "a" * 64, profile.vae_layers)
    with pytest.raises(ToolkitError, match=r"VAE anchors not in the model's VAE encoder"):
        profile.check_model(
            "tiny:cogvideox", profile.layers, "a" * 64, ["vae.encoder.down_blocks.0"]
        )
    with pytest.raises(ToolkitError, match="not among its VAE layers"):
        Profile.from_json({**data, "vae_anchor_layers": ["vae.encoder.down_blocks.7"]})
    # A profile from before VAE probing reads as one without VAE anchors
    old = {k: v for k, v in data.items() if not k.startswith("vae_")}
    assert Profile.from_json(old).vae_anchor_layers == []
    # ... and writes and hashes as it did, so the cloaks made with it still name it
    assert "vae_layers" not in Profile.from_json(old).to_json()


def test_the_rule_ranks_by_the_attention_share_and_keeps_given_collapse_blocks():
    from anti_i2v.analyses.choose import ATTENTION_MEASURE

    layers = [f"blocks.{i}" for i in range(10)]
    share = [0.2, 0.3, 0.9, 0.4, 0.5, 0.3, 0.2, 0.8, 0.6, 0.1]
    scores = {
        "mask_probe": {layer: [i / 10] * 2 for i, layer in enumerate(layers)},
        ATTENTION_MEASURE: {layer: [s, s] for layer, s in zip(layers, share, strict=True)},
        "cka_first": {layer: [1 - i / 10] * 2 for i, layer in enumerate(layers)},
    }
    rule = ChoiceRule(n_anchors=2, measures=(ATTENTION_MEASURE,))
    picks = choose(scores, layers, [300, 700], rule)
    assert picks["anchor_layers"] == ["blocks.7", "blocks.8"]  # the top shares inside the band
    # a given collapse block is never an anchor, and anchors are chosen among the others
    given = choose(scores, layers, [300, 700], rule, collapse=["blocks.7"])
    assert given["collapse_layers"] == ["blocks.7"] and given["anchor_layers"] == [
        "blocks.4",
        "blocks.8",
    ]
    with pytest.raises(ToolkitError, match="--measures attention_frame1"):
        ChoiceRule(measures=("attention_frame1",))


@pytest.mark.slow  # adapt and analyse from the CLI; the rule itself is tested just above
def test_analyse_joins_the_attention_share_and_ranks_by_it(tmp_path, portraits):
    from anti_i2v.analyses.choose import ATTENTION_MEASURE

    adapted = tmp_path / "a"
    res = CliRunner().invoke(
        app, ["adapt", "tiny:cogvideox", str(portraits), "--out", str(adapted), "--timesteps",
              "300,700", "--attention"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    shares = json.loads((adapted / "attention" / "attention.json").read_text())
    profile = load_profile(adapted / "profile.json")
    assert profile.scores[ATTENTION_MEASURE] == {
        layer: shares["frame0"][layer] for layer in profile.layers
    }
    assert profile.rule["measures"] == list(ChoiceRule().measures)  # a score, not the rule's
    store = str(adapted / "activations.zarr")
    out = tmp_path / "p.json"
    res = CliRunner().invoke(
        app, ["analyse", store, "--out", str(out), "--measures", ATTENTION_MEASURE,
              "--attention", str(adapted / "attention" / "attention.json")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    ranked = load_profile(out)
    best = max(profile.layers[1:], key=lambda layer: np.mean(shares["frame0"][layer]))
    assert ranked.rule["measures"] == [ATTENTION_MEASURE] and best in ranked.anchor_layers
    # asked to rank by the share without it, or with shares of other timesteps: one line
    res = CliRunner().invoke(
        app, ["analyse", store, "--out", str(out), "--measures", ATTENTION_MEASURE]
    )
    assert res.exit_code == 2 and "--attention attention.json" in res.output
    shares["timesteps"] = [100, 900]
    other = tmp_path / "other.json"
    other.write_text(json.dumps(shares))
    res = CliRunner().invoke(app, ["analyse", store, "--out", str(out), "--attention", str(other)])
    assert res.exit_code == 2 and "--timesteps 300,700" in res.output
