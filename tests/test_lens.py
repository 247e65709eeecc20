"""The lens (`anti_i2v.models.lens`): each block's state through the denoiser's own output head.

The last block's lens is the model's real output; an earlier block's equals the output of the
same model cut after that block (built independently, by deleting the later blocks); and the
family's `decode_video` decodes a latent as its pipeline does.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import ALL_FAMILIES, FAST_FAMILIES
from PIL import Image
from typer.testing import CliRunner

from anti_i2v.cli import app
from anti_i2v.models.backbones import FAMILIES
from anti_i2v.models.lens import lens_clean


def _tiered(families):
    return [f if f in FAST_FAMILIES else pytest.param(f, marks=pytest.mark.slow) for f in families]


LENS_FAMILIES = [f for f in ALL_FAMILIES if FAMILIES[f].lens_refusal is None]


def _noisy(backbone, t: float = 500.0, seed: int = 0):
    cond = backbone.condition(
        torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    )
    noise = torch.randn(cond.clean.shape, generator=torch.Generator().manual_seed(seed))
    return cond, backbone.add_noise(cond.clean, noise, t)


def _clean_from(backbone, denoiser, cond, noisy, t: float) -> torch.Tensor:
    with torch.no_grad():
        output = denoiser(**backbone.denoiser_kwargs(noisy, cond, t))
    return backbone.predict_clean(noisy, backbone.hidden(output), t)


def test_every_dit_family_has_a_lens_and_every_unet_family_says_why_not():
    refused = {f for f, cls in FAMILIES.items() if cls.lens_refusal is not None}
    assert refused == {"svd", "dynamicrafter"}
    assert all("UNet" in FAMILIES[f].lens_refusal for f in refused)


@pytest.mark.parametrize("family", _tiered(LENS_FAMILIES))
def test_the_last_blocks_lens_is_the_models_output(backbones, family):
    backbone = backbones(family)
    for t in (300.0, 900.0):  # both experts' bands for a model of experts
        cond, noisy = _noisy(backbone, t)
        clean = lens_clean(backbone, cond, noisy, t)
        assert sorted(clean) == sorted(backbone.lens_blocks(t)) and len(clean) >= 2
        real = _clean_from(backbone, backbone.denoiser, cond, noisy, t)
        torch.testing.assert_close(list(clean.values())[-1], real, rtol=1e-5, atol=1e-6)
        # an earlier block sees something else (the blocks after it are not run)
        assert not torch.allclose(list(clean.values())[0], real, atol=1e-4)


def _cut(denoiser: torch.nn.Module, container: str, keep: int) -> torch.nn.Module:
    cut = copy.deepcopy(denoiser)
    setattr(cut, container, torch.nn.ModuleList(list(getattr(cut, container))[:keep]))
    return cut


@pytest.mark.parametrize(
    ("family", "container", "keep", "block"),
    [
        ("cogvideox", "transformer_blocks", 1, "transformer_blocks.0"),
        # dual-stream blocks, then single-stream ones: the last dual block's lens is the model
        # with no single-stream blocks at all
        pytest.param(
            "hunyuan",
            "single_transformer_blocks",
            0,
            "transformer_blocks.0",
            marks=pytest.mark.slow,
        ),
        # VACE adds a hint after blocks 0 and 1: the lens keeps block 0's and drops block 1's
        pytest.param("wan-vace", "blocks", 1, "blocks.0", marks=pytest.mark.slow),
    ],
)
def test_a_blocks_lens_is_the_model_cut_after_it(backbones, family, container, keep, block):
    backbone = backbones(family)
    cond, noisy = _noisy(backbone, 500.0, seed=1)
    lens = lens_clean(backbone, cond, noisy, 500.0, layers=[block])
    cut = _clean_from(backbone, _cut(backbone.denoiser, container, keep), cond, noisy, 500.0)
    torch.testing.assert_close(lens[block], cut, rtol=1e-5, atol=1e-6)


def test_nnsight_traces_read_the_same_blocks_before_and_after_a_lens(backbones):
    """The lens passes blocks over through nnsight's own slot (`forward_swapped`): a trace after
    it still reaches every block, and reads what it read before."""
    from anti_i2v.models.capture import trace_blocks

    backbone = backbones("cogvideox")
    cond, noisy = _noisy(backbone)
    kwargs = backbone.denoiser_kwargs(noisy, cond, 500.0)
    names = backbone.block_names()
    with torch.no_grad():
        before = trace_blocks(backbone, kwargs, names)
        lens_clean(backbone, cond, noisy, 500.0)
        after = trace_blocks(backbone, kwargs, names)
    for name in names:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)


# Open-Sora's and HunyuanVideo 1.5's pipelines take no step callback: each has its own test below
@pytest.mark.parametrize(
    "family", _tiered(f for f in LENS_FAMILIES if f not in ("opensora", "hunyuan15"))
)
def test_decode_video_decodes_as_the_pipeline_does(backbones, family):
    """The pipeline's final latent through `decode_video` gives the pipeline's own video."""
    backbone = backbones(family)
    image = torch.rand(1, 3, *backbone.resolution, generator=torch.Generator().manual_seed(0))
    h, w = backbone.resolution
    kept = {}

    def keep(_pipe, _i, _t, kwargs):
        kept["latents"] = kwargs["latents"]
        return kwargs

    frames = backbone.default_frames
    call = dict(
        height=h, width=w, num_frames=frames, num_inference_steps=2, **backbone.pipeline_kwargs()
    )
    if family == "wan-vace":  # the photo as the kept first frame of a grey video
        video = torch.full((1, frames, 3, h, w), 0.5)
        video[0, 0], mask = image[0], torch.ones_like(video)
        mask[0, 0] = 0
        call |= {"video": video, "mask": mask}
    else:  # the photo as each pipeline takes it (LTX-2: a PIL image, which it re-compresses)
        call |= backbone.pipeline_image(image[0])
    with torch.no_grad():
        video = backbone.pipe(
            output_type="pt", callback_on_step_end=keep,
            generator=torch.Generator().manual_seed(0), **call,
        ).frames  # fmt: skip
        final = backbone.pipe(
            output_type="latent", generator=torch.Generator().manual_seed(0), **call
        ).frames
        cond = backbone.condition(image)
        # HunyuanVideo returns its latent without the image's frame: the loop's last one has it
        latent = final if final.shape == cond.clean.shape else kept["latents"]
        ours = backbone.decode_video(latent, cond)
    video = torch.as_tensor(video).float()
    # the pipeline's own frames (HunyuanVideo drops the image's first 4), to 8 bits (Cosmos
    # passes its video through uint8 for the guardrail)
    torch.testing.assert_close(ours[:, -video.shape[1] :], video, rtol=0, atol=1 / 255 + 1e-5)


def test_hunyuan15_decode_video_is_the_pipelines_decode(backbones):
    """HunyuanVideo 1.5's pipeline (a PIL photo in, its own size from it) hands its final latent
    over with output_type="latent": through `decode_video` it is the pipeline's own video."""
    backbone = backbones("hunyuan15")
    image = torch.rand(1, 3, *backbone.resolution, generator=torch.Generator().manual_seed(0))
    call = dict(**backbone.pipeline_image(image[0]), num_frames=backbone.default_frames,
                num_inference_steps=2, **backbone.pipeline_kwargs())  # fmt: skip
    assert isinstance(call["image"], Image.Image)  # the pipeline takes a PIL photo
    with torch.no_grad():
        latent = backbone.pipe(
            output_type="latent", generator=torch.Generator().manual_seed(0), **call
        ).frames
        video = backbone.pipe(
            output_type="pt", generator=torch.Generator().manual_seed(0), **call
        ).frames
        ours = backbone.decode_video(latent, backbone.condition(image))
    assert latent.shape == backbone.condition(image).clean.shape
    torch.testing.assert_close(ours, video.float(), rtol=0, atol=1 / 255 + 1e-5)


def test_opensora_decode_video_is_the_pipelines_decode(backbones):
    """Open-Sora's pipeline (written here) decodes its final latent with `vae.decode`: the
    latent it hands over goes through `decode_video` to the same video."""
    backbone = backbones("opensora")
    seen = {}
    decode = backbone.pipe.vae.decode

    def spy(z, frames):
        seen["z"], seen["frames"] = z, frames
        seen["video"] = decode(z, frames)
        return seen["video"]

    backbone.pipe.vae.decode = spy
    try:
        backbone.generate(torch.rand(3, 32, 32), steps=1)
    finally:
        del backbone.pipe.vae.decode
    cond, _ = _noisy(backbone)
    with torch.no_grad():
        ours = backbone.decode_video(seen["z"], cond)
    want = ((seen["video"].float() + 1) / 2).clamp(0, 1).permute(0, 2, 1, 3, 4)
    assert ours.shape[1] == seen["frames"]
    torch.testing.assert_close(ours, want)


@pytest.mark.slow  # two runs from the CLI; lens_clean itself is tested above on the fast tier
def test_the_lens_command_writes_a_strip_per_timestep_and_the_same_bytes_twice(tmp_path, portraits):
    photo = sorted(portraits.glob("*.png"))[0]
    runs = []
    for name in ("a", "b"):
        res = CliRunner().invoke(
            app, ["lens", "tiny:cogvideox", str(photo), "--timesteps", "300,700", "--frames", "3",
                  "--out", str(tmp_path / name)],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        runs.append({p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir())})
    assert runs[0] == runs[1]
    assert sorted(runs[0]) == [
        "frames-t300.png",
        "frames-t700.png",
        "lens-t300.png",
        "lens-t700.png",
        "lens.json",
    ]
    data = json.loads(runs[0]["lens.json"])
    assert data["schema"] == "anti-i2v.lens/1" and data["photo"] == photo.stem
    assert data["layers"] == ["transformer_blocks.0", "transformer_blocks.1"]
    assert data["to_output"]["transformer_blocks.1"] == [0.0, 0.0]  # the last block is the output
    assert all(v > 0 for v in data["to_output"]["transformer_blocks.0"])
    assert all(v > 0 for row in data["to_photo"].values() for v in row)


@pytest.mark.slow
def test_the_lens_of_a_model_of_experts_is_null_where_an_expert_does_not_run(tmp_path, portraits):
    photo = sorted(portraits.glob("*.png"))[0]
    res = CliRunner().invoke(
        app,
        ["lens", "tiny:wan22-a14b", str(photo), "--timesteps", "500,950", "--out", str(tmp_path)],
    )
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "lens.json").read_text())
    assert (
        data["to_output"]["low.blocks.0"][1] is None
        and data["to_output"]["high.blocks.0"][0] is None
    )
    assert (
        data["to_output"]["low.blocks.1"][0] == 0.0 and data["to_output"]["high.blocks.1"][1] == 0.0
    )


@pytest.mark.parametrize(
    ("model", "args", "message"),
    [
        ("tiny:svd", [], "no lens for its family"),
        ("tiny:cogvideox", ["--timesteps", "1000"], "--timesteps 1000"),
        ("tiny:cogvideox", ["--frames", "0"], "--frames 0"),
    ],
)
def test_the_lens_command_refuses_in_one_line_before_loading(
    tmp_path, portraits, no_model, model, args, message
):
    photo = sorted(portraits.glob("*.png"))[0]
    res = CliRunner().invoke(app, ["lens", model, str(photo), "--out", str(tmp_path / "o"), *args])
    assert res.exit_code == 2 and message in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_the_lens_command_refuses_an_unreadable_photo_before_loading(tmp_path, no_model):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    res = CliRunner().invoke(
        app, ["lens", "tiny:cogvideox", str(bad), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2 and "bad.png" in res.output


def test_adapt_with_lens_refuses_a_unet_family_before_probing(tmp_path, portraits, no_model):
    res = CliRunner().invoke(
        app, ["adapt", "tiny:svd", str(portraits), "--lens", "--out", str(tmp_path / "a")]
    )
    assert res.exit_code == 2 and "--lens: tiny:svd has no lens" in res.output
    assert not (tmp_path / "a").exists()
