"""The shipped artifacts: built-in model and judge names, and the folders they live in.

The model layer's registry (`load_backbone` resolves built-in names here; the mini world and
evaluate name their judges through it). ANTI_I2V_ARTIFACTS points it at another artifacts folder.
"""

from __future__ import annotations

import os
from pathlib import Path

# An editable install or a clone: artifacts/ sits beside the packages. ANTI_I2V_ARTIFACTS overrides.
ARTIFACTS = Path(
    os.environ.get("ANTI_I2V_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts")
)
MODELS = ARTIFACTS / "models"
MINI_PIPELINE = MODELS / "mini-cogvideox-i2v"
MINI_SVD_PIPELINE = MODELS / "mini-svd-i2v"
# The v2 world's models, as `anti-i2v world train --world v2 --out artifacts/models/v2` writes them.
MODELS_V2 = MODELS / "v2"
# Built-in trained models: name -> pipeline folder, and the world each was trained on.
MINI_MODELS = {
    "mini-cogvideox": MINI_PIPELINE,
    "mini-svd": MINI_SVD_PIPELINE,
    "mini-cogvideox-v2": MODELS_V2 / "mini-cogvideox-i2v",
    "mini-svd-v2": MODELS_V2 / "mini-svd-i2v",
}
MINI_WORLD = {
    "mini-cogvideox": "v1",
    "mini-svd": "v1",
    "mini-cogvideox-v2": "v2",
    "mini-svd-v2": "v2",
}
# Published configs of real models (no weights): name -> folder, for `plan` on the meta device.
REAL_CONFIGS = ARTIFACTS / "configs"
MINI_IDENTITY = MODELS / "mini-identity"  # v2: trained with a face recogniser's augmentations
MINI_IDENTITY_V1 = MODELS / "mini-identity-v1"  # the first judge; it reads colour as identity
# Built-in identity judges by name. `mini-identity` (judge v2) and `mini-identity-v1` judge the v1
# world's 64x64 portraits; `mini-identity-world2` is judge v2's recipe trained on the v2 world.
MINI_JUDGES = {
    "mini-identity": MINI_IDENTITY,
    "mini-identity-v1": MINI_IDENTITY_V1,
    "mini-identity-world2": MODELS_V2 / "mini-identity",
}
WORLD_JUDGE = {"v1": "mini-identity", "v2": "mini-identity-world2"}  # each world's default judge


def judge_name(spec: str | Path) -> str:
    """How results and cards name a judge, as `--identity` takes it: a built-in name as given,
    a built-in judge's folder by its name (v2's judge folder is also called mini-identity),
    `facenet:PATH` as facenet, any other folder by its own name (never a user's path)."""
    text = str(spec)
    if text in MINI_JUDGES or text == "dlib":
        return text
    if text.startswith("facenet:"):
        return "facenet"
    return next((name for name, f in MINI_JUDGES.items() if f == Path(spec)), Path(spec).name)


def train_hint(world: str) -> str:
    """The command that rebuilds a world's shipped models."""
    return "anti-i2v world train " + (
        "--out artifacts/models"
        if world == "v1"
        else f"--world {world} --out artifacts/models/{world}"
    )


# The supported families and the diffusers pipeline each adapter drives, in registration order
# (`anti_i2v.models.backbones.FAMILIES` holds the adapters; a test keeps the two equal). Here as
# names, so that `anti-i2v models` lists them without importing diffusers.
FAMILY_PIPELINES: dict[str, str] = {
    "cogvideox": "CogVideoXImageToVideoPipeline",
    "wan": "WanImageToVideoPipeline",
    "wan22": "WanImageToVideoPipeline",
    "ltx": "LTXImageToVideoPipeline",
    "hunyuan": "HunyuanVideoImageToVideoPipeline",
    "svd": "StableVideoDiffusionPipeline",
    "opensora": "OpenSoraPipeline",
    "dynamicrafter": "DynamiCrafterPipeline",
    "skyreels-v2": "SkyReelsV2ImageToVideoPipeline",
    "wan22-a14b": "WanImageToVideoPipeline",  # with transformer_2 and boundary_ratio
    "wan-vace": "WanVACEPipeline",
    "skyreels-v2-df": "SkyReelsV2DiffusionForcingImageToVideoPipeline",
    "cosmos2": "Cosmos2VideoToWorldPipeline",
    "hunyuan15": "HunyuanVideo15ImageToVideoPipeline",
    "ltx2": "LTX2ImageToVideoPipeline",
}

BUILTINS: dict[str, str] = {
    "mini-cogvideox": "the shipped mini CogVideoX-I2V trained on the mini world (64x64, 9 frames)",
    "mini-svd": "the shipped mini SVD-style UNet trained on the same world (64x64, 9 frames)",
    "mini-cogvideox-v2": "the mini CogVideoX-I2V of the v2 world (96x96 photo-like portraits, 12 "
    "blocks, 9 frames)",
    "mini-svd-v2": "the mini SVD-style UNet of the v2 world (96x96 photo-like portraits, 9 frames)",
    **{
        f"tiny:{f}": f"{f} at diffusers' test size with seeded random weights"
        for f in FAMILY_PIPELINES
    },
}


def real_configs() -> dict[str, Path]:
    """Shipped configs of real models (no weights, for `plan`): name -> folder."""
    if not REAL_CONFIGS.is_dir():
        return {}
    return {p.name: p for p in sorted(REAL_CONFIGS.iterdir()) if (p / "model_index.json").is_file()}


def source_convert(folder: Path) -> str:
    """The command a config folder's SOURCE gives for making a pipeline of the official weights
    (its `convert:` line: families not in diffusers), or ""."""
    source = folder / "SOURCE"
    lines = source.read_text().splitlines() if source.exists() else []
    return next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("convert:")), ""
    )


def source_hub(folder: Path) -> str:
    """The hub id a config folder's SOURCE names on its first line (`hub id: ...`), or ""."""
    source = folder / "SOURCE"
    first = source.read_text().splitlines()[0] if source.exists() else ""
    return first.split(":", 1)[1].split("(")[0].strip() if first.startswith("hub id:") else ""
