"""The second reliability round's cases: outputs that never replace a stranger's file, resumes
that always resume, results that are never silently wrong, and one line instead of a traceback.

Each test failed on the code before this round (the issue lists the case it covers).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import protect.in_place as in_place
from anti_i2v_cli import app
from protect.sidecar import Sidecar

NOISE = ("--method", "random-noise")


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def said(res, needle: str) -> bool:
    """Whether the output says `needle`, however the console wrapped it."""
    return "".join(needle.split()) in "".join(res.output.split())


def one_line(res, code: int, *needles: str) -> None:
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    for needle in needles:
        assert said(res, needle), res.output


@pytest.fixture
def photos(tmp_path, portraits) -> Path:
    d = tmp_path / "photos"
    shutil.copytree(portraits, d)
    return d


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# --- protect --out never replaces a file it did not write for this photo -------------------------


def test_protect_leaves_an_unrelated_file_of_the_cloaks_name_alone(tmp_path, photos):
    out = tmp_path / "out"
    out.mkdir()
    stranger = np.full((64, 64, 3), 200, np.uint8)
    Image.fromarray(stranger).save(out / "p10.png")  # somebody's own p10.png, no sidecar
    (out / "p20.json").write_text('{"mine": true}')  # and somebody's p20.json
    before = _files(out)
    res = cli("protect", "tiny:cogvideox", str(photos), "--out", str(out), *NOISE)
    assert res.exit_code == 0, res.output  # p30 is cloaked: one clash never stops the batch
    assert said(res, "p10.png already exists and anti-i2v did not write it")
    assert said(res, "p20.json already exists")
    for name, data in before.items():
        assert (out / name).read_bytes() == data, name
    assert (out / "p30.png").exists() and Sidecar.read(out / "p30.json") is not None


def test_protect_refuses_to_replace_another_photos_cloak_of_the_same_name(tmp_path, photos):
    out = tmp_path / "out"
    assert (
        cli(
            "protect", "tiny:cogvideox", str(photos / "p10.png"), "--out", str(out), *NOISE
        ).exit_code
        == 0
    )
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(photos / "p20.png", other / "p10.png")  # a different portrait, the same name
    before = _files(out)
    res = cli("protect", "tiny:cogvideox", str(other), "--out", str(out), *NOISE)
    one_line(res, 2, "cloak of another photo named p10")
    assert _files(out) == before


def test_protect_redoes_its_own_cloak_with_new_settings(tmp_path, photos):
    out = tmp_path / "out"
    args = ("protect", "tiny:cogvideox", str(photos / "p10.png"), "--out", str(out), *NOISE)
    assert cli(*args).exit_code == 0
    res = cli(*args, "--eps", "4")
    assert res.exit_code == 0 and "PSNR" in res.output, res.output
    assert Sidecar.read(out / "p10.json").settings["eps"] == 4


@pytest.mark.parametrize("out", ["", "memory://cloaks"])
def test_protect_refuses_an_empty_or_vanishing_out(photos, out, no_model):
    res = cli("protect", "tiny:cogvideox", str(photos), "--out", out, *NOISE)
    one_line(res, 2, "--out")


def test_protect_where_every_photo_fails_exits_non_zero(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "fake.png").write_bytes(b"not an image")
    (bad / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bad / "tiny.png")
    res = cli("protect", "tiny:cogvideox", str(bad), "--out", str(tmp_path / "out"), *NOISE)
    one_line(res, 2, "no photo was cloaked")


# --- --in-place, killed at every step, resumes to the uninterrupted result -----------------------

STEPS = ("staged", "journal", "original moved", "cloak placed", "sidecar")


@pytest.fixture(scope="module")
def in_place_reference(tmp_path_factory, portraits) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("ref") / "photos"
    shutil.copytree(portraits, d)
    res = cli("protect", "tiny:cogvideox", str(d), "--out", str(d), "--in-place", *NOISE)
    assert res.exit_code == 0, res.output
    return _files(d)


@pytest.mark.slow  # two protect runs per kill point
@pytest.mark.parametrize("step", STEPS)
def test_in_place_killed_at_each_step_resumes_to_the_same_files(
    photos, step, in_place_reference, monkeypatch
):
    def kill(name: str) -> None:
        if name == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(in_place, "_step", kill)
    args = ("protect", "tiny:cogvideox", str(photos), "--out", str(photos), "--in-place", *NOISE)
    first = cli(*args)
    assert first.exit_code == 130, first.output
    monkeypatch.setattr(in_place, "_step", lambda name: None)
    res = cli(*args)
    assert res.exit_code == 0, res.output
    after = _files(photos)
    assert after.keys() == in_place_reference.keys(), sorted(after)  # no journal or staging left
    for name, data in in_place_reference.items():
        if not name.endswith(".json"):
            assert after[name] == data, name
    for name in ("p10", "p20", "p30"):  # the originals are the photos, byte for byte
        side = Sidecar.read(photos / f"{name}.json")
        assert side is not None and not side.tampered()
        assert in_place.file_sha256(photos / f"{name}.png") == side.cloak_sha256


def test_an_old_versions_half_finished_in_place_cloak_is_redone_from_the_original(photos):
    # What a kill between cloak and sidecar left before the journal existed: a cloak beside its
    # kept original, no sidecar. The run it told users to repeat refused the name clash.
    original = (photos / "p10.png").read_bytes()
    shutil.move(photos / "p10.png", photos / "p10.original.png")
    pixels = np.asarray(Image.open(photos / "p10.original.png")).astype(int)
    Image.fromarray(np.clip(pixels + 3, 0, 255).astype(np.uint8)).save(photos / "p10.png")
    res = cli("protect", "tiny:cogvideox", str(photos), "--out", str(photos), "--in-place", *NOISE)
    assert res.exit_code == 0, res.output
    assert (photos / "p10.original.png").read_bytes() == original
    side = Sidecar.read(photos / "p10.json")
    assert side.photo_sha256 == in_place.file_sha256(photos / "p10.original.png")


def test_in_place_never_takes_an_unrelated_photo_for_a_half_finished_cloak(photos, no_model):
    shutil.move(photos / "p10.png", photos / "p10.original.png")
    shutil.copy(photos / "p20.png", photos / "p10.png")  # a new, different p10.png
    before = _files(photos)
    res = cli("protect", "tiny:cogvideox", str(photos), "--out", str(photos), "--in-place", *NOISE)
    one_line(res, 2, "is not a cloak of it")
    assert _files(photos) == before


def test_in_place_with_the_original_already_moved_by_another_run_is_skipped(photos, monkeypatch):
    import protect.run as protect_run

    real = protect_run._ready

    def other_run_finishes_first(job, run, dest):
        photo = real(job, run, dest)
        if job.name == "p10":  # between this run's read and its lock, another run cloaked it
            shutil.copy(job.source, job.keep_original_as)
        return photo

    monkeypatch.setattr(protect_run, "_ready", other_run_finishes_first)
    res = cli("protect", "tiny:cogvideox", str(photos), "--out", str(photos), "--in-place", *NOISE)
    assert res.exit_code == 0, res.output
    assert said(res, "another run cloaked it in place")
    assert "move it away" not in res.output


# --- evaluate never scores a cloak it cannot vouch for --------------------------------------------


@pytest.fixture
def cloaked(tmp_path, photos) -> Path:
    out = tmp_path / "cloaks"
    res = cli("protect", "tiny:cogvideox", str(photos), "--out", str(out), *NOISE)
    assert res.exit_code == 0, res.output
    return out


def _matched(photos: Path, *protected: Path):
    from protect.config import EvaluateConfig
    from protect.evaluate.run import match_photos

    cfg = EvaluateConfig(
        model="tiny:cogvideox",
        clean=str(photos),
        protected=tuple(map(str, protected)),
        out=str(photos.parent / "report"),
    )
    return match_photos(cfg)


def test_evaluate_leaves_out_a_replaced_cloak_a_changed_photo_and_an_edited_sidecar(
    photos, cloaked, capsys
):
    assert sorted(_matched(photos, cloaked)[0]) == ["p10", "p20", "p30"]
    shutil.copy(photos / "p30.png", cloaked / "p10.png")  # another person's photo, same name
    side = json.loads((cloaked / "p20.json").read_text())
    side["settings"]["eps"] = 4  # relabelled by hand
    (cloaked / "p20.json").write_text(json.dumps(side))
    clean, _ = _matched(photos, cloaked)
    said_ = capsys.readouterr().err
    assert sorted(clean) == ["p30"]
    assert "not the PNG protect wrote" in said_ and "edited after protect wrote it" in said_
    # A clean photo that is no longer the one the cloak was made from
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(photos / "p30.png")
    res = cli("evaluate", "tiny:cogvideox", "--clean", str(photos), "--protected", str(cloaked),
              "--out", str(photos.parent / "report"))  # fmt: skip
    one_line(res, 2, "made from another photo than p30.png", "no photo of")


def test_evaluate_refuses_a_folder_mixing_budgets_and_names_the_odd_ones(photos, cloaked):
    res = cli("protect", "tiny:cogvideox", str(photos / "p20.png"), "--out", str(cloaked),
              *NOISE, "--eps", "4")  # fmt: skip
    assert res.exit_code == 0, res.output
    res = cli("evaluate", "tiny:cogvideox", "--clean", str(photos), "--protected", str(cloaked),
              "--out", str(photos.parent / "report"))  # fmt: skip
    one_line(res, 2, "mixes cloaks made with different models or settings", "but not p20")


@pytest.mark.parametrize("where", ["clean", "protected", "inside"])
def test_evaluate_refuses_an_input_folder_as_out(photos, cloaked, where, no_model):
    (photos / "index.html").write_text("<p>mine</p>")
    out = {"clean": photos, "protected": cloaked, "inside": photos / "report"}[where]
    res = cli("evaluate", "tiny:cogvideox", "--clean", str(photos), "--protected", str(cloaked),
              "--out", str(out))  # fmt: skip
    one_line(res, 2, "is inside the")
    assert (photos / "index.html").read_text() == "<p>mine</p>"


def test_robustness_share_is_absent_over_a_drop_of_about_zero():
    from protect.config import EvaluateConfig
    from protect.evaluate.results import EvalRow, summarise

    nan = float("nan")

    def row(method, dist, ism):
        return EvalRow("p", method, "", 8.0, dist, "m", 0, "judge", 0.9, ism,
                       *(nan,) * 6, 0.9, nan, nan, nan)  # fmt: skip

    rows = [row("clean", "none", 0.9), row("noise", "none", 0.8999), row("noise", "jpeg75", 0.85)]
    rows += [row("pgd", "none", 0.7), row("pgd", "jpeg75", 0.8)]
    cfg = EvaluateConfig(model="m", clean=".", protected=("x",), out="r")
    table = summarise(rows, cfg)["table"]
    share = {(e["method"], e["distortion"]): e["ism_drop_surviving"] for e in table}
    assert share["noise", "jpeg75"] is None  # was -49900%
    assert share["pgd", "jpeg75"] == pytest.approx(0.5)
