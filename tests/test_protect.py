"""The protect job on tiny models: invariants of every method, outputs, resume, refusals, early exit."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EVERY_FAMILY
from PIL import Image
from typer.testing import CliRunner

from anti_i2v.cli import app
from anti_i2v.core.common import ToolkitError
from anti_i2v.models.backbones import weights_sha256
from anti_i2v.models.capture import execution_order, trace_blocks
from anti_i2v.models.dynamicrafter.pipeline import dynamic_scale
from anti_i2v.protect.methods import METHODS
from anti_i2v.protect.objective import ModelObjective, ObjectiveSpec, clip_frames_for
from anti_i2v.protect.run import ProtectConfig, run_protect


def _cfg(tmp_path, images, profile, **kw):
    return ProtectConfig(
        model=kw.pop("model", "tiny:cogvideox"),
        images=tuple(map(str, images)),
        profile=str(profile) if profile else None,
        out=str(tmp_path / "out"),
        steps=kw.pop("steps", 3),
        reference_steps=2,
        **kw,
    )


def _irc_spec(backbone, **kw) -> ObjectiveSpec:
    """IRC alone, first block collapsed onto by the last, at t=500."""
    layers = backbone.block_names()
    return ObjectiveSpec(
        weights={"irc": 1.0},
        collapse_layers=layers[:1],
        anchor_layers=layers[-1:],
        timesteps=[500],
        clip_frames=backbone.default_frames,
        **kw,
    )


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_keeps_budget_and_range(tmp_path, portraits, tiny_profile, method):
    photo = portraits / "p10.png"
    before = photo.read_bytes()
    [r] = run_protect(_cfg(tmp_path, [photo], tiny_profile, method=method, eps=8))
    assert r.status == "done", r.detail
    assert photo.read_bytes() == before  # the input is never modified
    s = r.sidecar.to_json()
    eps = 8 / 255
    assert all(v <= eps + 1e-6 for k, v in s["budget"].items() if k != "linf_rgb_effective")
    out = np.asarray(Image.open(tmp_path / "out" / "p10.png"))
    orig = np.asarray(Image.open(photo))
    assert out.shape == orig.shape and out.dtype == np.uint8
    if METHODS[method].space == "rgb":
        assert np.abs(out.astype(int) - orig.astype(int)).max() <= 8 + 1  # rounding
    assert np.abs(out.astype(int) - orig.astype(int)).max() > 0
    assert s["settings"]["method"] == method and len(s["losses"]) == (
        3 if METHODS[method].optimises else 0
    )


def test_objective_moves_the_right_way(tmp_path, portraits, tiny_profile):
    [r] = run_protect(
        _cfg(tmp_path, [portraits / "p20.png"], None, method="photoguard-encoder", steps=8)
    )
    pull = [h["latent_pull"] for h in r.sidecar.losses]
    assert pull[-1] < pull[0]
    [r] = run_protect(
        _cfg(
            tmp_path / "d",
            [portraits / "p20.png"],
            None,
            method="rgb-pgd",
            steps=8,
            timesteps=(500,),
        )
    )
    diffusion = [h["diffusion"] for h in r.sidecar.losses]
    assert diffusion[-1] > diffusion[0]


@pytest.mark.slow  # end to end (a whole protect run or a judge card)
def test_same_command_same_bytes(tmp_path, portraits, tiny_profile):
    a = run_protect(_cfg(tmp_path / "a", [portraits / "p10.png"], tiny_profile, seed=1))
    b = run_protect(_cfg(tmp_path / "b", [portraits / "p10.png"], tiny_profile, seed=1))
    assert a[0].status == b[0].status == "done"
    assert (tmp_path / "a/out/p10.png").read_bytes() == (tmp_path / "b/out/p10.png").read_bytes()


def test_metadata_stripped_and_size_orientation_kept(tmp_path, portraits, tiny_profile):
    img = Image.open(portraits / "p10.png").resize((90, 50))
    exif = img.getexif()
    exif[0x0112] = 6  # displayed rotated: upright size is 50 wide x 90 high
    exif[0x8825] = {1: "N", 2: (1.0, 2.0, 3.0)}  # GPS
    img.save(tmp_path / "gps.jpg", exif=exif)
    [r] = run_protect(_cfg(tmp_path, [tmp_path / "gps.jpg"], tiny_profile))
    assert r.status == "done"
    out = Image.open(tmp_path / "out" / "gps.png")
    assert out.size == (50, 90)
    assert not out.getexif() and "exif" not in out.info and not out.text


@pytest.mark.slow  # end to end (a whole protect run or a judge card)
def test_large_photo_is_optimised_small_and_returned_full_size(tmp_path, portraits, tiny_profile):
    Image.open(portraits / "p10.png").resize((300, 200)).save(tmp_path / "big.png")
    cfg = _cfg(tmp_path, [tmp_path / "big.png"], tiny_profile, work_max_side=64)
    [r] = run_protect(cfg)
    assert Image.open(tmp_path / "out" / "big.png").size == (300, 200)
    assert r.sidecar.psnr > 20


@pytest.mark.slow
def test_rerun_skips_done_photos(tmp_path, portraits, tiny_profile):
    cfg = _cfg(tmp_path, [portraits], tiny_profile)
    # Killed on p20 after its cloak, before its sidecar: p10 is done, p20's cloak is there
    import anti_i2v.protect.run as protect_run

    real = protect_run.write_text_atomic

    def killed(path, text):
        if Path(path).name == "p20.json":
            raise KeyboardInterrupt
        return real(path, text)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(protect_run, "write_text_atomic", killed)
        with pytest.raises(KeyboardInterrupt):
            run_protect(cfg)
    assert (tmp_path / "out" / "p20.png").exists() and not (tmp_path / "out" / "p20.json").exists()
    second = run_protect(cfg)
    assert [r.status for r in second] == ["skipped", "done", "done"]
    assert [r.status for r in run_protect(cfg)] == ["skipped"] * 3
    # A profile with other picks is other work: nothing is skipped.
    profile = json.loads(Path(tiny_profile).read_text())
    profile["timesteps"] = [450]
    (tmp_path / "other.json").write_text(json.dumps(profile))
    third = run_protect(replace(cfg, profile=str(tmp_path / "other.json")))
    assert [r.status for r in third] == ["done"] * 3
    # So is another budget or space with the same method, steps and seed.
    assert [
        r.status for r in run_protect(replace(cfg, profile=str(tmp_path / "other.json"), eps=8.0))
    ] == ["done"] * 3


@pytest.mark.slow
def test_a_retrained_model_in_the_same_folder_is_other_work(
    tmp_path, portraits, tiny_profile, retrainable_model
):
    """Same name, same config, new weights: the cloak and its reference video are made again."""
    folder, retrain = retrainable_model
    cfg = _cfg(tmp_path, [portraits / "p10.png"], tiny_profile, model=str(folder))
    [first] = run_protect(cfg)
    assert first.status == "done" and run_protect(cfg)[0].status == "skipped"
    retrain()
    [second] = run_protect(cfg)
    assert second.status == "done", second.detail
    weights = [r.sidecar.settings["weights_sha256"] for r in (first, second)]
    assert weights[0] != weights[1] and weights[1] == weights_sha256(str(folder))
    # one reference video per model, never the old model's reused
    assert len(list((tmp_path / "out" / ".reference").glob("*.safetensors"))) == 2


def test_profile_for_another_model_is_refused_before_any_work(tmp_path, portraits, tiny_profile):
    res = CliRunner().invoke(
        app,
        [
            "protect",
            "tiny:wan",
            str(portraits),
            "--profile",
            str(tiny_profile),
            "--out",
            str(tmp_path / "o"),
            "--steps",
            "2",
        ],
    )
    assert res.exit_code == 2
    assert "the profile was made for tiny:cogvideox (cogvideox), not tiny:wan" in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # end to end (a whole protect run or a judge card)
def test_diverging_photo_is_reported_and_others_continue(
    tmp_path, portraits, tiny_profile, monkeypatch
):
    real = ModelObjective.__call__

    def nan_for_p20(self, adv):
        value, terms = real(self, adv)
        return (
            (value * float("nan"), terms)
            if abs(float(self.clean.mean()) - p20_mean) < 1e-6
            else (value, terms)
        )

    p20_mean = float(
        torch.from_numpy(np.asarray(Image.open(portraits / "p20.png"), np.float32) / 255).mean()
    )
    monkeypatch.setattr(ModelObjective, "__call__", nan_for_p20)
    results = run_protect(_cfg(tmp_path, [portraits], tiny_profile))
    status = {r.name: r.status for r in results}
    assert status == {"p10": "done", "p20": "failed", "p30": "done"}
    assert "objective became nan" in next(r.detail for r in results if r.name == "p20")
    assert not (tmp_path / "out" / "p20.png").exists()


@pytest.mark.parametrize("family", ["cogvideox", "svd"])
def test_early_exit_equals_full_pass_features(backbones, family):
    backbone = backbones(family)
    cond = backbone.condition(torch.rand(1, 3, *backbone.resolution))
    kwargs = backbone.denoiser_kwargs(
        backbone.add_noise(cond.clean, torch.randn_like(cond.clean), 400), cond, 400
    )
    order = execution_order(backbone, kwargs)
    layers = order[:2]
    with torch.no_grad():
        early = trace_blocks(backbone, kwargs, layers, stop_after_last=True)
        full = trace_blocks(backbone, kwargs, layers, with_output=True)
    for name in layers:
        torch.testing.assert_close(early[name], full[name])
    assert "__output__" in full


def test_clip_frames_cover_the_first_frames(backbones):
    assert clip_frames_for(backbones("cogvideox"), 4) == 5
    assert clip_frames_for(backbones("cogvideox"), 1) == 1
    assert clip_frames_for(backbones("svd"), 2) == 2


@pytest.mark.parametrize("family", EVERY_FAMILY)
def test_gradients_reach_the_photo_on_every_family(backbones, family):
    """IRC and diffusion terms back-propagate through denoiser and conditioning to the pixels."""
    backbone = backbones(family)
    layers = backbone.block_names()
    spec = ObjectiveSpec(
        weights={"irc": 1.0, "diffusion": 1.0},
        collapse_layers=layers[:1],
        anchor_layers=layers[-1:],
        timesteps=[500],
        clip_frames=backbone.default_frames,
    )
    x = torch.rand(1, 3, 24, 20)
    reference = backbone.condition(backbone.resize(x), backbone.default_frames).clean.detach()
    objective = ModelObjective(backbone, spec, x, reference, None)
    adv = x.clone().requires_grad_(True)
    value, terms = objective(adv)
    value.backward()
    assert set(terms) == {"irc", "diffusion"} and adv.grad.abs().sum() > 0


@pytest.mark.parametrize("family", EVERY_FAMILY)
def test_predict_clean_inverts_each_family_parameterisation(backbones, family):
    """Feeding the exact training target (written out here, per family) recovers the clean latent."""
    clean, noise, t = torch.randn(1, 4, 3, 2, 2), torch.randn(1, 4, 3, 2, 2), 600.0
    backbone = backbones(family)
    noisy = backbone.add_noise(clean, noise, t)
    if family == "cogvideox":
        a = backbone.pipe.scheduler.alphas_cumprod[600]
        target = a.sqrt() * noise - (1 - a).sqrt() * clean
    elif family == "svd":
        sigma = backbone.sigma(t)  # v-prediction in EDM form: c_out-scaled
        target = (noisy / (sigma**2 + 1) - clean) * ((sigma**2 + 1) ** 0.5 / sigma)
    elif family == "opensora":
        target = clean - noise  # Open-Sora's velocity points the other way
    elif family == "dynamicrafter":  # v of the dynamically rescaled x0
        a, s = backbone.alpha_bar(t), dynamic_scale(t, backbone.pipe.config.base_scale)
        target = a**0.5 * noise - (1 - a) ** 0.5 * s * clean
    else:
        target = noise - clean
    torch.testing.assert_close(
        backbone.predict_clean(noisy, target.float(), t), clean, atol=1e-4, rtol=1e-4
    )
    # the adapter's own target (the contract's `schedule` check round-trips it) is this one
    torch.testing.assert_close(
        backbone.target(clean, noise, t), target.float(), atol=1e-4, rtol=1e-4
    )


@pytest.mark.slow  # end to end (a whole protect run or a judge card)
def test_cli_protect_reports_each_photo(tmp_path, portraits, tiny_profile):
    res = CliRunner().invoke(
        app,
        [
            "protect",
            "tiny:cogvideox",
            str(portraits / "p30.png"),
            "--profile",
            str(tiny_profile),
            "--out",
            str(tmp_path / "o"),
            "--steps",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "p30: PSNR" in res.output
    side = json.loads((tmp_path / "o" / "p30.json").read_text())
    assert side["profile_sha256"] and side["settings"]["space"] == "dual"
    assert (tmp_path / "o" / "p30.loss.png").exists()


def test_method_needing_a_profile_says_so(tmp_path, portraits):
    res = CliRunner().invoke(
        app, ["protect", "tiny:cogvideox", str(portraits), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2 and "needs a layer profile" in res.output
    assert not (tmp_path / "o").exists()  # refused before anything was written


@pytest.mark.slow
def test_mini_cloak_lowers_the_objective(tmp_path, portraits):
    """On the trained mini model with its shipped profile, IRC falls and the diffusion loss rises."""
    from anti_i2v.models.registry import ARTIFACTS

    profile = ARTIFACTS / "profiles" / "mini-cogvideox.json"
    [r] = run_protect(
        ProtectConfig(
            model="mini-cogvideox",
            images=(str(portraits / "p10.png"),),
            profile=str(profile),
            out=str(tmp_path / "o"),
            steps=12,
            reference_steps=5,
            losses=("irc", "diffusion"),
            timesteps=(500,),
        )
    )
    assert r.status == "done", r.detail
    irc = [h["irc"] for h in r.sidecar.losses]
    diffusion = [h["diffusion"] for h in r.sidecar.losses]
    assert np.mean(irc[-3:]) < irc[0]
    assert np.mean(diffusion[-3:]) > diffusion[0]


def test_eot_shows_the_model_each_distortion_in_turn_and_passes_the_gradient_straight_through(
    backbones,
):
    from anti_i2v.protect.distortions import distort

    backbone = backbones("cogvideox")
    spec = _irc_spec(backbone, eot=("jpeg50", "none"))
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    objective = ModelObjective(backbone, spec, x, None, None).prepare()
    adv = x.clone().requires_grad_(True)
    objective.step = 1  # as __call__ counts it: the first step sees jpeg50
    seen = objective.seen(adv)
    torch.testing.assert_close(seen.detach()[0], distort(x[0], "jpeg50", 0))
    (grad,) = torch.autograd.grad((seen * 3).sum(), adv)
    torch.testing.assert_close(grad, torch.full_like(adv, 3.0))  # identity backward (BPDA)
    objective.step = 2  # the second sees the cloak as it is
    assert torch.equal(objective.seen(adv).detach(), x)
    with pytest.raises(ToolkitError, match="--eot jpeg500"):
        ProtectConfig(model="m", images=("a",), profile=None, out="o", eot=("jpeg500",))


def test_checkpointing_gives_the_same_gradient_with_a_lower_peak():
    """Measured with the dispatcher's live-byte count on real tensors (probe.memory)."""
    from anti_i2v.models.backbones import load_backbone
    from anti_i2v.models.memory import LiveBytes, module_tensors

    grads, peaks = {}, {}
    for ckpt in (False, True):
        backbone = load_backbone("tiny:cogvideox")
        if ckpt:
            assert backbone.enable_checkpointing() == ["denoiser", "vae"]
        layers = backbone.block_names()
        spec = ObjectiveSpec(
            weights={"irc": 1.0, "ira": 1.0, "diffusion": 1.0},
            collapse_layers=layers[:1],
            anchor_layers=layers[1:],
            timesteps=[500],
            clip_frames=backbone.default_frames,
        )
        x = torch.rand(1, 3, *backbone.resolution, generator=torch.Generator().manual_seed(0))
        objective = ModelObjective(backbone, spec, x, None, 1 - x).prepare()
        adv = x.clone().requires_grad_(True)
        with LiveBytes(module_tensors(backbone.denoiser, backbone.pipe.vae)) as live:
            value, _ = objective(adv)
            (grads[ckpt],) = torch.autograd.grad(value, adv)
        peaks[ckpt] = live.peak
    rel = (grads[True] - grads[False]).norm() / grads[False].norm()
    assert rel <= 1e-5
    assert peaks[True] < peaks[False]


def test_bfloat16_cloak_stays_close_to_the_float32_one(tmp_path, portraits):
    cloaks = {}
    for dtype in ("float32", "bfloat16"):
        [r] = run_protect(
            _cfg(
                tmp_path / dtype,
                [portraits / "p10.png"],
                None,
                method="rgb-pgd",
                steps=1,
                dtype=dtype,
            )
        )
        assert r.status == "done" and r.sidecar.settings["dtype"] == dtype
        cloaks[dtype] = np.asarray(Image.open(tmp_path / dtype / "out" / "p10.png"), np.int16)
    diff = np.abs(cloaks["float32"] - cloaks["bfloat16"])
    # One sign step moves each pixel by 1/255: only a flipped sign (a near-zero gradient) differs.
    assert diff.max() <= 2 and (diff > 0).mean() < 0.1


@pytest.mark.slow  # two protect runs of four photos (about 30 s)
@pytest.mark.parametrize("method", ["anti-i2v", "random-noise"])
def test_a_batch_of_photos_gets_the_cloaks_one_at_a_time_runs_give(
    tmp_path, portraits, tiny_profile, method
):
    photos = sorted(portraits.glob("*.png"))
    big = tmp_path / "big.png"  # another working size: it is cloaked in its own group
    Image.open(photos[0]).resize((96, 80)).save(big)
    cloaks = {}
    for batch in (1, 4):
        results = run_protect(
            _cfg(
                tmp_path / f"b{batch}",
                [*photos, big],
                tiny_profile,
                method=method,
                batch_size=batch,
            )
        )
        assert [r.status for r in results] == ["done"] * 4
        sizes = {r.name: r.sidecar.batch_size for r in results}
        assert sizes == (
            {r.name: 1 for r in results}
            if batch == 1
            else {**{p.stem: 3 for p in photos}, "big": 1}
        )
        for r in results:
            png = tmp_path / f"b{batch}" / "out" / f"{r.name}.png"
            cloaks.setdefault(r.name, []).append(np.asarray(Image.open(png), np.int16))
        if batch > 1:  # the batch's loss history is the mean of its photos' (one number a step)
            assert len(results[0].sidecar.losses) == (3 if method == "anti-i2v" else 0)
    for name, (alone, batched) in cloaks.items():
        diff = np.abs(alone - batched)
        # batched kernels round differently: only a near-zero gradient's sign may flip
        assert diff.max() <= 2 and (diff > 0).mean() < 0.02, name


def test_ensemble_objective_is_the_mean_of_its_models(backbones):
    from anti_i2v.protect.objective import EnsembleObjective

    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    parts = []
    for family in ("cogvideox", "svd"):
        backbone = backbones(family)
        objective = ModelObjective(backbone, _irc_spec(backbone), x, None, None)
        parts.append((backbone.name, objective.prepare()))
    adv = (x + 0.01).requires_grad_(True)
    value, terms = EnsembleObjective(parts).prepare()(adv)
    alone = [objective(adv)[0] for _, objective in parts]
    torch.testing.assert_close(value, (alone[0] + alone[1]) / 2)
    # The first model's terms keep their names, the others' are prefixed with the model
    assert set(terms) == {"irc", f"{parts[1][0]}/irc"}
    (grad,) = torch.autograd.grad(value, adv)
    grads = [torch.autograd.grad(a, adv, retain_graph=True)[0] for a in alone]
    torch.testing.assert_close(grad, (grads[0] + grads[1]) / 2)


@pytest.mark.slow  # two cloaks of two models
def test_ensemble_cloak_records_its_models_and_differs_from_one_model(tmp_path, portraits):
    photo = portraits / "p20.png"
    one = _cfg(tmp_path, [photo], None, method="rgb-pgd", steps=4)
    both = replace(one, out=str(tmp_path / "both"), ensemble=("tiny:svd",))
    [r1], [r2] = run_protect(one), run_protect(both)
    assert r1.status == r2.status == "done", (r1.detail, r2.detail)
    assert "ensemble" not in r1.sidecar.settings  # single-model sidecars are as before
    assert r2.sidecar.settings["ensemble"] == [
        {"model": "tiny:svd", "profile": None, "weights_sha256": weights_sha256("tiny:svd")}
    ]
    assert {"diffusion", "tiny:svd/diffusion"} <= set(r2.sidecar.losses[0])
    a = np.asarray(Image.open(tmp_path / "out" / "p20.png"), dtype=int)
    b = np.asarray(Image.open(tmp_path / "both" / "p20.png"), dtype=int)
    assert np.abs(a - b).max() > 0
    [again] = run_protect(both)  # the same ensemble again: already done
    assert again.status == "skipped"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--ensemble", "tiny:cogvideox"], "not the main model"),
        (["--ensemble", "tiny:svd,tiny:svd"], "name each further model once"),
        (["--ensemble", "tiny:svd", "--method", "random-noise"], "does not optimise"),
        (["--ensemble", "tiny:svd=missing.json", "--method", "rgb-pgd"], "missing.json"),
        (["--ensemble", "tiny:svd", "--profile", "PROFILE"], "adapt tiny:svd"),
    ],
)
def test_bad_ensemble_is_refused_before_any_model_loads(
    tmp_path, portraits, tiny_profile, no_model, extra, message
):
    extra = [str(tiny_profile) if a == "PROFILE" else a for a in extra]
    res = CliRunner().invoke(
        app, ["protect", "tiny:cogvideox", str(portraits), "--out", str(tmp_path / "o"), *extra]
    )
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize("family", ["svd", "cogvideox"])
def test_ira_on_vae_anchors_reads_the_encoder_at_its_own_resolution(backbones, family):
    """IRA on a VAE block alone: the term is the distance of the photo's and the target's
    features of that block, as the encoder computes them, and its gradient reaches the pixels."""
    from anti_i2v.models.capture import capture_vae
    from anti_i2v.protect.losses import feature_distance

    backbone = backbones(family)
    layer = backbone.vae_block_names()[-1]
    spec = ObjectiveSpec(
        weights={"ira": 1.0},
        collapse_layers=[],
        anchor_layers=[],
        vae_anchor_layers=[layer],
        timesteps=[500],
        clip_frames=backbone.default_frames,
    )
    x, target = torch.rand(1, 3, 24, 20), torch.rand(1, 3, 24, 20)
    objective = ModelObjective(backbone, spec, x, None, target)
    adv = x.clone().requires_grad_(True)
    value, terms = objective(adv)
    value.backward()
    assert adv.grad.abs().sum() > 0
    with torch.no_grad():
        feats = []
        for image in (x, target):
            with capture_vae(backbone, [layer]) as got:
                backbone.condition(backbone.resize(image), spec.clip_frames)
            feats.append(got[layer])
    assert feats[0].shape[2:4] != (1, 1) and feats[0].dim() == 5  # (B, F, H, W, C)
    assert terms["ira"] == pytest.approx(float(feature_distance(*feats)), rel=1e-4)
    assert value.item() == pytest.approx(-terms["ira"], rel=1e-5)  # targeted: pulled closer


@pytest.mark.slow  # a whole cloak through the CLI
def test_a_vae_profile_cloak_records_its_vae_anchors(tmp_path, portraits):
    """adapt --vae then protect, from the CLI: the sidecar names the VAE anchor, and the cloak
    differs from the one made with the same denoiser layers and no VAE anchor."""
    runner = CliRunner()
    adapt = ["adapt", "tiny:cogvideox", str(portraits / "p10.png"), "--timesteps", "300,700"]
    for name, extra in (("plain", []), ("vae", ["--vae"])):
        r = runner.invoke(app, [*adapt, "--out", str(tmp_path / name), *extra])
        assert r.exit_code == 0, r.output
    plain = json.loads((tmp_path / "plain" / "profile.json").read_text())
    vae = json.loads((tmp_path / "vae" / "profile.json").read_text())
    assert "vae_anchor_layers" not in plain and len(vae["vae_anchor_layers"]) == 1
    for key in ("collapse_layers", "anchor_layers", "timesteps"):
        assert vae[key] == plain[key]
    # The explorer (and its in-page rule) shows the denoiser's blocks only
    manifest = (tmp_path / "vae" / "explorer" / "data" / "manifest.js").read_text()
    shown = json.loads(manifest[len("window.EXPLORER = ") : -2])["layers"]
    assert shown == vae["layers"] and not any(x.startswith("vae.") for x in shown)
    cloaks = {}
    for name in ("plain", "vae"):
        r = runner.invoke(
            app,
            [
                "protect", "tiny:cogvideox", str(portraits / "p10.png"), "--steps", "2",
                "--profile", str(tmp_path / name / "profile.json"),
                "--out", str(tmp_path / f"cloak-{name}"),
            ],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        sidecar = json.loads((tmp_path / f"cloak-{name}" / "p10.json").read_text())
        expected = (vae if name == "vae" else plain).get("vae_anchor_layers", [])
        assert sidecar["vae_anchor_layers"] == expected
        cloaks[name] = (tmp_path / f"cloak-{name}" / "p10.png").read_bytes()
    assert cloaks["plain"] != cloaks["vae"]


def test_a_model_of_experts_is_cloaked_through_the_expert_of_each_timestep(backbones):
    """Wan 2.2 A14B: a step at t >= the boundary runs (and differentiates) the high-noise expert
    only, a step below it the low-noise one, and each step's IRC reads its own expert's blocks."""
    backbone = backbones("wan22-a14b")
    spec = ObjectiveSpec(
        weights={"irc": 1.0, "diffusion": 1.0},
        collapse_layers=["high.blocks.0", "low.blocks.0"],
        anchor_layers=["high.blocks.1", "low.blocks.1"],
        timesteps=[950, 500],
        clip_frames=backbone.default_frames,
    )
    objective = ModelObjective(backbone, spec, torch.rand(1, 3, 32, 32), None, None).prepare()
    assert objective.layers == ["high.blocks.0", "high.blocks.1", "low.blocks.0", "low.blocks.1"]
    for expected in ("high", "low"):  # the spec's timesteps, in turn
        calls = {"high": 0, "low": 0}
        hooks = [
            getattr(backbone.denoiser, e).register_forward_hook(
                lambda *_, e=e, calls=calls: calls.__setitem__(e, calls[e] + 1)
            )
            for e in calls
        ]
        try:
            adv = torch.rand(1, 3, 32, 32, requires_grad=True)
            value, terms = objective(adv)
            value.backward()
        finally:
            for h in hooks:
                h.remove()
        assert calls[expected] >= 1 and calls[{"high": "low", "low": "high"}[expected]] == 0
        assert terms["irc"] != 0 and adv.grad.abs().sum() > 0


@pytest.mark.parametrize("family", ["cogvideox", pytest.param("svd", marks=pytest.mark.slow)])
def test_the_attention_term_is_the_anchors_frame0_share_and_its_gradient_reaches_the_photo(
    backbones, family
):
    """The term reads the same share the attention job reports (recorded without gradient on
    the same call), and a step against its gradient lowers it."""
    from anti_i2v.models.attention import attention_share, capture_attention
    from anti_i2v.protect.objective import ATTENTION_QUERIES

    backbone = backbones(family)
    layers = backbone.block_names()
    anchors = layers[len(layers) // 2 :][:2]
    spec = ObjectiveSpec(
        weights={"attention": 1.0}, collapse_layers=layers[:1], anchor_layers=anchors,
        timesteps=[500], clip_frames=backbone.default_frames, early_exit=False,
    )  # fmt: skip
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    objective = ModelObjective(backbone, spec, x, None, None).prepare()
    adv = x.clone().requires_grad_(True)
    value, terms = objective(adv)
    (grad,) = torch.autograd.grad(value, adv)
    assert grad.abs().sum() > 0 and value.item() == pytest.approx(-terms["attention"])
    # the same share, recorded without gradient from the same call
    with torch.no_grad():
        cond = backbone.condition(backbone.resize(x), spec.clip_frames)
        noisy = backbone.add_noise(cond.clean, objective.noise[500], 500)
        with capture_attention(backbone.denoiser, anchors, ATTENTION_QUERIES, 0) as calls:
            backbone.denoiser(**backbone.denoiser_kwargs(noisy, cond, 500))
    text = backbone.text["prompt_embeds"].shape[1] if "prompt_embeds" in backbone.text else 0
    grid = backbone.token_grid(cond)
    shares = [s["frame0"] for c in calls if (s := attention_share(c, grid, text)) is not None]
    assert shares and terms["attention"] == pytest.approx(sum(shares) / len(shares), rel=1e-4)
    # a small step up the objective (down the share) lowers the share
    objective.step = 0
    _, after = objective((x + 2 / 255 * grad.sign()).clamp(0, 1))
    assert after["attention"] < terms["attention"]


def test_a_loss_weight_is_given_as_term_equals_number_and_a_bad_one_is_refused(tmp_path, portraits):
    from anti_i2v.protect.methods import method_weights

    assert method_weights("anti-i2v", ["diffusion", "attention=10"]) == {
        "diffusion": 1.0,
        "attention": 10.0,
    }
    for bad, message in (("attention=ten", "a weight is a number"), ("attention=0", "above 0"),
                         ("nonsense", "unknown loss")):  # fmt: skip
        res = CliRunner().invoke(
            app, ["protect", "tiny:cogvideox", str(portraits), "--losses", f"diffusion,{bad}",
                  "--out", str(tmp_path / "o")],
        )  # fmt: skip
        assert res.exit_code == 2 and message in res.output and not (tmp_path / "o").exists()


def test_the_unrolled_term_takes_euler_steps_for_flow_matching_and_reaches_the_photo(backbones):
    """`unrolled_clean`: one step is the call's own estimate; for a flow-matching family the
    second step is the Euler step x + (s' - s) v, then the denoiser's estimate there; and the
    gradient goes through both calls to the photo."""
    from anti_i2v.protect.objective import unrolled_clean

    backbone = backbones("wan")
    photo = torch.rand(1, 3, 32, 32, requires_grad=True)
    cond = backbone.condition(photo, 5)
    noisy = backbone.add_noise(cond.clean, torch.randn_like(cond.clean), 600.0)
    velocity = backbone.hidden(backbone.denoiser(**backbone.denoiser_kwargs(noisy, cond, 600.0)))
    clean_hat = backbone.predict_clean(noisy, velocity, 600.0)
    assert torch.equal(unrolled_clean(backbone, cond, noisy, clean_hat, 600.0, steps=1), clean_hat)
    ahead = unrolled_clean(backbone, cond, noisy, clean_hat, 600.0, steps=2)
    with torch.no_grad():
        euler = noisy + (0.3 - 0.6) * velocity
        out = backbone.denoiser(**backbone.denoiser_kwargs(euler, cond, 300.0))
        want = backbone.predict_clean(euler, backbone.hidden(out), 300.0)
    torch.testing.assert_close(ahead.detach(), want, rtol=1e-4, atol=1e-5)
    (ahead - cond.clean.detach()).pow(2).mean().backward()
    assert photo.grad is not None and photo.grad.abs().sum() > 0


def test_the_unrolled_terms_checkpoint_keeps_the_gradient(backbones, monkeypatch):
    """The second call is checkpointed with the conditioning held by closure: the photo's
    gradient is the one the same steps give without checkpointing."""
    import torch.utils.checkpoint

    from anti_i2v.protect.objective import unrolled_clean

    backbone = backbones("wan")

    def photo_grad() -> torch.Tensor:
        photo = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        photo.requires_grad_(True)
        cond = backbone.condition(photo, 5)
        noise = torch.randn(cond.clean.shape, generator=torch.Generator().manual_seed(1))
        noisy = backbone.add_noise(cond.clean, noise, 600.0)
        out = backbone.denoiser(**backbone.denoiser_kwargs(noisy, cond, 600.0))
        clean_hat = backbone.predict_clean(noisy, backbone.hidden(out), 600.0)
        unrolled_clean(backbone, cond, noisy, clean_hat, 600.0).pow(2).mean().backward()
        return photo.grad

    checkpointed = photo_grad()
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda f, *a, **k: f(*a))
    torch.testing.assert_close(checkpointed, photo_grad(), rtol=1e-5, atol=1e-8)
