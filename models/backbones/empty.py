"""Real architectures with no weights: a pipeline folder of configs, built on the meta device.

`artifacts/configs/<name>/` holds the published component configs of real models (CogVideoX-5B-I2V,
Wan2.1-I2V-14B, ...) and no weights. `build_empty` reads its `model_index.json` and builds every
component the adapter uses with `accelerate.init_empty_weights`: parameters and buffers live on the
meta device, so a 14B model is built in seconds with no memory, and `plan` runs its real modules under
`FakeTensorMode`. Generating, probing and cloaking need real weights; `weights_needed` says so in
one line, naming where to get them.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from pathlib import Path
from typing import Any

import torch

from anti_i2v.core.common import ToolkitError
from anti_i2v.models.registry import source_convert, source_hub


def has_weights(folder: Path) -> bool:
    """Whether a pipeline folder holds any weights (safetensors or, refused later, pickles)."""
    return any(folder.rglob("*.safetensors")) or any(folder.rglob("*.bin"))


def weights_needed(folder: Path, model: str) -> ToolkitError:
    """The one-line refusal for running a config-only model (its SOURCE names the hub id)."""
    hub, convert = source_hub(folder), source_convert(folder)
    if convert:  # official checkpoints of families written here become pipelines by conversion
        get = f"download {hub} where you have access, run `{convert}` and pass PIPELINE"
    else:
        get = (
            f"`hf download {hub} --local-dir DIR`" if hub else "download its weights"
        ) + " where you have access and pass DIR"
    return ToolkitError(
        f"{model} has configs but no weights (planning only: `anti-i2v plan {model}`); to "
        f"generate, probe or protect with it, {get}"
    )


# diffusers pipeline packages whose own components (LTX-2's connectors and vocoder) a
# `model_index.json` names by the package, as diffusers' save_pretrained writes them.
PIPELINE_MODULES = ("ltx2",)


def _library(name: str) -> Any:
    """The module a `model_index.json` entry names: diffusers (or one of its PIPELINE_MODULES),
    transformers, or this toolkit's own model modules (Open-Sora, DynamiCrafter). Nothing else
    is imported: importing runs code."""
    import diffusers
    import transformers

    if name == "diffusers":
        return diffusers
    if name in PIPELINE_MODULES:
        return importlib.import_module(f"diffusers.pipelines.{name}")
    if name == "transformers":
        return transformers
    if name.startswith("anti_i2v.models.") and name.split(".")[2] in ("opensora", "dynamicrafter"):
        return importlib.import_module(name)
    raise ValueError(
        f"components from {name!r} are not loaded (only diffusers, transformers and anti_i2v.models)"
    )


def _component(folder: Path, library: str, cls: str, dtype: torch.dtype, empty: bool) -> Any:
    import diffusers
    import transformers
    from accelerate import init_empty_weights

    klass = getattr(_library(library), cls)
    if cls.endswith(("Processor", "FeatureExtractor")):
        return klass.from_pretrained(folder)
    if library == "diffusers" and issubclass(klass, diffusers.SchedulerMixin):
        return klass.from_config(klass.load_config(folder))
    # Built in `dtype` (not cast after): `.to()` on a built model warns about fp32-kept modules.
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with init_empty_weights(include_buffers=True) if empty else contextlib.nullcontext():
            if library != "transformers":  # diffusers' classes and the toolkit's own
                return klass.from_config(klass.load_config(folder))
            return klass._from_config(transformers.AutoConfig.from_pretrained(folder))
    finally:
        torch.set_default_dtype(default)


def build_empty(
    folder: Path, index: dict[str, Any], adapter, dtype: torch.dtype, seed: int | None = None
) -> Any:
    """The adapter's pipeline class over meta-device components read from `folder`'s configs.

    With a `seed`, the components get real random weights instead (diffusers' own initialisation,
    seeded): a random-weight instance has the real cost, for measuring what `plan` predicts.

    Args:
        folder: a pipeline folder of configs (`model_index.json`, `<component>/config.json`).
        index: its parsed `model_index.json`.
        adapter: the family's `Backbone` subclass (its `pipeline_class`, `skip_components`).
        dtype: the dtype the weights would have (sizes in plans follow it).

    Returns:
        The pipeline; components the adapter never loads, or that have no folder, are None.
    """
    accepted = inspect.signature(adapter.pipeline_class.__init__).parameters
    kwargs: dict[str, Any] = {}
    for name, value in index.items():
        if name.startswith("_") or name not in accepted:
            continue
        if not isinstance(value, list):  # pipeline settings (expand_timesteps, boundary_ratio)
            kwargs[name] = value
            continue
        library, cls = value
        sub = folder / name
        if name in adapter.skip_components or library is None or not sub.is_dir():
            kwargs[name] = None
            continue
        try:
            with torch.random.fork_rng(devices=[]):  # seeded here without touching the caller's RNG
                if seed is not None:
                    torch.manual_seed(seed)
                kwargs[name] = _component(sub, library, cls, dtype, empty=seed is None)
        except (OSError, ValueError, AttributeError, TypeError, KeyError) as exc:
            # TypeError: a field of the wrong type (`"num_layers": "many"`)
            raise ToolkitError(
                f"{sub}: cannot build {cls} from its config ({str(exc).splitlines()[0][:160]}); "
                "restore the folder from artifacts/configs or its source"
            ) from None
    for name in ("transformer", "unet"):  # the denoiser: nothing can be planned without it
        if name in accepted and kwargs.get(name) is None:
            raise ToolkitError(
                f"{folder} has no {name}/config.json: a pipeline folder needs its denoiser's "
                "config; restore the folder from artifacts/configs or its source"
            )
    for name, param in accepted.items():  # components the folder does not list at all
        if name != "self" and name not in kwargs and param.default is inspect.Parameter.empty:
            kwargs[name] = None
    return adapter.pipeline_class(**{**kwargs, **adapter.stand_in_components()})
