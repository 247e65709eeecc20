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
