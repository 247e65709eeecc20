"""`anti-i2v study`: its statistics on numbers with known answers, its protocol and refusals
before any model work, and one whole study on a tiny model from the CLI."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from anti_i2v.cli import app
from anti_i2v.core.common import ToolkitError
from anti_i2v.evaluate.results import EvalRow
from anti_i2v.experiments.study.analysis import StudyReport, analyse, cloak_label
from anti_i2v.experiments.study.config import StudyConfig
from anti_i2v.experiments.study.cost import StepCost, check_budget, predict
from anti_i2v.experiments.study.protocol import build_protocol, register, split_photos
from anti_i2v.experiments.study.report import render_readme
from anti_i2v.experiments.study.stats import estimate, holm, profile_rank, read_off
from anti_i2v.experiments.variants import random_draws

runner = CliRunner()


# --- statistics ---------------------------------------------------------------------------


def test_read_off_interpolates_each_portrait_and_never_extrapolates():
    delta_e = np.array([[[1.0, 2.0, 4.0]], [[3.0, 5.0, 7.0]]])  # (P=2, C=1, B=3)
    drop = np.array([[[[0.0, 0.1, 0.3]]], [[[0.2, 0.4, 0.6]]]])  # (P, C, G=1, B)
    got = read_off(delta_e, drop, (2.0, 3.0, 8.0))
    assert got.shape == (2, 1, 1, 3)
    assert got[0, 0, 0, :2] == pytest.approx([0.1, 0.2])  # 3 lies halfway from 2 to 4
    assert math.isnan(got[0, 0, 0, 2])  # beyond the largest ΔE reached: not extrapolated
    assert math.isnan(got[1, 0, 0, 0]) and got[1, 0, 0, 1] == pytest.approx(0.2)


def test_holm_matches_the_step_down_by_hand():
    # sorted: 0.01 * 3, 0.03 * 2, 0.04 * 1 -> 0.03, 0.06, max(0.06, 0.04) = 0.06
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    assert holm([0.5, None, 0.9]) == [pytest.approx(1.0), None, pytest.approx(1.0)]


def test_nested_bootstrap_finds_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    shifted = 0.05 + 0.01 * rng.standard_normal((12, 2, 2))
    null = 0.01 * rng.standard_normal((12, 2, 2))
    e = estimate(shifted, reps=500, seed=0, test=True)
    assert e.n == 12 and e.ci95[0] > 0 and e.p < 0.01
    z = estimate(null, reps=500, seed=0, test=True)
    assert z.ci95[0] < 0 < z.ci95[1] and z.p > 0.05
    assert estimate(shifted, reps=500, seed=0) == estimate(shifted, reps=500, seed=0)  # seeded
    partly = shifted.copy()
    partly[3] = np.nan  # a portrait whose curve never reached the visibility is left out
    assert estimate(partly, reps=100, seed=0).n == 11


def test_profile_rank_and_its_permutation_p():
    scores = {
        "profile-layers": 0.3,
        "random-layers-0": 0.1,
        "random-layers-1": 0.5,
        "pilot-layers": 0.2,
    }
    r = profile_rank(scores, "profile-layers", ["random-layers-0", "random-layers-1"])
    assert (r.rank, r.of) == (2, 4) and r.p == pytest.approx(2 / 3)  # one draw above, of two
    assert profile_rank({"profile-layers": 0.3}, "profile-layers", ["random-layers-0"]) is None


# --- protocol ------------------------------------------------------------------------------


def test_the_fast_lever_is_an_arm_with_its_own_steps_and_optimiser(tmp_path):
    from anti_i2v.experiments.study.config import FAST_ARM
    from anti_i2v.experiments.study.protocol import arm_record, comparisons

    cfg = StudyConfig(model="tiny:svd", photos=str(tmp_path), out=str(tmp_path / "s"), steps=60,
                      arms=("rgb-pgd", "anti-i2v"), fast_steps=15)  # fmt: skip
    fast = cfg.study_arms()[-1]
    assert fast.name == FAST_ARM and fast.steps(cfg.steps) == 15 and fast.optimizer == "momentum"
    assert (fast.alpha, fast.alpha_decay) == (2.0, "cosine")
    # recorded with its lever fields; an arm without them reads as protocols always did
    assert arm_record(fast)["step_fraction"] == 0.25 and arm_record(fast)["optimizer"] == "momentum"
    assert set(arm_record(cfg.study_arms()[0])) == {
        "name",
        "method",
        "space",
        "losses",
        "layers",
        "eot",
    }
    wanted = {(c.a, c.b) for c in comparisons({"rgb-pgd", "anti-i2v", FAST_ARM})}
    assert {(FAST_ARM, "rgb-pgd"), (FAST_ARM, "anti-i2v")} <= wanted


def _photos(tmp_path: Path, n: int) -> list[Path]:
    d = tmp_path / "photos"
    d.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        p = d / f"face{i}.png"
        p.write_bytes(f"photo {i}".encode())
        paths.append(p)
    return paths


def test_split_is_seeded_disjoint_and_refuses_too_few_photos(tmp_path):
    photos = _photos(tmp_path, 8)
    cfg = StudyConfig(model="tiny:svd", photos=str(tmp_path), out=str(tmp_path / "s"), selection=3)
    a, b = split_photos(photos, cfg), split_photos(list(reversed(photos)), cfg)
    assert a == b  # the order photos are found in does not matter
    assert len(a.selection) == 3 and len(a.evaluation) == 5
    assert not set(a.selection) & set(a.evaluation)
    other = split_photos(photos, StudyConfig(**{**cfg.__dict__, "split_seed": 1}))
    assert other.selection != a.selection
    with pytest.raises(ToolkitError, match="needs 5"):
        split_photos(photos[:4], cfg)


def test_a_changed_protocol_is_refused_in_one_line(tmp_path):
    photos = _photos(tmp_path, 6)
    cfg = StudyConfig(model="tiny:svd", photos=str(tmp_path), out=str(tmp_path / "s"))
    protocol = build_protocol(cfg, split_photos(photos, cfg), "mini-identity", "j" * 64, "w" * 64)
    register(tmp_path / "s", protocol)
    register(tmp_path / "s", protocol)  # the same protocol resumes
    changed = build_protocol(
        StudyConfig(**{**cfg.__dict__, "steps": 100}),
        split_photos(photos, cfg),
        "mini-identity",
        "j" * 64,
        "w" * 64,
    )
    with pytest.raises(ToolkitError, match="registered with another 'steps'"):
        register(tmp_path / "s", changed)
    comparisons = [(c["a"], c["b"]) for c in protocol["analysis"]["comparisons"]]
    assert ("anti-i2v", "rgb-pgd") in comparisons and ("colour-space", "rgb-pgd") in comparisons
    assert ("profile-layers", "random-layers") in comparisons


def test_random_draws_cover_the_whole_depth_and_never_repeat_the_profile(tiny_profile):
    from anti_i2v.analyses.profile import load_profile

    two = load_profile(tiny_profile)  # tiny:cogvideox: two blocks, one other configuration
    with pytest.raises(ToolkitError, match="only 1 layer configurations differ"):
        random_draws(two, 2)
    layers = [f"blocks.{i}" for i in range(8)]
    profile = replace(two, layers=layers, collapse_layers=layers[:1], anchor_layers=layers[5:7])
    draws = random_draws(profile, 4)
    picks = {(tuple(p.collapse_layers), tuple(p.anchor_layers)) for p in draws.values()} | {
        (tuple(profile.collapse_layers), tuple(profile.anchor_layers))
    }
    assert len(picks) == 5  # four draws, all different from the profile and each other
    for p in draws.values():
        assert len(p.collapse_layers) == len(profile.collapse_layers)
        assert len(p.anchor_layers) == len(profile.anchor_layers)
        assert not set(p.collapse_layers) & set(p.anchor_layers)
    many = random_draws(profile, 12)
    used = {x for p in many.values() for x in p.collapse_layers + p.anchor_layers}
    assert used == set(profile.layers)  # no depth band confines them


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arms", "anti-i2v,colour-space"], "keep rgb-pgd"),
        (["--arms", "rgb-pgd,nonsense"], "name each arm once"),
        (["--budgets", "8"], "two or more distinct budgets"),
        (["--delta-e", "2,5"], "--headline-delta-e 3"),
        (["--random-layers", "1"], "at least 2 draws"),
        (["--eot", "jpeg200"], "unknown distortion"),
        (["--fast-steps", "0"], "--fast-steps 0"),
        (["--fast-steps", "10", "--fast-optimizer", "adam"], "--fast-optimizer adam"),
        (["--fast-steps", "10", "--fast-alpha", "0"], "--fast-alpha 0"),
    ],
)
def test_bad_options_are_one_line_before_any_model(tmp_path, no_model, args, message):
    result = runner.invoke(
        app, ["study", "tiny:svd", str(tmp_path), "--out", str(tmp_path / "s"), *args]
    )
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "s").exists()


def test_too_few_photos_and_an_unreadable_photo_are_refused_before_any_model(
    tmp_path, no_model, portraits
):
    result = runner.invoke(app, ["study", "tiny:svd", str(portraits), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "3 photos: this study needs 6" in result.output
    bad = tmp_path / "bad"
    shutil.copytree(portraits, bad)
    (bad / "broken.png").write_bytes(b"not a png")
    result = runner.invoke(app, ["study", "tiny:svd", str(bad), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "broken.png" in result.output
    assert not (tmp_path / "s" / "protocol.json").exists()


def test_a_face_judge_refuses_photos_without_a_face_before_any_model(tmp_path, no_model, photos):
    pytest.importorskip("dlib", reason="dlib is not installed")
    for i in range(3):  # six mini-world portraits: drawn faces dlib's detector does not find
        shutil.copy(photos / f"p{10 * (i + 1)}.png", photos / f"q{i}.png")
    result = runner.invoke(
        app, ["study", "tiny:svd", str(photos), "--out", str(tmp_path / "s"), "--judge", "dlib"]
    )
    assert result.exit_code == 2 and "no face found in" in result.output
    assert not (tmp_path / "s" / "protocol.json").exists()


def test_a_region_arm_refuses_a_photo_without_its_mask_before_any_model(
    tmp_path, no_model, photos, portrait_masks
):
    for i in range(3):
        shutil.copy(photos / f"p{10 * (i + 1)}.png", photos / f"q{i}.png")
    result = runner.invoke(
        app, ["study", "tiny:svd", str(photos), "--out", str(tmp_path / "s"), "--masks",
              str(portrait_masks), "--arms", "rgb-pgd,anti-i2v,face-region"],
    )  # fmt: skip
    assert result.exit_code == 2 and "no mask for q0.png" in result.output, result.output
    assert not (tmp_path / "s" / "protocol.json").exists()


# --- cost ----------------------------------------------------------------------------------


def test_cost_counts_every_cloak_and_video_and_refuses_over_budget(tmp_path):
    cfg = StudyConfig(
        model="tiny:svd", photos="p", out="o", budgets=(4, 8), cloak_seeds=2, generation_seeds=3,
        steps=10, eval_steps=5, random_layers=2, arms=("random-noise", "rgb-pgd", "random-layers"),
    )  # fmt: skip
    step = StepCost(
        protect_s=1.0, protect_peak_bytes=100, generate_s=0.1, generate_peak_bytes=10, device="cpu"
    )
    cost = predict(cfg, step, n_eval=5, n_layers=7)
    assert [a.name for a in cost.arms] == [
        "random-noise",
        "rgb-pgd",
        "random-layers-0",
        "random-layers-1",
    ]
    rgb = cost.arms[1]
    assert (rgb.cloaks, rgb.videos) == (5 * 2 * 2, 5 * 2 * 2 * 3)
    assert rgb.seconds == pytest.approx(20 * 10 * 1.0 + 60 * 5 * 0.1)
    assert cost.arms[0].seconds == pytest.approx(60 * 5 * 0.1)  # noise optimises nothing
    resumed = predict(cfg, step, n_eval=5, n_layers=7, done={"rgb-pgd": 5}, layers_done=True)
    assert resumed.arms[1].cloaks == 15 and resumed.arms[0].cloaks == 20  # only what is left
    with pytest.raises(ToolkitError, match="over --budget-hours"):
        check_budget(cost, cost.seconds / 3600 / 2)
    check_budget(cost, cost.seconds / 3600 * 2)


# --- analysis on rows with known answers ---------------------------------------------------


def _row(photo, label, seed, delta_e, drop):
    nan = float("nan")
    return EvalRow(
        photo=photo, method=label, made_on="m", budget=0.0, distortion="none", eval_model="m",
        seed=seed, judge="j", ism_clean=1.0, ism_protected=1.0 - drop, psnr_video=nan,
        ssim_video=nan, temporal=nan, cloak_psnr=nan, cloak_ssim=0.99, cloak_delta_e=delta_e,
        cloak_ism=nan, cloak_lpips=nan, ref_clean=nan, ref_protected=nan,
        cloak_delta_e_p95=2 * delta_e,
    )  # fmt: skip


def _known_rows(slopes: dict[str, float], rng) -> list:
    """Eight portraits' rows whose drop is slope * ΔE (plus a little noise), ΔE = budget / 2."""
    rows = []
    for arm, slope in slopes.items():
        for i in range(8):
            for b in (4, 8):
                for c in (0, 1):
                    for g in (0, 1):
                        de = b / 2 * (1 + 0.05 * i)
                        noise = 0.001 * rng.standard_normal()
                        rows.append(
                            _row(f"e{i}", cloak_label(arm, b, c), g, de, slope * de + noise)
                        )
    return rows


def test_a_colour_space_that_loses_to_rgb_pgd_is_said_once(tmp_path):
    cfg = StudyConfig(
        model="tiny:svd", photos="p", out="o", budgets=(4, 8), cloak_seeds=2, generation_seeds=2,
        reps=400, arms=("rgb-pgd", "colour-space"),
    )  # fmt: skip
    protocol = build_protocol(
        cfg, split_photos(_photos(tmp_path, 10), cfg), "j", "j" * 64, "w" * 64
    )
    rows = _known_rows({"rgb-pgd": 0.01, "colour-space": 0.0}, np.random.default_rng(2))
    report = analyse(rows, protocol, {})
    loss = next(c for c in report.primary if c.a == "colour-space")
    assert loss.significant and loss.mean < 0
    said = [v for v in report.verdicts if f"{loss.mean:+.4f}" in v]
    assert len(said) == 1 and said[0].startswith("RGB PGD removes more identity than colour-space")


def test_analysis_reads_known_curves_and_writes_the_verdicts(tmp_path):
    from anti_i2v.experiments.study.config import DEFAULT_ARMS

    cfg = StudyConfig(
        model="tiny:svd", photos="p", out="o", budgets=(4, 8), random_layers=2, cloak_seeds=2,
        generation_seeds=2, reps=800, arms=(*DEFAULT_ARMS, "attention-layers"),
    )  # fmt: skip
    photos = _photos(tmp_path, 10)
    protocol = build_protocol(cfg, split_photos(photos, cfg), "j", "j" * 64, "w" * 64)
    rng = np.random.default_rng(1)
    # drop = slope * ΔE, with ΔE = budget / 2: anti-i2v's slope is 0.02 above RGB PGD's
    slopes = {"random-noise": 0.0, "rgb-pgd": 0.01, "colour-space": 0.01, "profile-layers": 0.01,
              "random-layers-0": 0.011, "random-layers-1": 0.012, "pilot-layers": 0.009,
              "attention-layers": 0.02, "anti-i2v": 0.03}  # fmt: skip
    rows = _known_rows(slopes, rng)
    layers = {"profile-layers": {"collapse": ["a"], "anchors": ["b"], "timesteps": [500]}}
    report = analyse(rows, protocol, layers)
    anti = report.arms["anti-i2v"]["at_delta_e"]["3"]
    assert anti["mean"] == pytest.approx(0.09, abs=0.002) and anti["n"] == 8
    assert report.arms["rgb-pgd"]["visibility"][0]["delta_e_p95"] == pytest.approx(
        2 * report.arms["rgb-pgd"]["visibility"][0]["delta_e_mean"]
    )
    primary = {c.name: c for c in report.primary}
    assert primary["anti-i2v - rgb-pgd"].significant and primary[
        "anti-i2v - rgb-pgd"
    ].mean == pytest.approx(0.06, abs=0.002)
    assert not primary["colour-space - rgb-pgd"].significant
    assert primary["profile-layers - random-layers"].mean < 0
    assert all(c.p_holm >= c.p for c in report.primary)
    assert (
        report.rank.rank == 4 and report.rank.of == 5
    )  # below both random draws and the attention share's, above the pilot's
    # the attention share's anchors: 0.02 a ΔE against the draws' 0.0115, so +0.0255 at ΔE 3
    assert primary["attention-layers - random-layers"].mean == pytest.approx(0.0255, abs=0.002)
    assert any("Anchors by the attention share minus random layers" in v for v in report.verdicts)
    assert any("anti-i2v removes more identity than RGB PGD" in v for v in report.verdicts)
    assert any("rank 4 of 5" in v and "no better than chance" in v for v in report.verdicts)
    # ΔE 2 lies below the 4/255 cloaks of the first portrait (ΔE 2.0 exactly) and above none
    assert report.arms["anti-i2v"]["at_delta_e"]["2"]["n"] == 1
    back = StudyReport.from_json(json.loads(json.dumps(report.to_json())))
    assert back == report
    readme = render_readme(report, protocol)
    assert report.verdicts[0] in readme and "| anti-i2v - rgb-pgd (" in readme


def sidecar_of(out: Path, arm: str) -> dict:
    """The first cloak sidecar of `arm` in a study folder."""
    return json.loads(next((out / "cloaks" / arm).rglob("*.json")).read_text())


# --- one whole study from the CLI ----------------------------------------------------------

# Every arm on two portraits at two budgets, one cloak seed and two generation seeds, read at
# visibilities two sign steps reach.
TINY = ["--judge", "mini-identity", "--selection", "1", "--random-layers", "2", "--budgets", "1,2",
        "--steps", "2", "--pilot-steps", "1", "--eval-steps", "1", "--reps", "100",
        "--cloak-seeds", "1", "--delta-e", "0.3,0.4,0.5", "--headline-delta-e", "0.4"]  # fmt: skip


@pytest.mark.slow  # about 2 minutes on one core
def test_a_tiny_study_runs_end_to_end_and_refuses_a_changed_protocol(
    tmp_path, portraits, portrait_masks
):
    from anti_i2v.experiments.study.config import DEFAULT_ARMS

    out = tmp_path / "study"
    later = ("attention-layers", "attention-target", "unrolled", "face-region")
    arms = ["--arms", ",".join((*DEFAULT_ARMS, *later)), "--masks", str(portrait_masks)]
    result = runner.invoke(
        app, ["study", "tiny:svd", str(portraits), "--out", str(out), *TINY, *arms]
    )
    assert result.exit_code == 0, result.output
    assert "predicted cost" in result.output
    protocol = json.loads((out / "protocol.json").read_text())
    assert len(protocol["split"]["selection"]) == 1 and len(protocol["split"]["evaluation"]) == 2
    assert not set(protocol["split"]["selection"]) & set(protocol["split"]["evaluation"])
    report = StudyReport.from_json(json.loads((out / "report.json").read_text()))
    assert set(report.arms) >= {"random-noise", "rgb-pgd", "colour-space", "profile-layers",
                                "random-layers-0", "random-layers-1", "random-layers", "pilot-layers",
                                "attention-layers", "attention-target", "anti-i2v",
                                "face-region", "unrolled"}  # fmt: skip
    assert report.photos == 2 and report.primary and report.verdicts
    assert set(report.layers) == {
        "profile-layers",
        "random-layers-0",
        "random-layers-1",
        "pilot-layers",
        "attention-layers",
    }
    # the attention arm differs from the profile in its anchors only, chosen by the share
    attention = json.loads((out / "attention" / "attention.json").read_text())
    assert attention["photos"] == list(protocol["split"]["selection"])
    assert (
        report.layers["attention-layers"]["collapse"] == report.layers["profile-layers"]["collapse"]
    )
    assert {(c["a"], c["b"]) for c in protocol["analysis"]["comparisons"]} >= {
        ("attention-layers", "rgb-pgd"),
        ("attention-layers", "random-layers"),
        ("attention-layers", "profile-layers"),
        ("attention-target", "colour-space"),
        ("face-region", "anti-i2v"),
        ("unrolled", "colour-space"),
    }
    assert sidecar_of(out, "unrolled")["settings"]["losses"] == ["unrolled"]
    # the attention lever's cloaks carry its term, weighted as registered, on the share's anchors
    sidecar = json.loads(next((out / "cloaks" / "attention-target").rglob("*.json")).read_text())
    assert sidecar["settings"]["losses"] == ["diffusion", "attention=10"]
    assert sidecar["anchor_layers"] == report.layers["attention-layers"]["anchors"]
    # the region lever's cloaks are full Anti-I2V, weighted towards the face of --masks
    region = json.loads(next((out / "cloaks" / "face-region").rglob("*.json")).read_text())
    assert region["settings"]["region"] == "masks" and region["region_sha256"]
    assert region["settings"]["weights"] == sidecar_of(out, "anti-i2v")["settings"]["weights"]
    assert {a["name"]: a.get("region") for a in protocol["arms"]}["face-region"] == 0.25
    assert "region" not in {a["name"]: a for a in protocol["arms"]}["anti-i2v"]
    readme = (out / "README.md").read_text()
    assert readme.startswith("# Study: tiny:svd") and report.verdicts[0] in readme
    assert "anti-i2v study tiny:svd" in readme and str(tmp_path) not in readme  # no user paths
    assert "| face-region | anti-i2v | its own, change towards the face (floor 0.25) |" in readme
    for name in ("portraits.csv", "results.csv", "frontier.png", "cost.json"):
        assert (out / name).is_file()
    rows = EvalRow.read_csv(out / "results.csv")
    assert {r.seed for r in rows} == {0, 1} and all(
        r.cloak_delta_e_p95 >= 0 for r in rows if r.method != "clean"
    )
    # The answer is a function of the files it was written from: re-analysed, the same bytes
    # (the stages' own resume is tested with protect and evaluate)
    again = replace(analyse(rows, protocol, report.layers), command=report.command)
    assert json.dumps(again.to_json(), indent=2) + "\n" == (out / "report.json").read_text()
    changed = runner.invoke(
        app, ["study", "tiny:svd", str(portraits), "--out", str(out), *TINY, *arms, "--steps", "3"]
    )
    assert changed.exit_code == 2 and "registered with another 'steps'" in changed.output


@pytest.mark.parametrize(
    ("fast_slope", "says"),
    [(0.03, "no shortfall"), (0.005, "falls short"), (0.06, "does better")],
)
def test_the_fast_levers_verdict_says_whether_it_reaches_the_full_cloak(tmp_path, fast_slope, says):
    cfg = StudyConfig(model="tiny:svd", photos="p", out="o", budgets=(4, 8), arms=("rgb-pgd", "anti-i2v"),
                      cloak_seeds=1, generation_seeds=1, reps=300, steps=40, fast_steps=10)  # fmt: skip
    protocol = build_protocol(
        cfg, split_photos(_photos(tmp_path, 10), cfg), "j", "j" * 64, "w" * 64
    )
    rng = np.random.default_rng(2)
    rows = [
        _row(f"e{i}", cloak_label(arm, b, 0), 0, b / 2 * (1 + 0.05 * i),
             slope * b / 2 * (1 + 0.05 * i) + 0.001 * rng.standard_normal())
        for arm, slope in (("rgb-pgd", 0.01), ("anti-i2v", 0.03), ("anti-i2v-fast", fast_slope))
        for i in range(8) for b in (4, 8)
    ]  # fmt: skip
    report = analyse(
        rows, protocol, {"profile-layers": {"collapse": [], "anchors": [], "timesteps": [500]}}
    )
    line = next(v for v in report.verdicts if v.startswith("The fast lever"))
    assert says in line


def test_studies_registered_before_the_attention_arm_rebuild_the_same_protocol(tmp_path):
    """The shipped study's protocol, rebuilt from its own options by today's code, is equal key
    for key: the attention arm is asked for by name, and a study that does not ask keeps its."""
    from anti_i2v.experiments.study.config import DEFAULT_ARMS
    from anti_i2v.experiments.study.protocol import Split

    shipped = json.loads(Path("artifacts/studies/mini-svd-v2/protocol.json").read_text())
    assert "attention-layers" not in DEFAULT_ARMS
    cfg = StudyConfig(
        model=shipped["model"], photos=str(tmp_path), out=str(tmp_path / "s"), selection=4,
        random_layers=3, budgets=(4.0, 8.0, 14.0), steps=30, pilot_steps=20, cloak_seeds=2,
        generation_seeds=1,
    )  # fmt: skip
    protocol = build_protocol(
        cfg, Split(**shipped["split"]), shipped["judge"], shipped["judge_sha256"],
        shipped["weights_sha256"],
    )  # fmt: skip
    for key in ("arms", "layers", "analysis"):
        assert protocol[key] == shipped[key], key
