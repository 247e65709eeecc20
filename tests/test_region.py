"""The region lever (`protect --region`): where the change goes, from masks or dlib's face box."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from anti_i2v.cli import app
from anti_i2v.core.common import ToolkitError
from anti_i2v.core.images import load_photo
from anti_i2v.protect.region import FACE, Region
from anti_i2v.protect.sidecar import Sidecar
from anti_i2v.protect.spaces import Space

runner = CliRunner()


def test_the_map_is_one_on_the_face_floor_off_it_and_mean_one(portraits, portrait_masks):
    photo = load_photo(portraits / "p10.png")
    region = Region.check(str(portrait_masks), 0.25)
    face = region.binary(photo, photo.size)
    labels = np.asarray(Image.open(portrait_masks / "p10.png"))
    # the face's parts (skin 1, eyes 3, mouth 4) count; hair 2, clothes 6 and background do not
    assert face[labels == 1].all() and face[labels == 3].all() and not face[labels == 2].any()
    assert not face[labels == 0].any() and 0.05 < face.mean() < 0.6
    w = region.weights(photo, photo.size)[0].numpy()
    assert w.shape == photo.size and w.mean() == pytest.approx(1, abs=1e-5)
    inner, outer = w[face].mean(), w[~face].mean()
    # off the face the weight is the floor (edge aside) scaled by the same factor as the face's 1
    assert np.median(w[~face]) / np.median(w[face]) == pytest.approx(0.25, abs=0.03)
    assert inner > 1 > outer
    # half the size: the same region, shrunk by nearest neighbour
    assert region.binary(photo, (32, 32)).mean() == pytest.approx(face.mean(), abs=0.02)
    # a floor of 1 weights nothing
    assert np.allclose(Region.check(str(portrait_masks), 1.0).weights(photo, (64, 64)), 1)


def test_a_drawn_mask_is_white_on_the_region(tmp_path, portraits):
    drawn = np.zeros((64, 64), np.uint8)
    drawn[10:30, 20:40] = 255
    Image.fromarray(drawn).save(tmp_path / "p10.png")
    face = Region.check(str(tmp_path), 0.25).binary(load_photo(portraits / "p10.png"), (64, 64))
    assert face.sum() == 400 and face[10:30, 20:40].all()


def test_dlibs_largest_face_box_is_the_region(monkeypatch, portraits):
    dlib = pytest.importorskip("dlib")  # the [faces] extra
    boxes = [
        dlib.rectangle(2, 3, 12, 9),
        dlib.rectangle(20, 10, 50, 40),
    ]  # left, top, right, bottom
    calls = []
    monkeypatch.setattr(
        dlib, "get_frontal_face_detector", lambda: lambda image, up: calls.append(1) or boxes
    )
    region, photo = Region.check(FACE, 0.25), load_photo(portraits / "p10.png")
    face = region.binary(photo, (64, 64))
    assert face.sum() == 30 * 30 and face[10:40, 20:50].all()
    region.weights(photo, (64, 64))  # the check before cloaking and the weights share one search
    assert len(calls) == 1


def test_a_photo_without_a_region_says_what_is_missing(tmp_path, portraits):
    photo = load_photo(portraits / "p10.png")
    with pytest.raises(ToolkitError, match="no mask for p10.png.*p10.png"):
        Region.check(str(tmp_path), 0.25).binary(photo, (64, 64))
    Image.fromarray(np.full((64, 64), 6, np.uint8)).save(tmp_path / "p10.png")  # clothes only
    with pytest.raises(ToolkitError, match="marks no face"):
        Region.check(str(tmp_path), 0.25).binary(photo, (64, 64))
    with pytest.raises(ToolkitError, match="not a folder of masks"):
        Region.check(str(tmp_path / "nowhere"), 0.25)
    pytest.importorskip("dlib")
    with pytest.raises(ToolkitError, match="dlib finds no face in p10.png"):  # a cartoon face
        Region.check(FACE, 0.25).binary(photo, (64, 64))


def test_the_space_moves_the_same_change_towards_the_region():
    image = torch.full((1, 3, 8, 8), 0.5)
    params = {"rgb": torch.full((1, 3, 8, 8), 0.01)}
    weight = torch.ones(1, 1, 8, 8)
    weight[..., :4] = 1.5
    weight[..., 4:] = 0.5
    plain = Space("rgb").apply(image, params)
    weighted = Space("rgb", region=weight).apply(image, params)
    assert torch.allclose(Space("rgb", region=torch.ones(1, 1, 8, 8)).apply(image, params), plain)
    assert torch.allclose(weighted - image, (plain - image) * weight)
    assert (weighted - image).mean() == pytest.approx(float((plain - image).mean()), rel=1e-5)


def test_an_older_sidecar_still_verifies():
    fields = dict(photo="p.png", photo_sha256="a", size=[2, 2], model="m", family="f",
                  config_sha256="c", profile_sha256=None, settings={}, clip_frames=1,
                  lpips_available=False, collapse_layers=[], anchor_layers=[], budget={},
                  linf_rgb_written=0.0, psnr=1.0, ssim=1.0, losses=[], seconds=1.0,
                  toolkit_version="0.1.0")  # fmt: skip
    sealed = Sidecar(**fields).sealed("f" * 64).to_json()
    sealed.pop("region_sha256")  # as a sidecar written before the field existed
    assert not Sidecar.from_json(sealed).tampered()
    masked = Sidecar(**fields, region_sha256="r").sealed("f" * 64)
    assert masked.content_sha256 != Sidecar.from_json(sealed).content_sha256


def test_protect_region_cloaks_towards_the_face_and_refuses_a_photo_without_a_mask(
    tmp_path, photos, portrait_masks
):
    masks = tmp_path / "masks"
    shutil.copytree(portrait_masks, masks)
    (masks / "p30.png").unlink()
    args = ["protect", "tiny:cogvideox", str(photos), "--method", "rgb-pgd", "--steps", "3",
            "--eps", "4", "--region", str(masks), "--out", str(tmp_path / "o")]  # fmt: skip
    res = runner.invoke(app, args)
    # one photo without a mask is named and left out; the others are cloaked (exit 0, as protect
    # does for any bad photo in a batch)
    assert res.exit_code == 0 and "failed p30: --region: no mask for p30.png" in res.output
    assert (tmp_path / "o" / "p10.png").is_file() and not (tmp_path / "o" / "p30.png").exists()
    side = json.loads((tmp_path / "o" / "p10.json").read_text())
    assert side["settings"]["region"] == "masks" and side["settings"]["region_floor"] == 0.25
    assert str(tmp_path) not in json.dumps(side)  # the folder is recorded by kind, not path
    cloak = np.asarray(Image.open(tmp_path / "o" / "p10.png")).astype(float)
    change = np.abs(cloak - np.asarray(Image.open(photos / "p10.png")).astype(float)).mean(-1)
    face = Region.check(str(masks), 0.25).binary(load_photo(photos / "p10.png"), (64, 64))
    assert change[face].mean() > 2 * change[~face].mean()
    # the same run skips what it made; a changed mask is other work
    again = runner.invoke(app, args)
    assert "already cloaked" in again.output
    shutil.copy(masks / "p10.png", masks / "p20.png")
    changed = runner.invoke(app, args)
    assert "p20: PSNR" in changed.output and "p10: PSNR" not in changed.output, changed.output


@pytest.mark.parametrize(
    "args, needle",
    [(["--region", "nowhere"], "--region nowhere: not a folder"),
     (["--region", "face", "--region-floor", "0"], "--region-floor 0")],
)  # fmt: skip
def test_a_bad_region_is_one_line_before_any_model_loads(tmp_path, photos, args, needle):
    res = runner.invoke(
        app,
        [
            "protect",
            "tiny:cogvideox",
            str(photos),
            "--method",
            "rgb-pgd",
            "--out",
            str(tmp_path / "o"),
            *args,
        ],  # fmt: skip
    )
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()
