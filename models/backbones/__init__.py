"""Backbone registry and loading: built-in names, local pipeline folders and hub ids.

`load_backbone("tiny:wan")`, `load_backbone("mini-cogvideox")`,
`load_backbone("/models/CogVideoX-5b-I2V")` and `load_backbone("THUDM/CogVideoX-5b-I2V")` all
end in the same adapter class; the family comes from `model_index.json` unless overridden.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from anti_i2v.core.common import ToolkitError
from anti_i2v.models.backbones import (
    cogvideox,
    cosmos,
    dynamicrafter,
    hunyuan,
    hunyuan15,
    ltx,
    ltx2,
    opensora,
    skyreels,
    skyreels_df,
    svd,
    wan,
    wan22,
    wan22_a14b,
    wan_vace,
)
from anti_i2v.models.backbones.base import Backbone, Conditioning
from anti_i2v.models.backbones.empty import build_empty, has_weights, weights_needed
from anti_i2v.models.registry import (  # noqa: F401  (BUILTINS, real_configs: re-exported)
    BUILTINS,
    FAMILY_PIPELINES,
    MINI_MODELS,
    MINI_WORLD,
    real_configs,
    train_hint,
)

__all__ = [
    "Backbone",
    "Conditioning",
    "FAMILIES",
    "BUILTINS",
    "load_backbone",
    "family_of",
    "model_family",
    "resolve_model",
    "weights_sha256",
    "real_configs",
    "check_offload",
    "check_generates",
]

PROMPT_EMBEDS = "prompt_embeds.safetensors"  # saved text conditioning beside a pipeline folder

FAMILIES: dict[str, type[Backbone]] = {}
TINY: dict[str, Callable[[int], Any]] = {}
TINY_SIZES: dict[str, tuple[tuple[int, int], int]] = {}  # family -> ((height, width), frames)


def register(
    adapter: type[Backbone], tiny: Callable[[int], Any], size: tuple[tuple[int, int], int]
) -> None:
    """Add a family; names are unique."""
    if adapter.family in FAMILIES:
        raise ValueError(f"backbone family {adapter.family!r} is already registered")
    FAMILIES[adapter.family] = adapter
    TINY[adapter.family] = tiny
    TINY_SIZES[adapter.family] = size


register(cogvideox.CogVideoX, cogvideox.tiny, ((32, 32), 9))
register(wan.Wan, wan.tiny, ((32, 32), 9))
register(wan22.Wan22, wan22.tiny, ((64, 64), 9))
register(ltx.LTX, ltx.tiny, ((32, 32), 9))
register(hunyuan.Hunyuan, hunyuan.tiny, ((32, 32), 9))
register(svd.SVD, svd.tiny, ((32, 32), 2))
register(opensora.OpenSora, opensora.tiny, ((32, 32), 9))
register(dynamicrafter.DynamiCrafter, dynamicrafter.tiny, ((32, 32), 9))
register(skyreels.SkyReelsV2, skyreels.tiny, ((32, 32), 9))
register(wan22_a14b.Wan22A14B, wan22_a14b.tiny, ((32, 32), 9))
register(wan_vace.WanVACE, wan_vace.tiny, ((32, 32), 9))
register(skyreels_df.SkyReelsV2DF, skyreels_df.tiny, ((32, 32), 9))
register(cosmos.Cosmos2, cosmos.tiny, ((32, 32), 9))
register(hunyuan15.Hunyuan15, hunyuan15.tiny, ((64, 64), 9))
register(ltx2.LTX2, ltx2.tiny, ((32, 32), 9))
# model_index.json `_class_name` -> family (Wan's one pipeline class serves 2.1 and 2.2).
_PIPELINE_FAMILY = {
    "CogVideoXImageToVideoPipeline": "cogvideox",
    "WanImageToVideoPipeline": "wan",
    "LTXImageToVideoPipeline": "ltx",
    "LTXConditionPipeline": "ltx",
    "HunyuanVideoImageToVideoPipeline": "hunyuan",
    "StableVideoDiffusionPipeline": "svd",
    "OpenSoraPipeline": "opensora",
    "DynamiCrafterPipeline": "dynamicrafter",
    "SkyReelsV2ImageToVideoPipeline": "skyreels-v2",
    "WanVACEPipeline": "wan-vace",
    "SkyReelsV2DiffusionForcingImageToVideoPipeline": "skyreels-v2-df",
    "Cosmos2VideoToWorldPipeline": "cosmos2",
    "HunyuanVideo15ImageToVideoPipeline": "hunyuan15",
    "LTX2ImageToVideoPipeline": "ltx2",
    "WanPipeline": "wan",  # Wan2.2-TI2V-5B publishes this class with expand_timesteps (image-to-video)
}


def family_of(index: dict[str, Any]) -> str:
    """The family of a pipeline from its `model_index.json` contents."""
    cls = index.get("_class_name", "")
    family = _PIPELINE_FAMILY.get(cls)
    if family == "wan" and index.get("expand_timesteps"):
        family = "wan22"
    elif family == "wan" and index.get("boundary_ratio") and index.get("transformer_2"):
        family = "wan22-a14b"  # two experts (Wan2.2-I2V-A14B)
    elif cls == "WanPipeline":
        family = None  # Wan's text-to-video models
    if family is None:
        raise ToolkitError(
            f"pipeline class {cls!r} is not a supported image-to-video family; supported: "
            f"{', '.join(sorted(FAMILIES))} (pass --family to force one)"
        )
    return family


def model_family(model: str) -> str:
    """MODEL's family, read without loading it (cheap: a command asks before any model work)."""
    if model.startswith("tiny:"):
        return _check_family(model.split(":", 1)[1])
    return family_of(read_model_index(resolve_model(model, weights=False)))


def check_generates(model: str, family: str | None = None) -> None:
    """One line, before any model loads, where MODEL's family cannot generate on this install
    (LTX-2 without PyAV); `family` overrides the one its `model_index.json` names.

    Raises:
        ToolkitError: naming the model, the reason and the fix.
    """
    refusal = FAMILIES[
        _check_family(family) if family else model_family(model)
    ].generation_refusal()
    if refusal is not None:
        raise ToolkitError(f"{model}: {refusal}")


def _check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ToolkitError(f"unknown family {family!r}; supported: {', '.join(sorted(FAMILIES))}")
    return family


def _hub_folder(model: str) -> Path:
    """Download a hub pipeline (safetensors only), or explain why it cannot be had."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(
            snapshot_download(model, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
        )
    except RepositoryNotFoundError:
        raise ToolkitError(
            f"unknown model id {model!r}: no such repository on the Hugging Face hub "
            "(check the spelling, or run `anti-i2v models` for the built-in names)"
        ) from None
    except (LocalEntryNotFoundError, OSError) as exc:
        raise ToolkitError(
            f"cannot fetch {model!r}: the Hugging Face hub is unreachable and it is not in the local cache "
            f"({type(exc).__name__}); download it where you have access (`hf download {model} --local-dir DIR`) "
            "and pass DIR"
        ) from None


def resolve_model(model: str, weights: bool = True) -> Path | None:
    """Where MODEL's pipeline lives (None for `tiny:*`), or one line saying why there is none.

    Cheap for built-in names and local folders, so commands call it before any model work.
    With `weights`, a folder of configs only (`artifacts/configs`) is refused: it can be planned,
    not run.
    """
    folder = _resolve(model)
    if weights and folder is not None and not has_weights(folder):
        read_model_index(folder)  # a damaged folder says so first
        raise weights_needed(folder, _short_name(folder, model))
    return folder


def _short_name(folder: Path, model: str) -> str:
    """A built-in's or shipped config's own name (not its folder path), else `model` as given."""
    return {v: k for k, v in {**MINI_MODELS, **real_configs()}.items()}.get(folder, model)


def _resolve(model: str) -> Path | None:
    if model.startswith("tiny:"):
        _check_family(model.split(":", 1)[1])
        return None
    name = "mini-cogvideox" if model == "mini" else model
    if name in MINI_MODELS:
        folder = MINI_MODELS[name]
        if not (folder / "model_index.json").exists():
            raise ToolkitError(
                f"the built-in model {name} is missing from {folder}: restore artifacts/ from git or run "
                f"`{train_hint(MINI_WORLD[name])}`"
            )
        return folder
    configs = real_configs()
    if name in configs:
        return configs[name]
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model_index.json").exists():
            raise ToolkitError(
                f"{path} is not a diffusers pipeline folder (no model_index.json); pass the folder that "
                "`save_pretrained` wrote"
            )
        return path
    if model.count("/") == 1 and not model.startswith((".", "/")):
        return _hub_folder(model)
    raise ToolkitError(
        f"unknown model {model!r}: expected a built-in name (`anti-i2v models`), a local pipeline folder "
        "or a hub id like THUDM/CogVideoX-5b-I2V"
    )


def check_offload(offload: str, device: str) -> None:
    """CPU offload needs a GPU to offload to; one line otherwise (call it before any work)."""
    if offload != "none" and torch.device(device).type == "cpu":
        raise ToolkitError(
            f"--offload {offload} needs a GPU: on CPU the weights already live in host memory; "
            "drop --offload (or pass --device cuda)"
        )


def read_model_index(folder: Path) -> dict[str, Any]:
    """A pipeline folder's `model_index.json`, or one line saying it is damaged."""
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError) as exc:
        raise ToolkitError(
            f"{folder / 'model_index.json'} cannot be read ({type(exc).__name__}: "
            f"{str(exc)[:80]}); restore the folder from its source (`save_pretrained` writes it)"
        ) from None
    if not isinstance(index, dict):
        raise ToolkitError(
            f"{folder / 'model_index.json'} is not a JSON object; restore it from the model's source"
        )
    return index


def weights_sha256(model: str, family: str | None = None, seed: int = 0) -> str:
    """Hash of the weights `load_backbone(model, family, seed=seed)` loads: what the config does not say.

    Two models with one config (a retrained or fine-tuned copy in the same folder) compute
    different things, so every cache of model outputs (reference and generated videos, finished
    cloaks, activation stores) is keyed by this as well as by the config. A pipeline folder's
    hash covers the bytes of every safetensors file of the components it loads and its saved
    text embeddings: the first call reads the weights once (tens of seconds for a 28 GB model,
    as loading it does), later ones only while a file's size or modification time changed. A
    `tiny:*` model is built from its seed.
    """
    if model.startswith("tiny:"):
        return hashlib.sha256(f"{model}/seed={seed}".encode()).hexdigest()
    folder = resolve_model(model)
    index = read_model_index(folder)
    skipped = FAMILIES[_check_family(family) if family else family_of(index)].skip_components
    files = []
    for file in sorted(folder.rglob("*.safetensors")):
        rel = file.relative_to(folder)
        if rel.parts[0] not in skipped:  # never loaded
            stat = file.stat()
            files.append((rel.as_posix(), str(file.resolve()), stat.st_size, stat.st_mtime_ns))
    return _hash_files(tuple(files))


@functools.lru_cache(maxsize=64)
def _hash_files(files: tuple[tuple[str, str, int, int], ...]) -> str:
    """sha256 over (name, content hash) of each `(name, path, size, mtime_ns)`; memoised on all four."""
    digest = hashlib.sha256()
    for name, path, _, _ in files:
        with open(path, "rb") as handle:
            digest.update(name.encode() + hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def load_backbone(
    model: str,
    family: str | None = None,
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    seed: int = 0,
    weights: bool | str = True,
    offload: str = "none",
) -> Backbone:
    """Load a backbone adapter from a built-in name, a local pipeline folder or a hub id.

    Args:
        model: `tiny:<family>`, `mini-cogvideox`, `mini-svd`, a pipeline folder or a hub id.
        family: force a family instead of reading it from `model_index.json`.
        dtype: the weights' dtype ("float32", "bfloat16", "float16" or a torch dtype).
        device: where the pipeline lives.
        seed: the seed of `tiny:` models' random weights.
        weights: True needs weights and refuses a config-only folder; False builds pipeline
            folders on the meta device from their configs, with no weights read (for `plan`);
            "random" builds them with diffusers' own initialisation seeded by `seed` (a
            random-weight instance has the real cost, to measure what `plan` predicts).
        offload: "model" or "sequential" keeps the weights in host memory and moves each
            component (or each leaf module) to `device` as it runs, with diffusers' offload
            hooks; for models larger than the GPU. Needs a GPU `device`.

    Returns:
        The family's adapter around the loaded pipeline (text encoders are never loaded).

    Raises:
        ToolkitError: unknown names, damaged folders, missing weights or no hub access.
    """
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    check_offload(offload, device)
    if model.startswith("tiny:"):
        fam = _check_family(family or model.split(":", 1)[1])
        pipe = TINY[fam](seed).to(device)
        if torch_dtype != torch.float32:
            pipe = pipe.to(dtype=torch_dtype)
        size, frames = TINY_SIZES[fam]
        backbone = FAMILIES[fam](pipe, model, resolution=size, frames=frames)
        backbone.weights_sha256 = weights_sha256(model, seed=seed)
        return backbone

    folder = resolve_model(model, weights=weights is True)
    index = read_model_index(folder)
    fam = _check_family(family) if family else family_of(index)
    adapter = FAMILIES[fam]
    text_file = folder / PROMPT_EMBEDS
    text = load_file(str(text_file)) if text_file.exists() else None
    builtin = _short_name(folder, model)
    if weights is False:  # configs only, on the meta device
        return adapter(build_empty(folder, index, adapter, torch_dtype), builtin, text=text)
    if weights == "random":
        pipe = build_empty(folder, index, adapter, torch_dtype, seed=seed)
        backbone = adapter(pipe.to(device), builtin, text=text)
        backbone.weights_sha256 = hashlib.sha256(f"random/seed={seed}".encode()).hexdigest()
        return backbone
    # Text encoders are never loaded: text conditioning comes from saved embeddings.
    skipped = {name: None for name in adapter.skip_components if name in index}
    try:
        pipe = adapter.pipeline_class.from_pretrained(
            folder,
            dtype=torch_dtype,
            use_safetensors=True,
            **{**skipped, **adapter.stand_in_components()},
        )
    except (OSError, ValueError) as exc:
        raise ToolkitError(
            f"cannot load {model!r} as a {fam} pipeline ({str(exc).splitlines()[0][:200]}); "
            "the folder needs safetensors weights for every component"
        ) from None
    if offload == "none":
        backbone = adapter(pipe.to(device), builtin, text=text)
    else:
        if offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.enable_sequential_cpu_offload(device=device)
        backbone = adapter(pipe, builtin, text=text)
        backbone.execution_device = torch.device(device)
    backbone.weights_sha256 = weights_sha256(model, family, seed)
    return backbone
