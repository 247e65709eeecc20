"""The efficacy experiments, end to end on one portrait and a tiny model: each writes its summary
in the shipped format, read through evaluate's typed rows (their full runs: docs/efficacy.md)."""

from __future__ import annotations

import argparse
import json

import pytest

from anti_i2v.evaluate.results import EvalRow, paired_difference, per_photo
from anti_i2v.experiments import layer_ablation, layer_pilot
from anti_i2v.reports import ablation_readme, pilot_readme


def test_typed_rows_read_back_what_evaluate_wrote_and_pair_by_photo(tmp_path):
    from anti_i2v.evaluate.results import write_csv

    def row(photo, method, ism):
        return EvalRow(photo, method, "", 8.0, "none", "m", 0, "judge", 0.9, ism,
                       *(float("nan"),) * 6, 0.9, float("nan"), float("nan"), float("nan"))  # fmt: skip

    rows = [row("a", "x", 0.6), row("b", "x", 0.8), row("a", "y", 0.9), row("b", "y", 0.9)]
    write_csv(rows, tmp_path / "r.csv")
    back = EvalRow.read_csv(tmp_path / "r.csv")
    assert [(r.photo, r.method, r.seed, r.ism_protected) for r in back] == [
        (r.photo, r.method, r.seed, r.ism_protected) for r in rows
    ]
    per = per_photo(back)
    assert per["judge", "x"] == pytest.approx({"a": 1 / 3, "b": 1 / 9})
    diff = paired_difference(per["judge", "x"], per["judge", "y"])
    assert diff["diff"] == pytest.approx((1 / 3 + 1 / 9) / 2) and diff["wins"] == 2


@pytest.mark.slow  # cloaks and videos of one portrait with five layer choices, then the pilot
def test_layer_ablation_and_pilot_run_on_one_portrait(tiny_profile, tmp_path):
    ablation = layer_ablation.main(
        ["--profile", str(tiny_profile), "--count", "1", "--steps", "1", "--random", "1",
         "--objectives", "irc-ira", "--eval-steps", "2", "--out", str(tmp_path / "ablation")]
    )  # fmt: skip
    summary = json.loads(ablation.read_text())
    assert set(summary["layers"]) == {"profile", "random-0", "inverted", "last"}
    arm = layer_ablation.Comparison.from_json(summary["irc-ira"]["mini-identity"])
    assert arm.n == 1 and set(arm.mean_drop) == set(summary["layers"])
    assert f"profile - {arm.median_random}" in arm.paired
    assert "## objective irc-ira, judge mini-identity (1 portraits)" in ablation_readme(
        ablation.parent
    )
    pilot = layer_pilot.main(
        ["--profile", str(tiny_profile), "--count", "1", "--steps", "1", "--eval-steps", "2",
         "--against", str(ablation.parent), "--out", str(tmp_path / "pilot")]
    )  # fmt: skip
    found = json.loads(pilot.read_text())
    assert found["anchors"] and set(found["pilot"]["scores"]) >= set(found["anchors"])
    minus = found["irc-ira"]["mini-identity"]["minus"]
    assert set(minus) == set(summary["layers"])  # paired with every variant of the ablation
    assert "pilot minus" in pilot_readme(pilot.parent)


@pytest.mark.slow  # each lever: plain and lever cloaks of one portrait, re-cloaked at two budgets
@pytest.mark.parametrize("lever", ["eot", "ensemble", "vae-ira"])
def test_each_lever_runs_on_one_portrait(lever, tiny_profile, tmp_path):
    from anti_i2v.experiments import levers

    args = ["--model", "tiny:cogvideox", "--profile", str(tiny_profile), "--count", "1",
            "--steps", "1", "--reference-steps", "2", "--budgets", "4,8", "--eval-steps", "2",
            "--out", str(tmp_path / lever)]  # fmt: skip
    # the ensemble's second model needs a profile of its own
    report = levers.main([lever, *args, *(_second(tmp_path) if lever == "ensemble" else [])])
    summary = json.loads((report / "summary.json").read_text())
    assert summary["frontier"]["budgets"] == [4.0, 8.0]
    methods = {e["method"] for e in summary["table"]}
    assert len(methods - {"clean"}) == 2, methods  # plain Anti-I2V and the lever's cloaks
    if lever == "eot":
        assert set(summary["config"]["distortions"]) == set(levers.EOT)
    if lever == "ensemble":
        assert {e["eval_model"] for e in summary["table"]} == {"tiny:cogvideox", "tiny:svd"}


def _second(tmp_path) -> list[str]:
    """tiny:svd and a profile scored for it on a rendered portrait (probe and analyse only)."""
    from anti_i2v import api
    from anti_i2v.world.dataset import render_dataset

    render_dataset(tmp_path / "w", 1, 3, "heldout", frames=1, photos=tmp_path / "p")
    store = str(tmp_path / "svd.zarr")
    api.probe(
        api.ProbeConfig(
            model="tiny:svd", images=(str(tmp_path / "p"),), out=store, timesteps=(300, 700)
        )
    )
    api.analyse(store, tmp_path / "svd.json")
    return ["--second", "tiny:svd", "--second-profile", str(tmp_path / "svd.json")]


@pytest.mark.slow  # a few tiny cloaks per variant
def test_the_pilots_cloak_selection_photos_only_and_write_the_options_they_chose(
    tmp_path, portraits, portrait_masks, tiny_profile
):
    """Both levers' pilots take the study's seeded split, cloak its selection photo alone, and
    write the study options of the variant their rule picks."""
    from anti_i2v.experiments import optimiser_pilot, region_pilot

    out = tmp_path / "region"
    pilot = region_pilot.main(
        ["tiny:cogvideox", str(portraits), "--profile", str(tiny_profile), "--masks",
         str(portrait_masks), "--selection", "1", "--steps", "2", "--budget", "4",
         "--floors", "0.5,1", "--out", str(out)]
    )  # fmt: skip
    assert [p.stem for p in (out / "selection").iterdir()] == pilot["selection"]
    assert len(pilot["selection"]) == 1
    limit = pilot["variants"]["rgb-pgd"]["p95_over_mean"]
    ok = [f for f in (0.5, 1.0) if pilot["variants"][f"region-{f:g}"]["p95_over_mean"] <= limit]
    assert pilot["acceptable"] == ok and pilot["choice"] == (ok[0] if ok else 1.0)
    assert (out / "study-options.txt").read_text() == f"--region-floor {pilot['choice']:g}\n"
    fast = tmp_path / "fast"  # the cost lever's pilot: the same split, the same copy
    optimiser_pilot.run(
        argparse.Namespace(model="tiny:cogvideox", photos=str(portraits), profile=str(tiny_profile),
                           selection=1, split_seed=0, steps=4, budget=4.0, out=str(fast))
    )  # fmt: skip
    assert [p.stem for p in (fast / "selection").iterdir()] == pilot["selection"]
    assert (fast / "study-options.txt").read_text().startswith("--fast-steps 1 ")
