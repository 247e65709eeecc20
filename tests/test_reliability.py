"""Bad inputs and faults, as a hostile but realistic user makes them (the reliability issue's cases).

Every case here failed before: it lost data, wrote a wrong result with exit code 0, or ended in
a traceback. Refusals must come as one line with exit code 2, before any model loads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import file_bytes as _bytes
from PIL import Image
from typer.testing import CliRunner

import anti_i2v.protect.run as protect_run
from anti_i2v.analyses.profile import load_profile
from anti_i2v.cli import app
from anti_i2v.protect.inputs import photo_lock
from anti_i2v.protect.run import ProtectConfig, run_protect
from anti_i2v.protect.sidecar import Sidecar


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _one_line_refusal(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    error = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert error, res.output
    for needle in needles:
        assert needle in res.output.replace("\n", " "), res.output


# --- data loss -------------------------------------------------------------------------------


@pytest.mark.parametrize("sub", ["", "cloaks"])
def test_out_inside_an_input_folder_is_refused_and_originals_stay(photos, sub, no_model):
    before = _bytes(photos)
    res = cli(
        "protect",
        "tiny:cogvideox",
        str(photos),
        "--out",
        str(photos / sub),
        "--method",
        "random-noise",
    )
    _one_line_refusal(res, "inside the input folder", "--in-place")
    assert _bytes(photos) == before


def test_out_equal_to_the_folder_of_a_photo_given_as_a_file_is_refused(photos, no_model):
    res = cli(
        "protect",
        "tiny:cogvideox",
        str(photos / "p10.png"),
        "--out",
        str(photos),
        "--method",
        "random-noise",
    )
    _one_line_refusal(res, "inside the input folder")


def test_in_place_keeps_each_original_and_a_rerun_cloaks_nothing(photos):
    before = _bytes(photos)
    res = cli(
        "protect",
        "tiny:cogvideox",
        str(photos),
        "--out",
        str(photos),
        "--in-place",
        "--method",
        "random-noise",
    )
    assert res.exit_code == 0, res.output
    for name, data in before.items():
        stem = Path(name).stem
        assert (photos / f"{stem}.original.png").read_bytes() == data  # the original, byte for byte
        assert (photos / f"{stem}.png").read_bytes() != data  # its cloak took the name
        side = json.loads((photos / f"{stem}.json").read_text())
        assert side["original"] == f"{stem}.original.png" and side["photo"] == name
    after = _bytes(photos)
    res = cli(
        "protect",
        "tiny:cogvideox",
        str(photos),
        "--out",
        str(photos),
        "--in-place",
        "--method",
        "random-noise",
    )
    assert res.exit_code == 0 and "nothing to cloak" in res.output.replace("\n", " ")
    assert _bytes(photos) == after  # no cloak of a cloak, no *.loss.loss.png


def test_toolkit_outputs_are_never_inputs(tmp_path, photos, tiny_profile):
    out = tmp_path / "out"
    [r] = run_protect(
        ProtectConfig(
            model="tiny:cogvideox",
            images=(str(photos / "p10.png"),),
            profile=str(tiny_profile),
            out=str(out),
            steps=2,
            reference_steps=2,
        )
    )
    assert r.status == "done" and (out / "p10.loss.png").exists()
    (out / "p10.original.png").write_bytes((photos / "p10.png").read_bytes())
    res = cli(
        "protect",
        "tiny:cogvideox",
        str(out),
        "--out",
        str(tmp_path / "again"),
        "--method",
        "random-noise",
    )
    assert res.exit_code == 0 and "nothing to cloak" in res.output.replace("\n", " ")
    assert not (tmp_path / "again").exists()


def test_two_inputs_with_one_cloak_name_are_refused_before_any_work(tmp_path, photos, no_model):
    Image.open(photos / "p10.png").save(photos / "p10.jpg")
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(photos / "p20.png", other / "p20.png")
    for args in ([str(photos)], [str(photos / "p20.png"), str(other)]):
        res = cli(
            "protect",
            "tiny:cogvideox",
            *args,
            "--out",
            str(tmp_path / "o"),
            "--method",
            "random-noise",
        )
        _one_line_refusal(res, "would both be cloaked as")
        assert not (tmp_path / "o").exists()


# --- wrong results with exit code 0, and tracebacks: refused before any model work ----------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--eps", "0"], "--eps 0"),
        (["--eps", "-1"], "--eps -1"),
        (["--eps", "300"], "--eps 300"),
        (["--eps", "nan"], "--eps nan"),
        (["--steps", "0"], "--steps 0"),
        (["--frames", "0"], "--frames 0"),
        (["--alpha", "0"], "--alpha 0"),
        (["--optimizer", "adam"], "--optimizer adam"),
        (["--alpha-decay", "linear"], "--alpha-decay linear"),
        (["--space", "bogus"], "--space bogus"),
        (["--losses", "bogus"], "--losses bogus"),
        (["--timesteps", "-1"], "--timesteps -1"),
        (["--timesteps", "5000"], "--timesteps 5000"),
        (["--method", "bogus"], "--method bogus"),
        (["--timesteps", "abc"], "--timesteps 'abc'"),
    ],
)
def test_protect_bad_numbers_and_names(tmp_path, photos, args, needle, no_model):
    res = cli("protect", "tiny:cogvideox", str(photos), "--out", str(tmp_path / "o"), *args)
    _one_line_refusal(res, needle)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--timesteps", "-1"], "--timesteps -1"),
        (["--timesteps", "5000"], "--timesteps 5000"),
        (["--timesteps", "500,500"], "repeated"),
        (["--pool", "0"], "--pool 0"),
        (["--frames", "0"], "--frames 0"),
        (["--dtype", "bfloat16"], "zarr has no bfloat16"),
        (["--batch-size", "0"], "--batch-size 0"),
    ],
)
def test_probe_bad_numbers(tmp_path, photos, args, needle, no_model):
    res = cli("probe", "tiny:cogvideox", str(photos), "--out", str(tmp_path / "s.zarr"), *args)
    _one_line_refusal(res, needle)
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize("args", [["--steps", "0"], ["--frames", "0"], ["--out-ext"]])
def test_generate_bad_numbers(tmp_path, photos, args, no_model):
    out = tmp_path / ("v.webm" if args == ["--out-ext"] else "v.gif")
    res = cli(
        "generate",
        "tiny:cogvideox",
        str(photos / "p10.png"),
        "--out",
        str(out),
        *([] if args == ["--out-ext"] else args),
    )
    _one_line_refusal(res)
    assert not out.exists()


def test_world_render_refuses_a_file_as_out_and_zero_counts(tmp_path):
    (tmp_path / "f").write_text("x")
    _one_line_refusal(
        cli("world", "render", "--out", str(tmp_path / "f"), "--count", "1"), "is a file"
    )
    _one_line_refusal(
        cli("world", "render", "--out", str(tmp_path / "w"), "--count", "0"), "--count 0"
    )
    assert not (tmp_path / "w").exists()


def test_unwritable_out_is_one_line(tmp_path, photos, no_model):
    # /proc refuses new files even for root, where a chmod-ed folder would not.
    res = cli(
        "protect",
        "tiny:cogvideox",
        str(photos),
        "--out",
        "/proc/anti-i2v-test",
        "--method",
        "random-noise",
    )
    _one_line_refusal(res, "cannot be written")


def test_damaged_model_index_is_one_line(tmp_path, photos):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model_index.json").write_text("{ not json")
    res = cli("probe", str(tmp_path / "m"), str(photos), "--out", str(tmp_path / "s.zarr"))
    _one_line_refusal(res, "model_index.json cannot be read")


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda p: [p], "is a JSON list"),
        (lambda p: {**p, "anchor_layers": p["anchor_layers"][0]}, "anchor_layers must be a list"),
        (lambda p: {**p, "anchor_layers": []}, "anchor_layers is empty"),
        (
            lambda p: {**p, "collapse_layers": ["transformer_blocks.99"]},
            "picks transformer_blocks.99",
        ),
        (lambda p: {**p, "timesteps": [2000]}, "timesteps 2000"),
        (lambda p: {**p, "timesteps": "500"}, "timesteps must be a list"),
    ],
)
def test_bad_profiles_are_refused_before_the_model_loads(
    tmp_path, photos, tiny_profile, edit, needle, no_model
):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(edit(json.loads(tiny_profile.read_text()))))
    res = cli(
        "protect",
        "tiny:cogvideox",
        str(photos),
        "--profile",
        str(bad),
        "--out",
        str(tmp_path / "o"),
    )
    _one_line_refusal(res, needle)
    assert not (tmp_path / "o").exists()


def test_profile_for_another_model_names_the_layers(tmp_path, photos, tiny_profile):
    data = json.loads(tiny_profile.read_text())
    data["layers"] = [*data["layers"], "transformer_blocks.7"]
    (tmp_path / "p.json").write_text(json.dumps(data))
    res = cli(
        "protect",
        "tiny:cogvideox",
        str(photos),
        "--profile",
        str(tmp_path / "p.json"),
        "--out",
        str(tmp_path / "o"),
        "--steps",
        "1",
    )
    _one_line_refusal(res, "layers only in the profile")
    assert not (tmp_path / "o").exists()


def test_evaluate_bad_distortion_and_model_are_refused_before_generation(
    tmp_path, photos, no_model
):
    res = cli(
        "evaluate",
        "tiny:cogvideox",
        "--clean",
        str(photos),
        "--protected",
        str(photos),
        "--distortions",
        "bogus",
        "--out",
        str(tmp_path / "r"),
    )
    _one_line_refusal(res, "--distortions bogus")
    res = cli(
        "evaluate",
        "tiny:cogvideox",
        "--clean",
        str(photos),
        "--protected",
        str(photos),
        "--models",
        "bogus-model",
        "--distortions",
        "",
        "--out",
        str(tmp_path / "r"),
    )
    _one_line_refusal(res, "unknown model 'bogus-model'")
    assert not (tmp_path / "r").exists()


def test_analyse_refuses_zero_anchors(tmp_path):
    res = cli(
        "analyse", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "p.json"), "--anchors", "0"
    )
    _one_line_refusal(res, "--anchors 0")


# --- damaged stores: named, then repaired ------------------------------------------------------


def _chunks(store: Path, layer: str) -> list[Path]:
    return sorted(p for p in (store / layer / "c").rglob("*") if p.is_file())


@pytest.fixture
def probed(tmp_path, portraits):
    store = tmp_path / "s.zarr"
    res = cli(
        "probe", "tiny:cogvideox", str(portraits), "--out", str(store), "--timesteps", "300,700"
    )
    assert res.exit_code == 0, res.output
    res = cli("analyse", str(store), "--out", str(tmp_path / "good.json"))
    assert res.exit_code == 0, res.output
    return store


@pytest.mark.slow  # end to end: analyse, probe --repair, analyse again
@pytest.mark.parametrize("damage", ["missing", "truncated", "random"])
def test_damaged_chunk_is_named_and_probe_repair_restores_the_same_profile(
    tmp_path, portraits, probed, damage
):
    layer = "transformer_blocks.0"
    chunk = _chunks(probed, layer)[3]
    if damage == "missing":
        chunk.unlink()
    elif damage == "truncated":
        chunk.write_bytes(chunk.read_bytes()[:20])
    else:
        chunk.write_bytes(np.random.default_rng(0).bytes(len(chunk.read_bytes())))
    res = cli("analyse", str(probed), "--out", str(tmp_path / "bad.json"))
    _one_line_refusal(res, f"layer {layer}", "--repair")
    assert not (tmp_path / "bad.json").exists()
    res = cli(
        "probe",
        "tiny:cogvideox",
        str(portraits),
        "--out",
        str(probed),
        "--timesteps",
        "300,700",
        "--repair",
    )
    assert res.exit_code == 0 and "repaired 1 damaged cell" in res.output, res.output
    assert cli("analyse", str(probed), "--out", str(tmp_path / "fixed.json")).exit_code == 0
    good, fixed = (json.loads((tmp_path / n).read_text()) for n in ("good.json", "fixed.json"))
    assert fixed == good


def test_missing_layer_is_named(tmp_path, probed):
    shutil.rmtree(probed / "transformer_blocks.1")
    (probed / "zarr.json").write_text(
        json.dumps(
            {**json.loads((probed / "zarr.json").read_text()), "consolidated_metadata": None}
        )
    )
    res = cli("analyse", str(probed), "--out", str(tmp_path / "p.json"))
    _one_line_refusal(res, "transformer_blocks.1")


# --- one bad photo never stops a batch ----------------------------------------------------------


def test_tiny_photo_is_skipped_with_its_reason_and_others_go_on(tmp_path, photos):
    Image.new("RGB", (1, 1), (9, 9, 9)).save(photos / "dot.png")
    lines = []
    results = run_protect(
        ProtectConfig(
            model="tiny:cogvideox",
            images=(str(photos),),
            profile=None,
            out=str(tmp_path / "o"),
            method="random-noise",
        ),
        on_result=lambda r: lines.append((r.name, r.status)),
    )
    assert dict(lines) == {"dot": "skipped", "p10": "done", "p20": "done", "p30": "done"}
    assert "too small" in next(r.detail for r in results if r.name == "dot")


def test_damaged_sidecar_means_redo_and_each_photo_is_reported_as_it_finishes(
    tmp_path, photos, monkeypatch
):
    cfg = ProtectConfig(
        model="tiny:cogvideox",
        images=(str(photos),),
        profile=None,
        out=str(tmp_path / "o"),
        method="random-noise",
    )
    run_protect(cfg)
    side = tmp_path / "o" / "p20.json"
    side.write_text(side.read_text()[:40])  # truncated, as by a full disk
    events = []
    real = protect_run.cloak_photos
    monkeypatch.setattr(
        protect_run,
        "cloak_photos",
        lambda photos, *a: events.append(f"start {photos[0].name}") or real(photos, *a),
    )
    results = run_protect(cfg, on_result=lambda r: events.append(f"{r.status} {r.name}"))
    assert [r.status for r in results] == ["skipped", "done", "skipped"]
    assert events == ["skipped p10", "start p20", "done p20", "skipped p30"]
    assert Sidecar.read(side) is not None


def test_a_photo_locked_by_a_live_run_is_left_to_it_and_a_stale_lock_is_taken_over(
    tmp_path, photos
):
    out = tmp_path / "o"
    out.mkdir()
    cfg = ProtectConfig(
        model="tiny:cogvideox",
        images=(str(photos),),
        profile=None,
        out=str(out),
        method="random-noise",
    )
    (out / "p30.lock").write_text("999999999")  # a run that died
    with photo_lock(out, "p10") as mine:  # a live run (this process) holds p10
        assert mine
        status = {r.name: r.status for r in run_protect(cfg)}
    assert status == {"p10": "skipped", "p20": "done", "p30": "done"}
    assert not list(out.glob("*.lock"))


# --- shared files carry no user paths ------------------------------------------------------------


def test_sidecar_records_file_names_unless_asked(tmp_path, photos, tiny_profile):
    cfg = ProtectConfig(
        model="tiny:cogvideox",
        images=(str(photos / "p10.png"),),
        profile=str(tiny_profile),
        target=str(photos / "p20.png"),
        out=str(tmp_path / "o"),
        method="random-noise",
    )
    [r] = run_protect(cfg)
    text = (tmp_path / "o" / "p10.json").read_text()
    assert r.sidecar.photo == "p10.png" and not re.search(
        r'"/[^"]*"', text
    )  # no absolute path anywhere
    assert r.sidecar.settings["profile"] == load_profile(tiny_profile).sha256
    [r] = run_protect(
        ProtectConfig(**{**cfg.__dict__, "out": str(tmp_path / "o2"), "record_paths": True})
    )
    assert r.sidecar.photo == str(photos / "p10.png")


def test_lpips_is_not_fetched_offline(tmp_path, monkeypatch):
    import lpips

    from anti_i2v.protect import perceptual

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached backbone here
    monkeypatch.setattr(perceptual, "_CACHE", {})
    monkeypatch.setattr(
        lpips, "LPIPS", lambda *a, **k: pytest.fail("LPIPS tried to load its backbone offline")
    )
    assert perceptual.load_lpips() is None


# --- memory on large photos ----------------------------------------------------------------------


@pytest.mark.slow
def test_protect_memory_is_flat_in_photo_size(tmp_path):
    """Peak RSS of protecting a 4000x4000 photo stays within 700 MB of a 1500x1500 one.

    Before, a 4000x4000 photo peaked at 4.8 GB: float copies of the whole photo. Now the photo is
    uint8 and the change is upsampled in bands; what grows is a few uint8 copies (108 MB each).
    """
    script = textwrap.dedent("""
        import resource, sys
        import numpy as np
        from PIL import Image
        from anti_i2v.protect.run import ProtectConfig, run_protect
        side, folder = int(sys.argv[1]), sys.argv[2]
        rng = np.random.default_rng(0)
        small = rng.integers(0, 256, (side // 100, side // 100, 3), dtype=np.uint8)
        Image.fromarray(small).resize((side, side), Image.Resampling.BILINEAR).save(f"{folder}/p.jpg", quality=90)
        [r] = run_protect(ProtectConfig(model="tiny:cogvideox", images=(f"{folder}/p.jpg",), profile=None,
                                        out=f"{folder}/o", method="rgb-pgd", steps=1, reference_steps=1,
                                        work_max_side=256))
        assert r.status == "done", r.detail
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """)
    peaks = {}
    for side in (1500, 4000):
        folder = tmp_path / str(side)
        folder.mkdir()
        proc = subprocess.run(
            [sys.executable, "-c", script, str(side), str(folder)],
            capture_output=True,
            text=True,
            env=dict(os.environ),  # the threads conftest gives this worker
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        peaks[side] = int(proc.stdout.strip().splitlines()[-1])
        assert Image.open(folder / "o" / "p.png").size == (side, side)
    assert peaks[4000] - peaks[1500] < 700, peaks
    assert peaks[4000] < 2500, peaks  # the cap: a 4000 px photo alone took 4.8 GB before
