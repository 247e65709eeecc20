"""Where the toolkit finds its shipped artifacts (models, profiles, reports)."""

from __future__ import annotations

import os
from pathlib import Path

# An editable install or a clone: artifacts/ sits beside the packages. ANTI_I2V_ARTIFACTS overrides.
ARTIFACTS = Path(os.environ.get("ANTI_I2V_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))
MODELS = ARTIFACTS / "models"
MINI_PIPELINE = MODELS / "mini-cogvideox-i2v"
MINI_SVD_PIPELINE = MODELS / "mini-svd-i2v"
# Built-in trained models: name -> pipeline folder.
MINI_MODELS = {"mini-cogvideox": MINI_PIPELINE, "mini-svd": MINI_SVD_PIPELINE}
MINI_IDENTITY = MODELS / "mini-identity"
