"""The layer profile (JSON, schema `anti-i2v.profile/1`): what analyses hands to protect.

`Profile` is the typed contract: `from_json` checks every field a consumer relies on (types,
non-empty picks, picks among the model's layers, timesteps on the 0..1000 scale), so a bad file
is refused in one line before any model work, not as a traceback after the reference video.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from anti_i2v.core.common import ToolkitError, nan_to_null, write_text_atomic
from anti_i2v.probe.config import check_timesteps

SCHEMA = "anti-i2v.profile/1"
REGENERATE = "regenerate it with `anti-i2v adapt MODEL PHOTOS --out DIR`"


_NUMBER = (int, float)
# The rule's fields and their types: the explorer prints them, so a profile whose rule holds
# anything else (text where a number belongs, markup) is refused rather than shown.
RULE_TYPES: dict[str, tuple[type, ...]] = {
    "n_collapse": (int,),
    "n_anchors": (int,),
    "n_timesteps": (int,),
    "n_vae_anchors": (int,),
    "collapse_max_depth": _NUMBER,
    "anchor_min_depth": _NUMBER,
    "anchor_max_depth": _NUMBER,
    "min_timestep": (int,),
}


def _is_number(x: Any, types: tuple[type, ...] = _NUMBER) -> bool:
    return isinstance(x, types) and not isinstance(x, bool)


def _check_fields(data: dict[str, Any], source: str) -> None:
    """Every field a page or a later stage reads, checked as the type it is (one line each)."""

    def bad(key: str, want: str, value: Any) -> ToolkitError:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return ToolkitError(f"{source}: {key} must be {want}, got {shown}; {REGENERATE}")

    rule = data.get("rule", {})
    if not isinstance(rule, dict):
        raise bad("rule", "an object", rule)
    for key, value in rule.items():
        if key == "measures":
            if not isinstance(value, list) or not all(
                isinstance(m, str) and m.isidentifier() for m in value
            ):
                raise bad("rule.measures", "a list of score names", value)
        elif key not in RULE_TYPES:
            raise bad(f"rule.{key}", "one of the rule's fields", key)
        elif not _is_number(value, RULE_TYPES[key]):
            raise bad(f"rule.{key}", "a number", value)
    scores = data.get("scores", {})
    if not isinstance(scores, dict):
        raise bad("scores", "an object", scores)
    for measure, per_layer in scores.items():
        if not measure.isidentifier():
            raise bad("scores", "keyed by score names", measure)
        if not isinstance(per_layer, dict) or not all(
            isinstance(v, list) and all(_is_number(x) or x is None for x in v)
            for v in per_layer.values()
        ):
            raise bad(f"scores.{measure}", "layer -> list of numbers", per_layer)
    for key in ("semantic", "low_level"):
        value = data.get(key, {})
        if not isinstance(value, dict) or not all(
            _is_number(v) or v is None for v in value.values()
        ):
            raise bad(key, "layer -> number", value)
    for key in ("model", "family", "config_sha256", "store"):
        if key in data and not isinstance(data[key], str):
            raise bad(key, "a string", data[key])


@dataclass(frozen=True)
class Profile:
    """The layers and timesteps a cloak targets, the scores behind the choice, and their provenance."""

    model: str
    family: str
    config_sha256: str
    layers: list[str]  # every block, in execution order
    collapse_layers: list[str]
    anchor_layers: list[str]
    timesteps: list[int]  # the timesteps the attack optimises at (0..1000 scale)
    # The VAE encoder's blocks, when probed (`probe --vae`), and the ones IRA anchors as well
    vae_layers: list[str] = field(default_factory=list)
    vae_anchor_layers: list[str] = field(default_factory=list)
    timesteps_probed: list[int] = field(default_factory=list)
    # Measure -> layer -> per timestep
    scores: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    semantic: dict[str, float] = field(default_factory=dict)
    low_level: dict[str, float] = field(default_factory=dict)
    rule: dict[str, Any] = field(default_factory=dict)
    analysis: dict[str, Any] = field(default_factory=dict)
    store: str = ""  # the store's folder name (no user path: profiles are shared)
    samples: int = 0
    masks: bool = False
    reference: str | None = None
    toolkit_version: str = ""
    schema: str = SCHEMA

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        # A profile without the VAE reads and hashes as before VAE probing existed, so cloaks
        # made with it still name it (`Profile.sha256` is recorded in every sidecar).
        for key in ("vae_layers", "vae_anchor_layers"):
            if not d[key]:
                d.pop(key)
        # A block that did not run at a timestep (one expert's, at the other's) scores NaN,
        # which JSON has no word for: null, read back as NaN.
        d["scores"] = {m: nan_to_null(by) for m, by in d["scores"].items()}
        return d

    @classmethod
    def from_json(cls, data: Any, source: str = "the profile") -> Profile:
        """Check and build a profile from parsed JSON; every problem is one ToolkitError line."""
        if not isinstance(data, dict):
            raise ToolkitError(
                f"{source} is a JSON {type(data).__name__}, not a profile object; {REGENERATE}"
            )
        if data.get("schema") != SCHEMA:
            raise ToolkitError(
                f"{source} has schema {data.get('schema')!r}, expected {SCHEMA!r}; {REGENERATE}"
            )
        required = (
            "model",
            "family",
            "config_sha256",
            "layers",
            "collapse_layers",
            "anchor_layers",
            "timesteps",
        )
        missing = [k for k in required if k not in data]
        if missing:
            raise ToolkitError(f"{source} lacks {', '.join(missing)}; {REGENERATE}")
        for key in ("layers", "collapse_layers", "anchor_layers"):
            value = data[key]
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise ToolkitError(
                    f"{source}: {key} must be a list of layer names, got {value!r}; {REGENERATE}"
                )
            if not value:
                raise ToolkitError(
                    f"{source}: {key} is empty; a cloak needs at least one; {REGENERATE}"
                )
        unknown = [
            x for x in data["collapse_layers"] + data["anchor_layers"] if x not in data["layers"]
        ]
        if unknown:
            raise ToolkitError(
                f"{source} picks {unknown[0]}, which is not among its layers; {REGENERATE}"
            )
        for key in ("vae_layers", "vae_anchor_layers"):
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise ToolkitError(
                    f"{source}: {key} must be a list of layer names, got {value!r}; {REGENERATE}"
                )
        unknown = [
            x for x in data.get("vae_anchor_layers", []) if x not in data.get("vae_layers", [])
        ]
        if unknown:
            raise ToolkitError(
                f"{source} picks {unknown[0]}, which is not among its VAE layers; {REGENERATE}"
            )
        ts = data["timesteps"]
        if not isinstance(ts, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in ts
        ):
            raise ToolkitError(
                f"{source}: timesteps must be a list of integers, got {ts!r}; {REGENERATE}"
            )
        check_timesteps(tuple(ts), flag=f"{source}: timesteps")
        _check_fields(data, source)
        known = {f for f in cls.__dataclass_fields__}
        fields = {k: v for k, v in data.items() if k in known}
        fields["scores"] = {
            m: {layer: [math.nan if v is None else v for v in vs] for layer, vs in by.items()}
            for m, by in fields.get("scores", {}).items()
        }
        return cls(**fields)

    @property
    def sha256(self) -> str:
        """A stable hash of the contents (recorded by protect, so a cloak names the profile it used)."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()

    def check_model(
        self,
        model: str,
        layers: list[str],
        config_sha256: str,
        vae_layers: list[str] | None = None,
    ) -> None:
        """Refuse a profile made for another model, naming exactly what differs.

        `vae_layers`: the model's VAE encoder blocks, when its VAE anchors are to be used.
        """
        problems = []
        missing = [x for x in self.vae_anchor_layers if x not in (vae_layers or [])]
        if vae_layers is not None and missing:
            problems.append(f"VAE anchors not in the model's VAE encoder: {missing}")
        if self.config_sha256 != config_sha256:
            problems.append(
                f"config hash {self.config_sha256[:12]} (profile) != {config_sha256[:12]} (model)"
            )
        only_profile = [x for x in self.layers if x not in layers]
        only_model = [x for x in layers if x not in self.layers]
        if only_profile:
            problems.append(
                f"layers only in the profile: {only_profile[:5]}{' ...' if len(only_profile) > 5 else ''}"
            )
        if only_model:
            problems.append(
                f"layers only in the model: {only_model[:5]}{' ...' if len(only_model) > 5 else ''}"
            )
        if problems:
            raise ToolkitError(
                f"the profile was made for {self.model} ({self.family}), not {model}: "
                + "; ".join(problems)
                + f". Run `anti-i2v adapt {model} IMAGES --out DIR` to make one for it"
            )


def save_profile(profile: Profile, path: Path) -> Path:
    """Write the profile atomically."""
    return write_text_atomic(path, json.dumps(profile.to_json(), indent=2) + "\n")


def load_profile(path: Path) -> Profile:
    """Read and check a profile file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, IsADirectoryError):
        raise ToolkitError(
            f"no profile at {path}; make one with `anti-i2v adapt MODEL IMAGES --out DIR`"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ToolkitError(f"{path} is not valid JSON ({exc}); {REGENERATE}") from None
    return Profile.from_json(data, source=str(path))
