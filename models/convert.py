"""Official checkpoints of the families written here -> pipeline folders the toolkit loads.

`anti-i2v convert opensora-1.2 DIR --out PIPELINE` and `anti-i2v convert dynamicrafter CKPT --out
PIPELINE` end here. The denoisers, Resampler, image tower and Open-Sora's VAE keep the official
parameter names, so their tensors are copied unchanged (same bytes, same dtype); only
DynamiCrafter's SD-layout VAE is renamed to diffusers' AutoencoderKL layout, by diffusers' own
`convert_ldm_vae_checkpoint`. Configs come from the shipped `artifacts/configs/<name>/` (or
`configs`), so a conversion needs nothing from the network.

Safety: safetensors are read as they are; DynamiCrafter's pickled `model.ckpt` only through
`torch.load(weights_only=True)`, and a file that refuses is reported in one line, never loaded
another way. Text encoders are not converted: text features come saved, as for every family.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from anti_i2v.core.common import ToolkitError, atomic_dir
from anti_i2v.models.registry import REAL_CONFIGS

# What `convert` takes: model name -> the family its pipeline belongs to.
CONVERTIBLE = {"opensora-1.2": "opensora", "dynamicrafter": "dynamicrafter"}
DYNAMICRAFTER_SIZES = (512, 1024)
# model.ckpt prefix -> pipeline component (the VAE is renamed separately, from `first_stage_model.`)
DYNAMICRAFTER_PREFIXES = {
    "model.diffusion_model.": "unet",
    "image_proj_model.": "image_proj_model",
}
VAE_PREFIX = "first_stage_model."
# Kept out of the pipeline on purpose: the text tower (features come saved) and the schedule's
# buffers (diffusers' DDIMScheduler computes them; `Converted.checks` compares the two).
DROPPED = ("cond_stage_model.", "model_ema.")


@dataclass
class Converted:
    """What a conversion wrote: the folder, tensors per component, and what it checked or left out."""

    folder: Path
    tensors: dict[str, int]
    dropped: dict[str, int] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)


def config_folder(name: str) -> Path:
    """The shipped config folder of a convertible model (`opensora-1.2`, `dynamicrafter-512`, ...)."""
    folder = REAL_CONFIGS / name
    if not (folder / "model_index.json").is_file():
        raise ToolkitError(
            f"the shipped configs of {name} are missing from {folder}: restore artifacts/configs "
            "from git (or pass --configs DIR)"
        )
    return folder


def check_request(model: str, source: Path, out: Path, size: int) -> None:
    """Every bad input, in one line each, before any file is read."""
    if model not in CONVERTIBLE:
        raise ToolkitError(
            f"cannot convert {model!r}: convert takes {' or '.join(CONVERTIBLE)} (diffusers "
            "families need no conversion: pass their folder or hub id)"
        )
    if size not in DYNAMICRAFTER_SIZES:
        raise ToolkitError(f"--size {size}: DynamiCrafter comes as 512 or 1024")
    if not source.exists():
        raise ToolkitError(f"{source} does not exist: pass the downloaded checkpoint")
    if model == "opensora-1.2" and not source.is_dir():
        raise ToolkitError(
            f"{source} is a file: pass the folder holding the downloads of "
            "hpcai-tech/OpenSora-STDiT-v3 and hpcai-tech/OpenSora-VAE-v1.2"
        )
    if model == "dynamicrafter" and source.is_dir():
        raise ToolkitError(
            f"{source} is a folder: pass the checkpoint file itself (model.ckpt of "
            "Doubiiu/DynamiCrafter_512 or _1024, or a safetensors copy of its state dict)"
        )
    if out.exists():
        raise ToolkitError(
            f"--out {out} already exists: conversion never overwrites; pass a new folder"
        )


def convert(
    model: str, source: Path, out: Path, size: int = 512, configs: Path | None = None
) -> Converted:
    """Convert an official checkpoint into a pipeline folder at `out` (written atomically).

    Args:
        model: `opensora-1.2` or `dynamicrafter`.
        source: Open-Sora: a folder holding the STDiT and VAE `model.safetensors` (anywhere below
            it); DynamiCrafter: `model.ckpt` (or a safetensors file with its keys).
        out: the new pipeline folder; must not exist.
        size: DynamiCrafter's 512 or 1024 (they share weights' layout, not settings).
        configs: a pipeline folder of configs to build into (default: the shipped one).

    Returns:
        What was written and checked.

    Raises:
        ToolkitError: a bad request, an unreadable file, or keys that do not match the layout.
    """
    source, out = Path(source), Path(out)
    check_request(model, source, out, size)
    folder = (
        Path(configs)
        if configs
        else config_folder(model if model == "opensora-1.2" else f"dynamicrafter-{size}")
    )
    if not (folder / "model_index.json").is_file():
        raise ToolkitError(f"--configs {folder} has no model_index.json: pass a pipeline folder")
    if model == "opensora-1.2":
        states, dropped, checks = _opensora_states(source), {}, []
    else:
        states, dropped, checks = _dynamicrafter_states(source, folder)
    pipe = _build(folder, CONVERTIBLE[model])
    for name, state in states.items():
        _load(getattr(pipe, name), state, name, source)
    with atomic_dir(out) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    return Converted(out, {k: len(v) for k, v in states.items()}, dropped, checks)


def _build(folder: Path, family: str):
    """The family's pipeline from `folder`'s configs, its weights on the meta device."""
    from anti_i2v.models.backbones import FAMILIES, read_model_index
    from anti_i2v.models.backbones.empty import build_empty

    return build_empty(folder, read_model_index(folder), FAMILIES[family], torch.float32)


def _load(module: torch.nn.Module, state: dict[str, torch.Tensor], name: str, source: Path) -> None:
    """Load `state` into the meta-device `module` as it is (`assign`: the tensors themselves)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].numel() != state[k].numel())
    if missing or unexpected or wrong:
        what = [
            f"{len(v)} {label} (first: {v[0]})"
            for label, v in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("of another size", wrong),
            )
            if v
        ]
        raise ToolkitError(
            f"{source}: its {name} does not match the official layout ({'; '.join(what)}); "
            "pass the unmodified official checkpoint"
        )
    # A buffer stored with another shape of the same size (the VAE's 4 scale values) is reshaped.
    state = {k: v.reshape(own[k].shape) for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=True)


def _keys(path: Path) -> set[str]:
    with safe_open(str(path), framework="pt") as f:
        return set(f.keys())


def _opensora_states(source: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The STDiT and VAE state dicts found as safetensors files under `source`."""
    found: dict[str, Path] = {}
    for path in sorted(source.rglob("*.safetensors")):
        try:
            keys = _keys(path)
        except Exception as exc:  # safetensors raises its own error types for damaged headers
            raise ToolkitError(
                f"{path} cannot be read as safetensors ({str(exc)[:120]}); download it again"
            ) from None
        if "spatial_blocks.0.attn.qkv.weight" in keys:
            found.setdefault("transformer", path)
        elif any(k.startswith("temporal_vae.") for k in keys):
            found.setdefault("vae", path)
    for name, repo in (("transformer", "OpenSora-STDiT-v3"), ("vae", "OpenSora-VAE-v1.2")):
        if name not in found:
            raise ToolkitError(
                f"{source} holds no {name} checkpoint: download hpcai-tech/{repo} into it "
                f"(`hf download hpcai-tech/{repo} --local-dir {source}/{repo}`)"
            )
    return {name: load_file(str(path)) for name, path in found.items()}


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's flat state dict: safetensors as is, a pickle only with weights_only=True."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise ToolkitError(
            f"{path} holds objects that torch.load(weights_only=True) refuses ({first}); this "
            "toolkit never unpickles anything else: save its state dict as safetensors where you "
            "trust the file and convert that"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ToolkitError(
            f"{path} cannot be read as a torch checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:120]}); download it again"
        ) from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ToolkitError(
            f"{path} is not a state dict (no 'state_dict' of tensors); pass model.ckpt"
        )
    return state


def _dynamicrafter_states(source: Path, configs: Path):
    """model.ckpt -> component state dicts, the keys left out by prefix, and schedule checks."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    state = read_checkpoint(source)
    states: dict[str, dict[str, torch.Tensor]] = {}
    for prefix, name in DYNAMICRAFTER_PREFIXES.items():
        states[name] = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    # The image tower: open_clip's whole CLIP under `embedder.model.` (its visual tower under
    # `visual.`), or the tower alone there.
    visual = "embedder.model.visual."
    tower = visual if any(k.startswith(visual) for k in state) else "embedder.model."
    states["image_encoder"] = {k[len(tower) :]: v for k, v in state.items() if k.startswith(tower)}
    ldm_vae = {k: v for k, v in state.items() if k.startswith(VAE_PREFIX)}
    vae_config = _vae_config(configs)
    states["vae"] = convert_ldm_vae_checkpoint(ldm_vae, vae_config) if ldm_vae else {}
    used = (*DYNAMICRAFTER_PREFIXES, tower, VAE_PREFIX)
    dropped: dict[str, int] = {}
    for key in state:
        if not key.startswith(used):
            head = key.split(".", 1)[0] + ("." if "." in key else "")
            dropped[head] = dropped.get(head, 0) + 1
    return states, dropped, _schedule_checks(state, configs)


def _vae_config(configs: Path) -> dict:
    import json

    return json.loads((configs / "vae" / "config.json").read_text())


def _schedule_checks(state: dict[str, torch.Tensor], configs: Path) -> list[str]:
    """Compare the checkpoint's schedule buffers with what the pipeline computes instead."""
    import json

    from diffusers import DDIMScheduler

    from anti_i2v.models.dynamicrafter.pipeline import dynamic_scale

    checks = []
    if "alphas_cumprod" in state:
        sched = DDIMScheduler.from_config(DDIMScheduler.load_config(configs / "scheduler"))
        gap = (state["alphas_cumprod"].double() - sched.alphas_cumprod.double()).abs().max()
        checks.append(f"alphas_cumprod vs DDIMScheduler's: max |diff| {float(gap):.2e}")
    if "scale_arr" in state:
        base = json.loads((configs / "model_index.json").read_text())["base_scale"]
        ours = torch.tensor([dynamic_scale(t, base) for t in range(len(state["scale_arr"]))])
        gap = (state["scale_arr"].double() - ours.double()).abs().max()
        checks.append(f"scale_arr vs dynamic_scale: max |diff| {float(gap):.2e}")
    return checks
