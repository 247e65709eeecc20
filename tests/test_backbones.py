"""Backbone adapters: golden block names, layouts, differentiable conditioning, loading."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import EVERY_FAMILY, count_blocks
from safetensors.torch import save_file

from anti_i2v.core.common import ToolkitError
from anti_i2v.models.backbones import FAMILIES, family_of, load_backbone, weights_sha256
from anti_i2v.models.capture import block_order, execution_order

# Golden block lists of the tiny models: an upstream rename fails loudly here.
GOLDEN = {
    "cogvideox": ["transformer_blocks.0", "transformer_blocks.1"],
    "wan": ["blocks.0", "blocks.1"],
    "wan22": ["blocks.0", "blocks.1"],
    "skyreels-v2": ["blocks.0", "blocks.1"],
    "wan22-a14b": ["high.blocks.0", "high.blocks.1", "low.blocks.0", "low.blocks.1"],
    # VACE's hint blocks run first, then the main blocks they are added to
    "wan-vace": ["vace_blocks.0", "vace_blocks.1", "blocks.0", "blocks.1"],
    "skyreels-v2-df": ["blocks.0", "blocks.1"],
    "cosmos2": ["transformer_blocks.0", "transformer_blocks.1"],
    "hunyuan15": ["transformer_blocks.0", "transformer_blocks.1"],
    "ltx": ["transformer_blocks.0", "transformer_blocks.1"],
    "ltx2": ["transformer_blocks.0", "transformer_blocks.1"],
    "hunyuan": ["transformer_blocks.0", "single_transformer_blocks.0"],
    "svd": ["down_blocks.0", "down_blocks.1", "mid_block", "up_blocks.0", "up_blocks.1"],
    # Open-Sora interleaves its two lists: spatial i, then temporal i
    "opensora": ["spatial_blocks.0", "temporal_blocks.0", "spatial_blocks.1", "temporal_blocks.1"],
    # DynamiCrafter's temporal init_attn runs right after the input conv
    "dynamicrafter": ["input_blocks.0", "init_attn"]
    + [f"input_blocks.{i}" for i in range(1, 4)]
    + ["middle_block"]
    + [f"output_blocks.{i}" for i in range(4)],
}


def _kwargs(backbone, image, t=500.0):
    cond = backbone.condition(image)
    noise = torch.randn(cond.clean.shape, generator=torch.Generator().manual_seed(0))
    return cond, backbone.denoiser_kwargs(backbone.add_noise(cond.clean, noise, t), cond, t)


@pytest.mark.parametrize("family", EVERY_FAMILY)
def test_execution_order_is_golden(backbones, family):
    backbone = backbones(family)
    image = torch.rand(1, 3, 40, 56)
    order = block_order(backbone, lambda t: _kwargs(backbone, image, t)[1], (950.0, 500.0))
    assert order == GOLDEN[family]
    assert len(order) == count_blocks(backbone.denoiser)
    if order == backbone.active_blocks(500.0):  # one call runs every block
        assert execution_order(backbone, _kwargs(backbone, image)[1]) == order


# Layouts, differentiable conditioning and schedules of every family: tests/test_contract.py.


def test_family_detection_from_model_index():
    assert family_of({"_class_name": "CogVideoXImageToVideoPipeline"}) == "cogvideox"
    assert (
        family_of({"_class_name": "WanImageToVideoPipeline", "expand_timesteps": True}) == "wan22"
    )
    assert family_of({"_class_name": "WanImageToVideoPipeline"}) == "wan"
    assert family_of({"_class_name": "StableVideoDiffusionPipeline"}) == "svd"
    with pytest.raises(ToolkitError, match="not a supported image-to-video family"):
        family_of({"_class_name": "StableDiffusionPipeline"})


def test_local_folder_loads_like_a_hub_checkpoint(tmp_path, backbones):
    """save_pretrained then load by path: same family, same config hash, same outputs."""
    backbone = backbones("cogvideox")
    backbone.pipe.save_pretrained(tmp_path / "cog", safe_serialization=True)
    assert json.loads((tmp_path / "cog" / "model_index.json").read_text())["text_encoder"] == [
        None,
        None,
    ]
    loaded = load_backbone(str(tmp_path / "cog"))
    assert loaded.family == "cogvideox"
    assert loaded.config_sha256() == backbone.config_sha256()
    assert not list((tmp_path / "cog").rglob("*.bin"))  # safetensors only
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a = backbone.denoiser(**_kwargs(backbone, image)[1])[0]
        b = loaded.denoiser(**_kwargs(loaded, image)[1])[0]
    torch.testing.assert_close(a, b)


def test_weights_hash_tells_a_retrained_model_from_its_config_twin(retrainable_model, backbones):
    """Same folder, same config, other weights: another model for every cache of its outputs."""
    folder, retrain = retrainable_model
    first = load_backbone(str(folder))
    assert first.weights_sha256 == weights_sha256(str(folder)) and len(first.weights_sha256) == 64
    # a component the toolkit never loads does not count
    (folder / "text_encoder").mkdir()
    save_file({"w": torch.ones(2)}, str(folder / "text_encoder" / "model.safetensors"))
    assert weights_sha256(str(folder)) == first.weights_sha256
    retrain()  # the memo sees the file rewritten
    second = load_backbone(str(folder))
    assert second.config_sha256() == first.config_sha256()
    assert second.weights_sha256 != first.weights_sha256
    assert second.model_key() != first.model_key()
    assert second.model_key().startswith(first.config_sha256()[:16])
    # tiny models are built from their seed
    assert weights_sha256("tiny:cogvideox", seed=1) != backbones("cogvideox").weights_sha256


@pytest.mark.parametrize(
    ("model", "family", "message"),
    [
        ("tiny:nope", None, "unknown family 'nope'"),
        ("no-such-model", None, "unknown model 'no-such-model'"),
        ("tiny:cogvideox", "sora", "unknown family 'sora'"),
    ],
)
def test_bad_model_names(model, family, message):
    with pytest.raises(ToolkitError, match=message):
        load_backbone(model, family)


def test_folder_without_model_index(tmp_path):
    with pytest.raises(ToolkitError, match="not a diffusers pipeline folder"):
        load_backbone(str(tmp_path))


def test_hub_id_offline_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(ToolkitError, match="hf download someorg/some-i2v-model --local-dir DIR"):
        load_backbone("someorg/some-i2v-model")


def test_registry_refuses_duplicates():
    from anti_i2v.models.backbones import register

    with pytest.raises(ValueError, match="already registered"):
        register(FAMILIES["svd"], lambda seed: None, ((32, 32), 2))


def _copies() -> list[tuple[Path, str, str]]:
    """(file, function source, the referenced dotted path) for every `# Copied from X` mark."""
    root = Path(__file__).resolve().parents[1]
    found = []
    folders = ("core", "models", "world", "probe", "analyses", "protect", "evaluate", "anti_i2v")
    for path in sorted(p for folder in folders for p in (root / folder).rglob("*.py")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            mark = re.match(r"\s*# Copied from ([\w.]+)$", line)
            if mark:
                indent = len(lines[i + 1]) - len(lines[i + 1].lstrip())
                body = [lines[i + 1]]
                for nxt in lines[i + 2 :]:  # the def and every line indented deeper than it
                    if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                        break
                    body.append(nxt)
                tree = ast.parse(textwrap.dedent("\n".join(body)))
                found.append((path, ast.unparse(tree.body[0]), mark.group(1)))
    return found


def _source_of(dotted: str) -> str:
    module, _, qual = dotted.partition(".backbones.")
    mod = importlib.import_module(f"{module}.backbones.{qual.split('.')[0]}")
    obj = mod
    for part in qual.split(".")[1:]:
        obj = getattr(obj, part)
    return ast.unparse(ast.parse(textwrap.dedent(inspect.getsource(obj))).body[0])


def test_marked_copies_equal_their_source():
    """diffusers' "Copied from" convention, checked: a marked copy may not drift from its original."""
    copies = _copies()
    assert copies, "no `# Copied from` marks found: the check would pass vacuously"
    for path, source, dotted in copies:
        assert source == _source_of(dotted), f"{path.name}: the copy of {dotted} has drifted"


def test_the_registrys_family_list_is_the_adapters():
    """`anti-i2v models` lists families from the registry (no diffusers import): the same
    families, in the same order, driving the same pipelines as the registered adapters."""
    from anti_i2v.models.registry import FAMILY_PIPELINES

    assert list(FAMILY_PIPELINES.items()) == [
        (family, adapter.pipeline_class.__name__) for family, adapter in FAMILIES.items()
    ]


def test_wan_vace_conditioning_is_the_pipelines_own(backbones):
    """The 96 control channels equal what WanVACEPipeline builds from the same video and mask
    (its `prepare_video_latents` and `prepare_masks`), here in torch and differentiable."""
    backbone = backbones("wan-vace")
    pipe, frames = backbone.pipe, backbone.default_frames
    photo = torch.rand(1, 3, *backbone.resolution)
    cond = backbone.condition(photo, frames)
    video = torch.zeros(1, 3, frames, *backbone.resolution)
    video[:, :, 0] = photo * 2 - 1
    mask = torch.ones(1, 3, frames, *backbone.resolution)
    mask[:, :, 0] = 0
    with torch.no_grad():
        latents = pipe.prepare_video_latents(video, mask, [[]], device="cpu")  # no reference images
        masks = pipe.prepare_masks(mask, [[]])
    torch.testing.assert_close(cond.tensors["control"], torch.cat([latents, masks], dim=1))


def test_cosmos_generates_only_through_nvidias_guardrail(backbones, monkeypatch):
    """Without `cosmos_guardrail` the Cosmos pipeline is loaded with a stand-in that refuses to
    generate (the model's licence requires the guardrail); probing and cloaking need none."""
    from anti_i2v.models.backbones import cosmos

    backbone = backbones("cosmos2")
    assert cosmos.Cosmos2.stand_in_components()["safety_checker"].passes is False  # not installed
    monkeypatch.setattr(backbone.pipe.safety_checker, "passes", False)
    with pytest.raises(ToolkitError, match="pip install cosmos_guardrail"):
        backbone.generate(torch.rand(3, 32, 32), steps=1)
    cond = backbone.condition(torch.rand(1, 3, 32, 32))  # the denoiser runs without it
    assert (
        backbone.denoiser(**backbone.denoiser_kwargs(cond.clean, cond, 500.0))[0].isfinite().all()
    )


def test_cogvideox15_scales_the_image_latent_down_and_the_video_latent_up():
    """CogVideoX1.5 (`invert_scale_latents`) was trained with the image's latent divided by the
    scaling factor (the pipeline's `prepare_latents`), while the video it denoises, and decodes
    with `1 / factor`, is scaled up as before: the still video to noise must be too."""
    backbone = load_backbone("tiny:cogvideox")
    backbone.pipe.vae.register_to_config(invert_scale_latents=True)
    photo = torch.rand(1, 3, *backbone.resolution)
    sf = backbone.pipe.vae_scaling_factor_image
    with torch.no_grad():
        cond = backbone.condition(photo)
        x = photo.unsqueeze(2) * 2 - 1
        mode = backbone.pipe.vae.encode(x).latent_dist.mode().permute(0, 2, 1, 3, 4)
        video = backbone.encode_video(photo[:, None])
    torch.testing.assert_close(cond.tensors["image_latents"][:, :1], mode / sf)
    torch.testing.assert_close(cond.clean[:, :1], mode * sf)
    torch.testing.assert_close(video, mode * sf)
    torch.testing.assert_close(
        backbone.decode_video(video, cond)[:, 0],
        backbone.vae_roundtrip(photo[0])[None],
        atol=1e-5,
        rtol=0,
    )


def test_hunyuan15s_traceable_forward_is_its_forward(backbones):
    """`plan` traces HunyuanVideo 1.5 through `traceable_forward` (its forward reads tensor
    values): on the adapter's inputs it gives the real forward's output, bit for bit, and it is
    swapped in only for the duration."""
    from anti_i2v.models.backbones.hunyuan15 import traceable_forward

    backbone = backbones("hunyuan15")
    cond = backbone.condition(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    noisy = backbone.add_noise(cond.clean, torch.randn_like(cond.clean), 700.0)
    kwargs = backbone.denoiser_kwargs(noisy, cond, 700.0)
    with torch.no_grad():
        real = backbone.denoiser(**kwargs)[0]
        direct = traceable_forward(backbone.denoiser, **kwargs)[0]
        with backbone.traceable():
            swapped = backbone.denoiser(**kwargs)[0]
        again = backbone.denoiser(**kwargs)[0]
    assert torch.equal(direct, real) and torch.equal(swapped, real) and torch.equal(again, real)
    assert real.shape == cond.clean.shape


def test_ltx2_calls_its_denoiser_as_the_pipeline_does(backbones):
    """The adapter's denoiser call at the pipeline's first step, on the pipeline's own noisy
    latent, is the pipeline's call: the photo's tokens, per-token timesteps, the connectors'
    text, sizes, frame rate and the audio stream's length; only the audio's values differ (the
    pipeline's are its own noise draw, the adapter's a fixed stand-in). A step makes
    `guidance_passes` calls, as `plan` counts them."""
    backbone = backbones("ltx2")
    # 8-bit values: the pipeline takes the photo as a PIL image
    image = (
        torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
    ).round() / 255
    seen = {}

    def keep(_module, _args, kwargs):
        seen.setdefault("call", kwargs)
        seen["calls"] = seen.get("calls", 0) + 1

    handle = backbone.denoiser.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        with torch.no_grad():
            backbone.pipe(
                **backbone.pipeline_image(image[0]), num_frames=backbone.default_frames,
                num_inference_steps=1, generator=torch.Generator().manual_seed(0),
                output_type="latent", image_crf=0,  # the encode path compared, not H.264's
                **backbone.pipeline_kwargs(),
            )  # fmt: skip
    finally:
        handle.remove()
    theirs = seen["call"]
    assert seen["calls"] == backbone.guidance_passes  # conditional, STG, modality isolation
    t = float(theirs["audio_timestep"][0])
    cond = backbone.condition(image)
    ours = backbone.denoiser_kwargs(theirs["hidden_states"], cond, t)
    for key in ("hidden_states", "timestep", "encoder_hidden_states", "audio_encoder_hidden_states",
                "encoder_attention_mask", "audio_timestep", "sigma"):  # fmt: skip
        torch.testing.assert_close(ours[key].float(), theirs[key].float(), atol=1e-5, rtol=1e-5)
    for key in ("num_frames", "height", "width", "fps", "audio_num_frames", "use_cross_timestep"):
        assert ours[key] == theirs[key], key
    assert ours["audio_hidden_states"].shape == theirs["audio_hidden_states"].shape


def test_ltx2s_audio_stand_in_is_one_draw_whatever_the_batch(backbones):
    """Each photo's denoiser output is the same alone as in a batch: the audio stream is one
    seeded draw expanded over the batch, scaled by t as flow matching noises a mean-0 clip."""
    backbone = backbones("ltx2")
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    both = backbone.condition(images)
    noise = torch.randn(both.clean.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        kwargs = backbone.denoiser_kwargs(backbone.add_noise(both.clean, noise, 600.0), both, 600.0)
        batched = backbone.denoiser(**kwargs)[0]
        for i in range(2):
            one = backbone.condition(images[i : i + 1])
            alone = backbone.denoiser(
                **backbone.denoiser_kwargs(
                    backbone.add_noise(one.clean, noise[i : i + 1], 600.0), one, 600.0
                )
            )[0]
            torch.testing.assert_close(alone[0], batched[i], atol=1e-5, rtol=1e-5)
    audio = kwargs["audio_hidden_states"]
    assert torch.equal(audio[0], audio[1])
    assert audio.std().item() == pytest.approx(0.6, rel=0.2)  # 0.6 x a standard normal draw


def test_ltx2_generates_through_its_pipelines_recompression_or_says_what_it_needs(
    backbones, monkeypatch
):
    """The pipeline H.264-re-compresses PIL photos (what an attacker's default run does), so the
    adapter hands it one; without PyAV that path cannot run, and generate says so in one line."""
    import diffusers.utils

    backbone = backbones("ltx2")
    photo = torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(3))
    taken = backbone.pipeline_image(photo)
    assert taken["image"].size == (32, 32) and (taken["height"], taken["width"]) == (32, 32)
    video = backbone.generate(photo, steps=1)
    assert video.shape == (backbone.default_frames, 3, 32, 32)
    monkeypatch.setattr(diffusers.utils, "is_av_available", lambda: False)
    with pytest.raises(ToolkitError, match="needs PyAV: `pip install anti-i2v\\[ltx2\\]`"):
        backbone.generate(photo, steps=1)


@pytest.mark.parametrize("command", ["generate", "evaluate", "study"])
def test_a_family_that_cannot_generate_here_is_refused_before_any_model_loads(
    tmp_path, portraits, no_model, monkeypatch, command
):
    """LTX-2 without PyAV: every command that animates a photo says so in one line, exit 2,
    before a model loads (`Backbone.generation_refusal`, asked through `check_generates`)."""
    import diffusers.utils
    from typer.testing import CliRunner

    import anti_i2v.evaluate.run as evaluate_run
    from anti_i2v.cli import app

    monkeypatch.setattr(evaluate_run, "load_backbone", no_model_loads)
    monkeypatch.setattr(diffusers.utils, "is_av_available", lambda: False)
    photo = sorted(portraits.glob("*.png"))[0]
    args = {
        "generate": ["generate", "tiny:ltx2", photo, "--out", tmp_path / "v.gif"],
        "evaluate": ["evaluate", "tiny:cogvideox", "--clean", portraits, "--protected",
                     portraits, "--models", "tiny:ltx2", "--out", tmp_path / "r"],
        "study": ["study", "tiny:ltx2", portraits, "--out", tmp_path / "s"],
    }[command]  # fmt: skip
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 2, res.output
    assert "tiny:ltx2: LTX-2's pipeline re-compresses the photo" in " ".join(res.output.split())
    assert "Traceback" not in res.output


def no_model_loads(*_, **__):
    raise AssertionError("a model was loaded before the input was checked")
