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
from conftest import file_bytes as _files
from PIL import Image
from typer.testing import CliRunner

import anti_i2v.protect.in_place as in_place
from anti_i2v.cli import app
from anti_i2v.core.common import ToolkitError
from anti_i2v.protect.sidecar import Sidecar

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
    import anti_i2v.protect.run as protect_run

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
    from anti_i2v.evaluate.run import match_photos
    from anti_i2v.protect.config import EvaluateConfig

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


def test_evaluate_leaves_out_every_cloak_when_every_sidecar_was_edited(photos, cloaked):
    # With no untouched sidecar left, the folder must not pass for another tool's cloaks
    for side in cloaked.glob("*.json"):
        data = json.loads(side.read_text())
        data["settings"]["eps"] = 4
        side.write_text(json.dumps(data))
    with pytest.raises(ToolkitError, match="no photo of"):
        _matched(photos, cloaked)


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
    from anti_i2v.evaluate.results import EvalRow, summarise
    from anti_i2v.protect.config import EvaluateConfig

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


# --- stores: URLs that vanish or cannot be reached, full disks, two creators at once -------------


def test_probe_refuses_a_memory_url_whose_store_would_vanish(portraits, no_model):
    res = cli("probe", "tiny:cogvideox", str(portraits), "--out", "memory://m/acts.zarr")
    one_line(res, 2, "would vanish when it exits")


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


@pytest.mark.parametrize("command", ["probe", "analyse", "explore"])
def test_an_unreachable_s3_endpoint_is_one_line_at_once(command, portraits, monkeypatch, no_model):
    import time

    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    s3fs.S3FileSystem.clear_instance_cache()
    url = "s3://acts/run/acts.zarr"
    args = {
        "probe": ["probe", "tiny:cogvideox", str(portraits), "--out", url],
        "analyse": ["analyse", url, "--out", str(portraits.parent / "p.json")],
        "explore": ["explore", url, "--out", str(portraits.parent / "never")],
    }[command]
    started = time.monotonic()
    res = cli(*args)
    one_line(res, 2, "cannot reach the endpoint")
    assert "does not exist" not in res.output and time.monotonic() - started < 15
    s3fs.S3FileSystem.clear_instance_cache()


def _attrs(names=("a", "b")):
    from anti_i2v.probe.store import StoreAttrs

    samples = [{"name": n, "sha256": n} for n in names]
    return StoreAttrs("m", "cogvideox", "c", ["blocks.0"], [500], [0], samples)


def test_two_creators_of_one_store_at_once_both_get_the_store(tmp_path):
    import threading

    from anti_i2v.probe.store import create_or_resume

    for i in range(20):
        where = tmp_path / f"s{i}.zarr"
        errors, go = [], threading.Barrier(2)

        def create(where=where, errors=errors, go=go):
            go.wait()
            try:
                assert create_or_resume(where, _attrs()).attrs == _attrs()
            except Exception as exc:  # a refusal or a traceback in either creator
                errors.append(exc)

        threads = [threading.Thread(target=create) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], errors
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_a_disk_full_while_the_store_is_created_is_one_line_and_resumes(tmp_path, monkeypatch):
    import errno

    import anti_i2v.probe.store as store_mod
    from anti_i2v.probe.store import create_or_resume

    real = store_mod._coordinate

    def full(group, name, values):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(store_mod, "_coordinate", full)
    with pytest.raises(OSError):
        create_or_resume(tmp_path / "s.zarr", _attrs())
    assert not list(tmp_path.iterdir())  # nothing half-made is left at --out
    monkeypatch.setattr(store_mod, "_coordinate", real)
    assert create_or_resume(tmp_path / "s.zarr", _attrs()).attrs == _attrs()
    # a store an older version left half-made (no attributes, only its first arrays) is remade
    import zarr

    zarr.open_group(str(tmp_path / "old.zarr"), mode="w").create_array(
        "completed", shape=(1, 2), dtype="uint8"
    )
    assert create_or_resume(tmp_path / "old.zarr", _attrs()).attrs == _attrs()


@pytest.mark.parametrize("command", ["probe", "protect"])
def test_a_full_disk_during_a_run_is_one_line(command, tmp_path, portraits, monkeypatch):
    import errno

    import anti_i2v.probe.store as store_mod
    import anti_i2v.protect.run as protect_run

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "f"))

    if command == "probe":
        monkeypatch.setattr(store_mod, "mark_done", full)
        args = ["probe", "tiny:cogvideox", str(portraits), "--out", str(tmp_path / "out")]
    else:
        monkeypatch.setattr(protect_run, "write_png_uint8", full)
        args = ["protect", "tiny:cogvideox", str(portraits), "--out", str(tmp_path / "out"), *NOISE]
    res = cli(*args)
    one_line(res, 1, "no space left on the device", "run the same command to resume")


# --- names: not UTF-8, too long; folders where files belong ----------------------------------------


def test_a_photo_name_that_is_not_utf8_is_skipped_and_the_rest_probed(tmp_path, portraits):
    import os

    d = tmp_path / "photos"
    shutil.copytree(portraits, d)
    bad = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not UTF-8
    shutil.copy(portraits / "p10.png", d / bad)
    res = cli("probe", "tiny:cogvideox", str(d), "--out", str(tmp_path / "a.zarr"),
              "--timesteps", "500")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert said(res, "not valid UTF-8")
    from anti_i2v.probe.store import open_store

    store = open_store(tmp_path / "a.zarr")
    assert [s["name"] for s in store.attrs.samples] == ["p10", "p20", "p30"]


def test_evaluate_leaves_out_a_clean_photo_whose_name_is_not_utf8(photos, cloaked):
    import os

    shutil.copy(photos / "p10.png", photos / os.fsdecode(b"caf\xe9.png"))
    clean, _ = _matched(photos, cloaked)
    assert sorted(clean) == ["p10", "p20", "p30"]


def test_a_name_too_long_for_the_toolkits_files_fails_alone(tmp_path, photos):
    long = "x" * 245
    shutil.copy(photos / "p10.png", photos / f"{long}.png")
    res = cli("protect", "tiny:cogvideox", str(photos), "--out", str(tmp_path / "out"), *NOISE)
    assert res.exit_code == 0, res.output  # the other three are cloaked
    assert said(res, "rename it shorter")
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png") if ".loss" not in p.name) == [
        "p10.png", "p20.png", "p30.png"
    ]  # fmt: skip


def test_an_out_with_a_name_over_the_file_system_limit_is_one_line(tmp_path, photos, no_model):
    res = cli(
        "protect", "tiny:cogvideox", str(photos), "--out", str(tmp_path / ("o" * 300)), *NOISE
    )
    one_line(res, 2, "over the file system's limit")


def test_folders_where_files_belong_are_named_as_folders(tmp_path, photos, no_model):
    res = cli("protect", "tiny:cogvideox", str(photos), "--out", str(tmp_path / "o"), *NOISE,
              "--target", str(photos))  # fmt: skip
    one_line(res, 2, "it is a folder; pass an image file")
    res = cli("generate", "tiny:cogvideox", str(photos), "--out", str(tmp_path / "v.gif"))
    one_line(res, 2, "it is a folder; pass an image file")
    (tmp_path / "videos.gif").mkdir()
    res = cli(
        "generate", "tiny:cogvideox", str(photos / "p10.png"), "--out", str(tmp_path / "videos.gif")
    )
    one_line(res, 2, "is a folder; give the video's file name")


# --- plan and world render: refusals instead of silent defaults, tracebacks and hangs -------------


def test_plan_refuses_zero_frames_and_broken_configs(tmp_path):
    from anti_i2v.models.registry import REAL_CONFIGS

    one_line(cli("plan", "tiny:cogvideox", "--task", "probe", "--frames", "0"), 2, "--frames")
    bad = tmp_path / "bad"
    shutil.copytree(REAL_CONFIGS / "cogvideox-5b-i2v", bad)
    config = json.loads((bad / "transformer" / "config.json").read_text())
    (bad / "transformer" / "config.json").write_text(json.dumps({**config, "num_layers": "many"}))
    one_line(cli("plan", str(bad)), 2, "cannot build CogVideoXTransformer3DModel from its config")
    shutil.rmtree(bad / "transformer")
    one_line(cli("plan", str(bad)), 2, "has no transformer/config.json")


def test_world_render_refuses_a_negative_seed_and_a_count_no_disk_holds(tmp_path):
    one_line(cli("world", "render", "--out", str(tmp_path / "w"), "--seed", "-5"), 2, "--seed -5")
    res = cli("world", "render", "--out", str(tmp_path / "w"), "--count", "1000000000000")
    one_line(res, 2, "--count 1000000000000", "render fewer")
    assert not (tmp_path / "w").exists()


def test_analyse_reruns_a_pass_that_lost_workers_and_then_says_so_in_one_line(
    tiny_profile, tmp_path, monkeypatch
):
    import contextlib
    from concurrent.futures import CancelledError

    import anti_i2v.analyses.analyse as analyse_mod
    import anti_i2v.analyses.run as run_mod

    store = str(tiny_profile.parent / "activations.zarr")
    passes = {"n": 0, "fail": 2}

    def one_pass(client, task, cells, advance):
        # a cluster whose workers die in the first `fail` passes; then it scores as one process
        passes["n"] += 1
        if passes["n"] <= passes["fail"]:
            raise CancelledError("lost its worker")
        return [analyse_mod.score_layer(task, layer, ti) for layer, ti in cells]

    monkeypatch.setattr(analyse_mod, "_one_pass", one_pass)
    monkeypatch.setattr(run_mod, "dask_client", lambda w, s: contextlib.nullcontext(object()))
    res = cli("analyse", store, "--out", str(tmp_path / "p.json"), "--workers", "2")
    assert res.exit_code == 0 and passes["n"] == 3, res.output
    # the same profile as adapt scored in one process
    assert (tmp_path / "p.json").read_bytes() == tiny_profile.read_bytes()
    passes.update(n=0, fail=99)
    res = cli("analyse", store, "--out", str(tmp_path / "q.json"), "--workers", "2")
    one_line(res, 2, "the Dask workers kept dying while scoring")
    assert passes["n"] == analyse_mod.CLUSTER_ATTEMPTS and not (tmp_path / "q.json").exists()
