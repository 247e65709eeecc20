"""The layer profile (JSON, schema `anti-i2v.profile/1`): what analyses hands to protect."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from probe.common import ToolkitError, write_text_atomic

SCHEMA = "anti-i2v.profile/1"
REQUIRED = ("schema", "model", "family", "config_sha256", "layers", "scores", "collapse_layers",
            "anchor_layers", "timesteps", "rule")


def save_profile(profile: dict[str, Any], path: Path) -> Path:
    """Write the profile atomically (a temporary file renamed into place)."""
    return write_text_atomic(path, json.dumps(profile, indent=2, sort_keys=False) + "\n")


def load_profile(path: Path) -> dict[str, Any]:
    """Read and validate a profile file."""
    path = Path(path)
    try:
        profile = json.loads(path.read_text())
    except FileNotFoundError:
        raise ToolkitError(f"no profile at {path}; make one with `anti-i2v adapt MODEL IMAGES --out DIR`") from None
    except json.JSONDecodeError as exc:
        raise ToolkitError(f"{path} is not valid JSON ({exc}); regenerate it with `anti-i2v analyse`") from None
    if profile.get("schema") != SCHEMA:
        raise ToolkitError(f"{path} has schema {profile.get('schema')!r}, expected {SCHEMA!r}")
    missing = [k for k in REQUIRED if k not in profile]
    if missing:
        raise ToolkitError(f"{path} lacks {', '.join(missing)}; regenerate it with `anti-i2v analyse`")
    return profile


def profile_sha256(profile: dict[str, Any]) -> str:
    """A stable hash of a profile's contents (recorded by protect)."""
    return hashlib.sha256(json.dumps(profile, sort_keys=True).encode()).hexdigest()


def check_profile(profile: dict[str, Any], model: str, layers: list[str], config_sha256: str) -> None:
    """Refuse a profile made for another model, naming exactly what differs."""
    problems = []
    if profile["config_sha256"] != config_sha256:
        problems.append(f"config hash {profile['config_sha256'][:12]} (profile) != {config_sha256[:12]} (model)")
    only_profile = [x for x in profile["layers"] if x not in layers]
    only_model = [x for x in layers if x not in profile["layers"]]
    if only_profile:
        problems.append(f"layers only in the profile: {only_profile[:5]}{' ...' if len(only_profile) > 5 else ''}")
    if only_model:
        problems.append(f"layers only in the model: {only_model[:5]}{' ...' if len(only_model) > 5 else ''}")
    if problems:
        raise ToolkitError(
            f"the profile was made for {profile['model']} ({profile['family']}), not {model}: "
            + "; ".join(problems) + f". Run `anti-i2v adapt {model} IMAGES --out DIR` to make one for it"
        )
