"""Open-Sora 1.2 and DynamiCrafter, written here: the official layouts, and conversion of their checkpoints."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from anti_i2v.cli import app
from anti_i2v.models.backbones import load_backbone

KEYS = Path(__file__).parent / "data" / "official"


def read_keys(name: str, tag: str | None = None) -> tuple[dict[str, tuple[int, ...]], str]:
    """A key list: name -> shape (lines of `tag` only, when given), and its totals line."""
    lines = (KEYS / name).read_text().splitlines()
    keys = {}
    for line in lines[1:]:
        parts = line.split()
        if tag is not None:
            if not parts or parts[0] != tag:
                continue
            parts = parts[1:]
        shape = line[line.index("(") + 1 : line.index(")")]
        keys[parts[0]] = tuple(int(s) for s in re.findall(r"\d+", shape))
    return keys, lines[0]


def shapes(module: torch.nn.Module, prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {
        k[len(prefix) :]: tuple(v.shape)
        for k, v in module.state_dict().items()
        if k.startswith(prefix)
    }


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_stdit3_and_the_temporal_vae_have_the_official_keys_and_sizes():
    backbone = load_backbone("opensora-1.2", weights=False)  # the shipped real config, meta device
    official, totals = read_keys("opensora-1.2-stdit3-keys.txt")
    assert shapes(backbone.denoiser) == official  # every name and shape, none more, none fewer
    assert params(backbone.denoiser) == 1_207_643_972 == int(totals.split()[1])
    official, totals = read_keys("opensora-1.2-temporal-vae-keys.txt")
    vae = backbone.pipe.vae
    assert shapes(vae, "temporal_vae.") == official
    assert params(vae.temporal_vae) == 309_687_144 == int(totals.split()[-3])
    # the rest of the official VAE file: diffusers' AutoencoderKL (83.65 M) and two buffers
    assert {k.split(".")[0] for k in vae.state_dict()} == {
        "spatial_vae",
        "temporal_vae",
        "scale",
        "shift",
    }
    assert round(params(vae.spatial_vae) / 1e6, 2) == 83.65


@pytest.mark.parametrize("size", [512, 1024])
def test_dynamicrafter_unet_and_resampler_have_the_official_keys_and_sizes(size):
    backbone = load_backbone(f"dynamicrafter-{size}", weights=False)
    unet, totals = read_keys("dynamicrafter-unet-resampler-keys.txt", "U")
    assert shapes(backbone.denoiser) == unet
    assert params(backbone.denoiser) == 1_438_854_980 == int(totals.split()[2])
    resampler, _ = read_keys("dynamicrafter-unet-resampler-keys.txt", "R")
    assert shapes(backbone.pipe.image_proj_model) == resampler
    assert params(backbone.pipe.image_proj_model) == 48_787_456
    assert backbone.resolution == {512: (320, 512), 1024: (576, 1024)}[size]
    assert backbone.pipe.config.base_scale == {512: 0.7, 1024: 0.3}[size]


def _config_only(pipe, folder: Path) -> Path:
    """`pipe`'s pipeline folder with its weights removed: configs to convert into."""
    pipe.save_pretrained(folder, safe_serialization=True)
    for file in folder.rglob("*.safetensors"):
        file.unlink()
    return folder


def _assert_same_bytes(written: dict[str, torch.Tensor], original: dict[str, torch.Tensor]):
    assert written.keys() == original.keys()
    for k, v in original.items():
        assert written[k].dtype == v.dtype and written[k].shape == v.shape, k
        assert written[k].contiguous().view(torch.uint8).equal(v.contiguous().view(torch.uint8)), k


def test_convert_opensora_writes_the_checkpoints_tensors_byte_for_byte(tmp_path):
    tiny = load_backbone("tiny:opensora", seed=3).pipe
    source = tmp_path / "downloads"
    stdit = {k: v.clone() for k, v in tiny.transformer.state_dict().items()}
    vae = {k: v.clone() for k, v in tiny.vae.state_dict().items()}
    (source / "OpenSora-STDiT-v3").mkdir(parents=True)
    (source / "OpenSora-VAE-v1.2").mkdir()
    save_file(stdit, source / "OpenSora-STDiT-v3" / "model.safetensors")
    save_file(vae, source / "OpenSora-VAE-v1.2" / "model.safetensors")
    configs = _config_only(tiny, tmp_path / "configs")
    out = tmp_path / "pipeline"
    res = CliRunner().invoke(
        app, ["convert", "opensora-1.2", str(source), "--out", str(out), "--configs", str(configs)]
    )
    assert res.exit_code == 0, res.output
    assert f"transformer {len(stdit)} tensors" in res.output
    _assert_same_bytes(
        load_file(out / "transformer" / "diffusion_pytorch_model.safetensors"), stdit
    )
    _assert_same_bytes(load_file(out / "vae" / "diffusion_pytorch_model.safetensors"), vae)
    backbone = load_backbone(str(out))  # a pipeline folder like any other family's
    assert backbone.family == "opensora"
    torch.testing.assert_close(backbone.denoiser.state_dict(), tiny.transformer.state_dict())
    # a second conversion never overwrites the first
    again = CliRunner().invoke(
        app, ["convert", "opensora-1.2", str(source), "--out", str(out), "--configs", str(configs)]
    )
    assert again.exit_code == 2 and "already exists" in again.output


# diffusers' AutoencoderKL names -> the SD (LDM) layout of `first_stage_model.` in model.ckpt: the
# inverse of what the converter runs (diffusers' convert_ldm_vae_checkpoint), to build test data.
_LDM = [
    (r"down_blocks\.(\d+)\.resnets\.(\d+)\.", r"down.\1.block.\2."),
    (r"down_blocks\.(\d+)\.downsamplers\.0\.", r"down.\1.downsample."),
    (r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m[1]) + 1}."),
    (r"mid_block\.attentions\.0\.group_norm\.", "mid.attn_1.norm."),
    (r"mid_block\.attentions\.0\.to_(q|k|v)\.", r"mid.attn_1.\1."),
    (r"mid_block\.attentions\.0\.to_out\.0\.", "mid.attn_1.proj_out."),
    (r"conv_norm_out\.", "norm_out."),
    (r"conv_shortcut\.", "nin_shortcut."),
]


def _ldm_vae(vae) -> dict[str, torch.Tensor]:
    n = len(vae.decoder.up_blocks)
    out = {}
    for key, value in vae.state_dict().items():
        new = key
        for pattern, repl in _LDM:
            new = re.sub(pattern, repl, new)
        new = re.sub(r"up_blocks\.(\d+)\.", lambda m: f"up.{n - 1 - int(m[1])}.", new)
        new = new.replace(".resnets.", ".block.").replace(".upsamplers.0.", ".upsample.")
        if "attn_1" in new and new.endswith("weight") and value.dim() == 2:
            value = value[:, :, None, None]  # the SD VAE's attention projections are 1x1 convs
        out["first_stage_model." + new] = value.clone()
    return out


def _official_dynamicrafter(pipe) -> dict[str, torch.Tensor]:
    """A random-weight state dict laid out as DynamiCrafter's model.ckpt."""
    from anti_i2v.models.dynamicrafter.pipeline import dynamic_scale

    state = {"model.diffusion_model." + k: v.clone() for k, v in pipe.unet.state_dict().items()}
    state |= {
        "image_proj_model." + k: v.clone() for k, v in pipe.image_proj_model.state_dict().items()
    }
    state |= {
        "embedder.model.visual." + k: v.clone() for k, v in pipe.image_encoder.state_dict().items()
    }
    state |= _ldm_vae(pipe.vae)
    state["cond_stage_model.model.ln_final.weight"] = torch.ones(32)  # the text tower: left out
    state["alphas_cumprod"] = pipe.scheduler.alphas_cumprod.clone()
    state["scale_arr"] = torch.tensor(
        [dynamic_scale(t, pipe.config.base_scale) for t in range(1000)]
    )
    return state


def test_convert_dynamicrafter_reads_model_ckpt_safely_and_keeps_every_tensor(tmp_path):
    tiny = load_backbone("tiny:dynamicrafter", seed=5).pipe
    state = _official_dynamicrafter(tiny)
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": state}, ckpt)
    configs = _config_only(tiny, tmp_path / "configs")
    out = tmp_path / "pipeline"
    res = CliRunner().invoke(
        app, ["convert", "dynamicrafter", str(ckpt), "--out", str(out), "--configs", str(configs)]
    )
    assert res.exit_code == 0, res.output
    assert (
        "left out (never loaded: text tower, schedule buffers): alphas_cumprod 1, cond_stage_model. 1, scale_arr 1"
        in res.output
    )
    assert "check: alphas_cumprod vs DDIMScheduler's: max |diff| 0.00e+00" in res.output
    assert "check: scale_arr vs dynamic_scale: max |diff| 0.00e+00" in res.output
    for component, prefix in (
        ("unet", "model.diffusion_model."),
        ("image_proj_model", "image_proj_model."),
        ("image_encoder", "embedder.model.visual."),
    ):
        original = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        _assert_same_bytes(
            load_file(out / component / "diffusion_pytorch_model.safetensors"), original
        )
    backbone = load_backbone(str(out))
    assert backbone.family == "dynamicrafter"
    # the SD-layout VAE came back to diffusers' names with the very same values
    torch.testing.assert_close(
        backbone.pipe.vae.state_dict(), tiny.vae.state_dict(), rtol=0, atol=0
    )


class _NotAllowed:
    """Any class: weights_only unpickling refuses to build it."""


def test_a_checkpoint_that_needs_unsafe_unpickling_is_refused_in_one_line(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "cfg": _NotAllowed()}, ckpt)
    res = CliRunner().invoke(
        app, ["convert", "dynamicrafter", str(ckpt), "--out", str(tmp_path / "p")]
    )
    assert res.exit_code == 2
    assert "torch.load(weights_only=True) refuses" in res.output
    assert res.output.strip().count("\n") == 0 and not (tmp_path / "p").exists()


def test_a_checkpoint_of_another_layout_names_what_is_missing(tmp_path):
    tiny = load_backbone("tiny:dynamicrafter").pipe
    state = _official_dynamicrafter(tiny)
    del state["model.diffusion_model.out.2.weight"]
    save_file(state, tmp_path / "model.safetensors")
    res = CliRunner().invoke(
        app,
        [
            "convert",
            "dynamicrafter",
            str(tmp_path / "model.safetensors"),
            "--out",
            str(tmp_path / "p"),
            "--configs",
            str(_config_only(tiny, tmp_path / "configs")),
        ],
    )
    assert res.exit_code == 2
    assert (
        "its unet does not match the official layout (1 missing (first: out.2.weight))"
        in res.output
    )
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["convert", "sora", "SRC", "--out", "OUT"], "convert takes opensora-1.2 or dynamicrafter"),
        (["convert", "dynamicrafter", "SRC", "--out", "OUT", "--size", "256"], "--size 256"),
        (
            ["convert", "dynamicrafter", "DIR", "--out", "OUT"],
            "is a folder: pass the checkpoint file",
        ),
        (["convert", "opensora-1.2", "SRC", "--out", "OUT"], "is a file: pass the folder"),
        (["convert", "opensora-1.2", "DIR", "--out", "OUT"], "holds no transformer checkpoint"),
        (["convert", "dynamicrafter", "MISSING", "--out", "OUT"], "does not exist"),
    ],
)
def test_convert_refuses_bad_requests_in_one_line(tmp_path, args, message):
    (tmp_path / "model.ckpt").write_bytes(b"not a checkpoint")
    (tmp_path / "dir").mkdir()
    subs = {
        "SRC": tmp_path / "model.ckpt",
        "DIR": tmp_path / "dir",
        "MISSING": tmp_path / "none",
        "OUT": tmp_path / "out",
    }
    res = CliRunner().invoke(app, [str(subs.get(a, a)) for a in args])
    assert res.exit_code == 2, res.output
    assert message in res.output and res.output.strip().count("\n") == 0


def test_a_config_only_model_names_the_convert_command():
    from anti_i2v.core.common import ToolkitError

    with pytest.raises(ToolkitError, match=r"run `anti-i2v convert dynamicrafter CKPT --size 1024"):
        load_backbone("dynamicrafter-1024")


def test_opensora_schedule_is_diffusers_flow_match_with_open_soras_shift():
    from anti_i2v.models.opensora.pipeline import resolution_shift

    sched = load_backbone("tiny:opensora").pipe.scheduler
    ratio = resolution_shift(240, 426, 51)
    assert ratio == pytest.approx((240 * 426 / 512**2) ** 0.5 * 15**0.5)
    sched.set_shift(ratio)
    sched.set_timesteps(sigmas=[1 - i / 30 for i in range(30)])
    t = torch.tensor([1 - i / 30 for i in range(30)], dtype=torch.float64)
    expected = ratio * t / (1 + (ratio - 1) * t) * 1000  # t' = r t / (1 + (r - 1) t)
    torch.testing.assert_close(sched.timesteps.double(), expected, rtol=1e-5, atol=1e-3)


def test_dynamicrafter_schedule_is_diffusers_ddim_with_zero_terminal_snr():
    sched = load_backbone("tiny:dynamicrafter").pipe.scheduler
    sched.set_timesteps(50)
    assert sched.timesteps.tolist() == list(range(999, 0, -20))  # 999, 979, ..., 19
    assert float(sched.alphas_cumprod[-1]) == pytest.approx(0.0, abs=1e-8)  # zero terminal SNR


@pytest.mark.slow  # every stage on a tiny model of each, from the command line
# the paper's two models, HunyuanVideo 1.5 (its pipeline takes a PIL photo and sizes the video
# itself, unlike every other family's) and LTX-2 (audio beside the video; its pipeline
# re-compresses the PIL photo it takes)
@pytest.mark.parametrize("family", ["opensora", "dynamicrafter", "hunyuan15", "ltx2"])
def test_every_stage_runs_on_the_papers_models(tmp_path, portraits, family):
    model = f"tiny:{family}"
    run = CliRunner().invoke

    def ok(*args):
        res = run(app, [str(a) for a in args])
        assert res.exit_code == 0, res.output
        return res

    # One study runs every stage's own code on the family: probe and adapt (with the explorer)
    # on the selection photo, protect for each arm and budget, evaluate, then the analysis.
    study = tmp_path / "study"
    ok("study", model, portraits, "--out", study, "--judge", "mini-identity", "--selection", "1",
       "--arms", "rgb-pgd,anti-i2v", "--budgets", "1,2", "--steps", "2", "--eval-steps", "1",
       "--cloak-seeds", "1", "--generation-seeds", "1", "--reps", "50",
       "--delta-e", "0.3,0.4,0.5", "--headline-delta-e", "0.4")  # fmt: skip
    readme = (study / "README.md").read_text()
    assert readme.startswith(f"# Study: {model}") and (study / "report.json").is_file()
    assert (study / "adapt" / "activations.zarr").is_dir()
    assert (study / "adapt" / "explorer" / "index.html").is_file()
    # the protect command itself, on the profile the study chose
    ok("protect", model, portraits, "--profile", study / "adapt" / "profile.json",
       "--out", tmp_path / "cloaks", "--steps", "2")  # fmt: skip
    for photo in ("p10", "p20", "p30"):  # a cloak and its sidecar per photo
        assert (tmp_path / "cloaks" / f"{photo}.png").is_file()
        assert (tmp_path / "cloaks" / f"{photo}.json").is_file()
    rows = list(csv.DictReader((study / "results.csv").open()))  # evaluate's rows, on this model
    assert rows and {r["eval_model"] for r in rows} == {model}
    if family == "ltx2":  # cloaked through, and measured after, the pipeline's own re-compression
        ok("protect", model, portraits, "--profile", study / "adapt" / "profile.json",
           "--out", tmp_path / "h264", "--steps", "2", "--eot", "h264crf33")  # fmt: skip
        ok("evaluate", model, "--clean", portraits, "--protected", tmp_path / "h264",
           "--out", tmp_path / "eval", "--distortions", "h264crf33", "--steps", "1")  # fmt: skip
        rows = list(csv.DictReader((tmp_path / "eval" / "results.csv").open()))
        assert {r["distortion"] for r in rows} == {"none", "h264crf33"}
