"""Evaluation: metrics with known answers, deterministic distortions, the report end to end."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from anti_i2v.cli import app
from anti_i2v.core.common import ToolkitError
from anti_i2v.protect.distortions import DEFAULT, distort
from anti_i2v.protect.metrics import (
    bootstrap_ci,
    delta_e,
    psnr,
    ssim,
    ssim_video,
    temporal_coherence,
)
from anti_i2v.protect.run import ProtectConfig, run_protect


def test_identical_inputs():
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert psnr(x, x) == math.inf
    assert ssim(x, x) == pytest.approx(1.0)
    assert delta_e(x, x) == pytest.approx(0.0, abs=1e-9)
    video = x[None].repeat(4, 1, 1, 1)
    assert ssim_video(video, video) == pytest.approx(1.0) and temporal_coherence(
        video
    ) == pytest.approx(1.0)


def test_known_values():
    a = torch.zeros(3, 8, 8)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-4)  # mse 0.01
    grey = torch.full((3, 8, 8), 0.5)
    from skimage.color import rgb2lab

    shifted = grey.clone()
    shifted[0] += 0.1  # a redder grey
    lab_a = rgb2lab(grey.permute(1, 2, 0).numpy().astype(np.float64))[0, 0]
    lab_b = rgb2lab(shifted.permute(1, 2, 0).numpy().astype(np.float64))[0, 0]
    assert (
        delta_e(grey, shifted) > 0.5 * np.linalg.norm(lab_a - lab_b) > 0
    )  # CIEDE2000 vs CIE76 order
    noisy = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert temporal_coherence(noisy) < 0.3
    lo, hi = bootstrap_ci(np.array([1.0, 2.0, 3.0, 4.0]))
    assert lo < 2.5 < hi  # the interval holds the mean
    assert bootstrap_ci(np.array([1.0, 2.0, 3.0, 4.0])) == (
        lo,
        hi,
    )  # seeded: the same interval again
    assert bootstrap_ci(np.full(4, 2.5)) == (2.5, 2.5)  # no spread, no width
    wide = bootstrap_ci(np.array([1.0, 2.0, 3.0, 4.0] * 25))
    assert wide[1] - wide[0] < (hi - lo) / 2  # 25x the samples: a much narrower interval


@pytest.mark.parametrize("name", ["none", *DEFAULT])
def test_distortions_are_deterministic_and_keep_shape(name, backbones):
    x = torch.rand(3, 40, 30, generator=torch.Generator().manual_seed(0))
    backbone = backbones("cogvideox") if name == "vae" else None
    a, b = distort(x, name, seed=3, backbone=backbone), distort(x, name, seed=3, backbone=backbone)
    assert torch.equal(a, b) and a.shape == x.shape
    assert 0 <= a.min() and a.max() <= 1
    if name != "none":
        assert not torch.equal(a, x)


def test_unknown_distortion():
    with pytest.raises(ValueError, match="unknown distortion"):
        distort(torch.rand(3, 4, 4), "sepia")
    with pytest.raises(ValueError, match="pass the backbone"):
        distort(torch.rand(3, 4, 4), "vae")


def test_h264_is_ltx2s_own_recompression_at_the_photos_size(monkeypatch):
    """`h264crfN` is the LTX-2 pipeline's re-compression: deterministic, the photo's size kept
    (odd sides too), close to a smooth photo, closer at a lower CRF; without PyAV, the configs
    refuse it in one line before any model work."""
    import anti_i2v.protect.config as config
    from anti_i2v.core.common import ToolkitError
    from anti_i2v.world.render import render_video, sample_identity, sample_motion

    photo = torch.from_numpy(render_video(sample_identity(5), sample_motion(5))[0][0])
    photo = torch.nn.functional.interpolate(
        photo.permute(2, 0, 1)[None].float() / 255, size=(65, 47), mode="bilinear"
    )[0].clamp(0, 1)
    high, again, low = (distort(photo, n) for n in ("h264crf33", "h264crf33", "h264crf10"))
    assert torch.equal(high, again) and high.shape == low.shape == photo.shape
    assert 25 < psnr(high, photo) < psnr(low, photo)
    assert not torch.equal(high, photo)
    assert config.is_distortion("h264crf51") and not config.is_distortion("h264crf52")
    assert not config.is_distortion("h264crf0")
    monkeypatch.setattr(config, "_has_pyav", lambda: False)
    with pytest.raises(ToolkitError, match=r"^--eot h264crf33: H.264 needs PyAV: `pip install"):
        config.check_distortions("--eot", ("jpeg75", "h264crf33"))
    config.check_distortions("--eot", ("jpeg75",))  # nothing else needs it


@pytest.mark.parametrize("family", ["cogvideox", "svd"])
def test_vae_purification_keeps_size_and_is_near_identity_on_the_mini_models(family):
    from anti_i2v.models.backbones import load_backbone
    from anti_i2v.world.render import render_video, sample_identity, sample_motion

    backbone = load_backbone("mini-cogvideox" if family == "cogvideox" else "mini-svd")
    photo = (
        torch.from_numpy(render_video(sample_identity(5), sample_motion(5))[0][0]).permute(2, 0, 1)
        / 255
    )
    big = torch.nn.functional.interpolate(photo[None], size=(96, 80), mode="bilinear")[0]
    out = distort(big, "vae", backbone=backbone)
    assert out.shape == big.shape  # back at the photo's own size
    assert psnr(out, big) > 20  # a trained VAE reconstructs the world's portraits
    assert not torch.equal(out, big)


@pytest.mark.slow
def test_report_end_to_end_on_a_tiny_model(tmp_path, portraits):
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
    # One method cloaked on the main model, one on the second model: both directions of transfer.
    for method, model in (("random-noise", "tiny:cogvideox"), ("photoguard-encoder", "tiny:ltx")):
        run_protect(
            ProtectConfig(
                model=model,
                images=(str(portraits),),
                profile=None,
                out=str(tmp_path / method),
                method=method,
                steps=2,
            )
        )
    shutil.copy(
        tmp_path / "random-noise" / "p10.png", tmp_path / "random-noise" / "stray.png"
    )  # no clean photo
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "tiny:cogvideox",
            "--clean",
            str(portraits),
            "--protected",
            str(tmp_path / "random-noise"),
            "--protected",
            str(tmp_path / "photoguard-encoder"),
            "--out",
            str(tmp_path / "report"),
            "--distortions",
            "jpeg75,vae",
            "--models",
            "tiny:ltx",
            "--steps",
            "2",
            "--reference",
            str(tmp_path / "dino"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "1 cloak(s) have no clean photo of the same name" in res.output.replace("\n", " ")
    with open(tmp_path / "report" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    keys = {(r["photo"], r["method"], r["made_on"], r["distortion"], r["eval_model"]) for r in rows}
    made = {"random-noise": "tiny:cogvideox", "photoguard-encoder (made on tiny:ltx)": "tiny:ltx"}
    for photo in ("p10", "p20", "p30"):
        for model in ("tiny:cogvideox", "tiny:ltx"):
            assert (photo, "clean", "", "none", model) in keys
            for method, on in made.items():
                for dist in ("none", "jpeg75", "vae") if model == "tiny:cogvideox" else ("none",):
                    assert (photo, method, on, dist, model) in keys
    # Transfer models see the undistorted cloaks; every video is judged by both mini judges.
    assert len(rows) == 2 * 3 * ((1 + 2 * 3) + (1 + 2))
    assert {r["judge"] for r in rows} == {"mini-identity", "mini-identity-v1"}
    assert {r["budget"] for r in rows if r["method"] == "random-noise"} == {"16"}
    rows = [r for r in rows if r["judge"] == "mini-identity"]
    assert set(rows[0]) >= {
        "ism_clean",
        "ism_protected",
        "psnr_video",
        "ssim_video",
        "temporal",
        "cloak_psnr",
        "cloak_ssim",
        "cloak_delta_e",
        "cloak_ism",
    }
    clean_row = next(r for r in rows if r["method"] == "clean")
    assert all(-1 <= float(r["ref_protected"]) <= 1 for r in rows)  # the local DINO was used
    assert float(clean_row["ref_clean"]) == float(clean_row["ref_protected"])
    assert clean_row["psnr_video"] == "inf" and float(clean_row["cloak_delta_e"]) == 0
    assert float(clean_row["cloak_ism"]) == pytest.approx(
        1.0, abs=1e-5
    )  # the photo is its own identity
    assert all(float(r["cloak_ism"]) < 1 - 1e-6 for r in rows if r["method"] == "random-noise")
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    entry = next(
        e
        for e in summary["table"]
        if e["method"] == "random-noise"
        and e["distortion"] == "none"
        and e["eval_model"] == "tiny:cogvideox"
        and e["judge"] == "mini-identity"
    )
    assert entry["n"] == 3 and len(entry["ism_drop_ci95"]) == 2
    # Paired difference: the mean over photos of A's drop minus B's, from the same rows as the CSV.
    [pair] = [
        p
        for p in summary["paired"]
        if p["eval_model"] == "tiny:cogvideox" and p["judge"] == "mini-identity"
    ]
    assert (pair["a"], pair["b"], pair["n"]) == (
        "photoguard-encoder (made on tiny:ltx)",
        "random-noise",
        3,
    )

    def drops(method):
        return {
            r["photo"]: (float(r["ism_clean"]) - float(r["ism_protected"]))
            / max(float(r["ism_clean"]), 1e-6)
            for r in rows
            if r["method"] == method
            and r["distortion"] == "none"
            and r["eval_model"] == "tiny:cogvideox"
        }

    a, b = drops(pair["a"]), drops(pair["b"])
    assert pair["ism_drop_diff"] == pytest.approx(
        np.mean([a[k] - b[k] for k in a]), rel=1e-3
    )  # CSV: 6 digits
    assert pair["ism_drop_diff_ci95"][0] <= pair["ism_drop_diff"] <= pair["ism_drop_diff_ci95"][1]
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Paired differences" in page
    assert (
        "Robustness" in page
        and "Transfer" in page
        and page.index("<td>clean</td>") < page.index("random-noise")
    )
    assert "photoguard-encoder (made on tiny:ltx)" in page
    strips = sorted(p.name for p in (tmp_path / "report" / "strips").glob("*.png"))
    assert (
        "p10__photoguard-encoder-made-on-tiny-ltx.png" in strips
        and "p10__random-noise.png" in strips
    )
    assert "strips/p10__photoguard-encoder-made-on-tiny-ltx.png" in page


@pytest.fixture(scope="module")
def facenet_weights(tmp_path_factory):
    """A seeded InceptionResnetV1 saved the way a user converts facenet-pytorch's weights."""
    from facenet_pytorch import InceptionResnetV1
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = InceptionResnetV1(
        pretrained=None, classify=False, num_classes=10
    )  # with a classifier head, as shipped
    path = tmp_path_factory.mktemp("facenet") / "vggface2.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path, net


@pytest.mark.slow  # builds the 23M-parameter InceptionResnetV1 twice
def test_facenet_identity_is_the_model_on_standardised_160px_frames(facenet_weights):
    from anti_i2v.evaluate.identity import load_identity

    path, net = facenet_weights
    encoder = load_identity(f"facenet:{path}")
    frames = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    emb = encoder(frames)
    big = torch.nn.functional.interpolate(frames, size=(160, 160), mode="bilinear", antialias=True)
    expected = torch.nn.functional.normalize(net.eval()((big * 255 - 127.5) / 128), dim=-1)
    assert emb.shape == (2, 512)
    torch.testing.assert_close(emb, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))


def test_facenet_refuses_pickles_missing_files_and_other_weights(tmp_path, facenet_weights):
    from safetensors.torch import save_file

    from anti_i2v.evaluate.identity import load_identity

    (tmp_path / "w.pt").write_bytes(b"not read")
    with pytest.raises(ToolkitError, match="not safetensors.*weights_only=True"):
        load_identity(f"facenet:{tmp_path / 'w.pt'}")
    with pytest.raises(ToolkitError, match="no FaceNet weights"):
        load_identity(f"facenet:{tmp_path / 'absent.safetensors'}")
    save_file({"conv.weight": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ToolkitError, match="not an InceptionResnetV1"):
        load_identity(f"facenet:{tmp_path / 'other.safetensors'}")
    with pytest.raises(ToolkitError, match="no identity encoder in"):
        load_identity(str(tmp_path))


@pytest.mark.slow
def test_evaluate_with_facenet_scores_ism_with_it(tmp_path, portraits, facenet_weights):
    from safetensors.torch import load_file

    from anti_i2v.core.images import load_photo
    from anti_i2v.evaluate.identity import load_identity
    from anti_i2v.evaluate.run import _sha
    from anti_i2v.protect.metrics import identity_similarity

    # One method at its defaults, at another budget, and in another space: three rows, told apart.
    for folder, kw in (("noise", {}), ("noise8", {"eps": 8.0}), ("noise-lab", {"space": "lab"})):
        run_protect(
            ProtectConfig(
                model="tiny:cogvideox",
                images=(str(portraits),),
                profile=None,
                out=str(tmp_path / folder),
                method="random-noise",
                **kw,
            )
        )
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "tiny:cogvideox",
            "--clean",
            str(portraits),
            "--protected",
            str(tmp_path / "noise"),
            "--protected",
            str(tmp_path / "noise8"),
            "--protected",
            str(tmp_path / "noise-lab"),
            "--out",
            str(tmp_path / "report"),
            "--distortions",
            "",
            "--steps",
            "2",
            "--identity",
            f"facenet:{facenet_weights[0]}",
        ],
    )
    assert res.exit_code == 0, res.output
    with open(tmp_path / "report" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {
        "clean",
        "random-noise",
        "random-noise (eps 8/255)",
        "random-noise (lab)",
    }
    row = next(r for r in rows if r["photo"] == "p10" and r["method"] == "clean")
    photo = load_photo(portraits / "p10.png").pixels
    [cached] = (tmp_path / "report" / ".videos").rglob(
        f"{_sha(photo)}-s0-n2.safetensors"
    )  # the clean video
    video = load_file(str(cached))["video"]
    expected = identity_similarity(load_identity(f"facenet:{facenet_weights[0]}"), video[1:], photo)
    assert float(row["ism_clean"]) == pytest.approx(expected, abs=1e-6)


# --- dlib's face recogniser on a real photo ---------------------------------------------------


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    from skimage import data

    return torch.from_numpy(data.astronaut().copy()).permute(2, 0, 1).float() / 255


@pytest.mark.slow  # loads dlib's detector, landmarks and ResNet: the full tier
def test_dlib_judges_a_real_face_as_a_face_recogniser_would(astronaut):
    from anti_i2v.evaluate.identity import load_identity
    from anti_i2v.evaluate.run import Judges
    from anti_i2v.protect.metrics import identity_similarity

    judge = load_identity("dlib")
    shifted = torch.roll(astronaut, 20, dims=2)
    sign = torch.sign(torch.randn(astronaut.shape, generator=torch.Generator().manual_seed(0)))
    noisy = (astronaut + sign * 16 / 255).clamp(0, 1)
    assert identity_similarity(judge, shifted[None], astronaut) > 0.97  # the same person
    assert identity_similarity(judge, noisy[None], astronaut) > 0.9
    faceless = torch.full_like(astronaut, 0.5)
    assert identity_similarity(judge, faceless[None], astronaut) == 0  # no face: identity lost
    cloak = Judges({"dlib": judge}, None, None).cloak(noisy, astronaut)
    assert 0.9 < cloak.cloak_ism["dlib"] <= 1 and cloak.cloak_psnr < 40
    with pytest.raises(ToolkitError, match="no face found in blank.png"):
        judge.require_face(faceless, "blank.png")


def test_evaluate_with_dlib_refuses_photos_without_a_face_before_generating(
    tmp_path, portraits, monkeypatch
):
    import anti_i2v.evaluate.run as evaluate_run

    monkeypatch.setattr(
        evaluate_run, "load_backbone", lambda *a, **k: pytest.fail("generated before checking")
    )
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "tiny:cogvideox",
            "--clean",
            str(portraits),
            "--protected",
            str(portraits),
            "--identity",
            "dlib",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert res.exit_code == 2 and "no face found in" in res.output, res.output


@pytest.mark.slow
def test_budgets_frontier_recloaks_each_method_and_compares_at_equal_visibility(
    tmp_path, portraits, tiny_profile
):
    for method in ("anti-i2v", "random-noise"):
        run_protect(
            ProtectConfig(
                model="tiny:cogvideox",
                images=(str(portraits),),
                profile=str(tiny_profile),
                out=str(tmp_path / method),
                method=method,
                steps=2,
                alpha=8,  # two steps reach beyond 4/255, so the budgets differ in visibility
                reference_steps=2,
            )
        )
    args = [
        "evaluate",
        "tiny:cogvideox",
        "--clean",
        str(portraits),
        "--protected",
        str(tmp_path / "anti-i2v"),
        "--protected",
        f"noise={tmp_path / 'random-noise'}",  # a row named by the user
        "--out",
        str(tmp_path / "report"),
        "--distortions",
        "",
        "--steps",
        "2",
        "--budgets",
        "4,8,16",
    ]
    # The anti-i2v cloaks name their profile by hash: without it they cannot be re-made.
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "pass that profile with --profile" in res.output
    assert not (tmp_path / "report" / ".cloaks").exists()  # refused before any protect run
    res = CliRunner().invoke(app, [*args, "--profile", str(tiny_profile)])
    assert res.exit_code == 0, res.output
    report = tmp_path / "report"
    # 16 is the folders' own budget: reused, not re-made; 4 and 8 are made through protect.
    assert sorted(p.name for p in (report / ".cloaks").iterdir()) == ["anti-i2v", "noise"]
    remade = json.loads((report / ".cloaks" / "anti-i2v" / "eps4" / "p10.json").read_text())
    original = json.loads((tmp_path / "anti-i2v" / "p10.json").read_text())
    assert remade["settings"] == {**original["settings"], "eps": 4.0}  # only the budget differs
    with open(report / "frontier.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], r["budget"]) for r in rows if r["method"] != "clean"} == {
        (m, b) for m in ("anti-i2v", "noise") for b in ("4", "8", "16")
    }
    summary = json.loads((report / "summary.json").read_text())
    for judge in ("mini-identity", "mini-identity-v1"):
        entry = summary["frontier"]["judges"][judge]
        curve = entry["curves"]["anti-i2v"]
        assert [c["budget"] for c in curve] == [4, 8, 16]
        # Each budget is measured on its own cloaks: a smaller budget is less visible
        visibility = [c["cloak_delta_e"] for c in curve]
        assert visibility[0] < visibility[1] < visibility[2]
        assert set(entry["at_delta_e"]["noise"]) == {"2", "3", "5"}
        assert (report / f"frontier-{judge}.png").is_file()
    page = (report / "index.html").read_text()
    assert "Equal-visibility frontier" in page and "<td>noise</td>" in page
    # A re-run re-makes nothing: the cloaks at 4/255 are kept.
    stamp = (report / ".cloaks" / "anti-i2v" / "eps4" / "p10.png").stat().st_mtime_ns
    assert CliRunner().invoke(app, [*args, "--profile", str(tiny_profile)]).exit_code == 0
    assert (report / ".cloaks" / "anti-i2v" / "eps4" / "p10.png").stat().st_mtime_ns == stamp


def test_frontier_recloaks_an_ensemble_with_each_models_profile_found_by_hash(
    tmp_path, portraits, tiny_profile
):
    from anti_i2v.evaluate.frontier import FrontierPlan
    from anti_i2v.evaluate.run import _read_set
    from anti_i2v.protect.config import EvaluateConfig

    # The main model without a profile; the ensemble's second model with one (its timesteps).
    run_protect(
        ProtectConfig(
            model="tiny:svd",
            images=(str(portraits / "p10.png"),),
            profile=None,
            out=str(tmp_path / "both"),
            method="rgb-pgd",
            ensemble=(f"tiny:cogvideox={tiny_profile}",),
            steps=1,
            reference_steps=2,
        )
    )
    cloaks = _read_set(str(tmp_path / "both"), "tiny:svd")
    assert cloaks.label == "rgb-pgd (+ tiny:cogvideox)"

    def plan(*profiles):
        cfg = EvaluateConfig(
            model="tiny:svd",
            clean=str(portraits),
            protected=(str(tmp_path / "both"),),
            out=str(tmp_path / "r"),
            budgets=(4, 16),
            profiles=tuple(map(str, profiles)),
        )
        return FrontierPlan.make(cfg, {"p10": portraits / "p10.png"}, [cloaks], tmp_path / "r")

    with pytest.raises(ToolkitError, match="pass that profile with --profile"):
        plan()
    [(label, budget, pc)] = plan(tiny_profile).pending
    assert (label, budget) == ("rgb-pgd (+ tiny:cogvideox)", 4.0)
    assert pc.ensemble == (f"tiny:cogvideox={tiny_profile}",) and pc.profile is None


def test_amplification_is_the_video_drop_over_the_cloaks_own_and_absent_without_one():
    from anti_i2v.evaluate.results import AMPLIFICATION_FLOOR, EvalRow, amplification

    def row(ism_protected, cloak_ism):
        nan = math.nan
        return EvalRow(
            "p", "m", "x", 8.0, "none", "mini", 0, "judge", 0.9, ism_protected,
            *(nan,) * 6, cloak_ism, nan, nan, nan,
        )  # fmt: skip

    # Videos lose 0.2 and 0.1 of identity, the cloaks 0.1 and 0.1: the model amplifies 1.5x
    assert amplification([row(0.7, 0.9), row(0.8, 0.9)]) == pytest.approx(1.5)
    assert amplification([row(0.85, 0.8)]) == pytest.approx(0.25)  # the model repairs the cloak
    # A cloak that barely moves the judge has nothing to amplify: no ratio of noise
    assert amplification([row(0.9 - 1e-3, 1 - AMPLIFICATION_FLOOR / 2)]) is None
