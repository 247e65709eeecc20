"""The attention share as a score: `attention.json` (`anti-i2v attention`) read into a store's scores.

The share is measured by a forward pass of its own (it needs the attention probabilities, which a
store does not keep), on photos and timesteps of its own; here it joins the store's scores under
`ATTENTION_MEASURE`, one value per block and probed timestep, so that the figures draw it beside
the other scores and the rule can rank blocks by it (`ChoiceRule.measures`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from anti_i2v.analyses.choose import ATTENTION_MEASURE, ChoiceRule, choose
from anti_i2v.analyses.profile import Profile
from anti_i2v.core.common import ToolkitError

ATTENTION_SCHEMA = "anti-i2v.attention/1"


def read_attention(path: Path) -> dict:
    """attention.json, checked for its schema; one line naming the problem otherwise."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ToolkitError(
            f"--attention {path}: cannot read it ({exc}); give the attention.json that "
            "`anti-i2v attention` wrote"
        ) from None
    if not isinstance(data, dict) or data.get("schema") != ATTENTION_SCHEMA:
        raise ToolkitError(
            f"--attention {path}: not an attention.json of schema {ATTENTION_SCHEMA}; "
            "write one with `anti-i2v attention MODEL PHOTOS --out DIR`"
        )
    return data


def attention_scores(
    data: dict, layers: list[str], timesteps: list[int], source: str = "--attention"
) -> dict[str, dict[str, list[float]]]:
    """The frame-0 share as a score: `{ATTENTION_MEASURE: layer -> one value per timestep}`.

    Args:
        data: attention.json's contents (`read_attention`).
        layers: the store's denoiser blocks; each must have been measured.
        timesteps: the store's timesteps; each must have been measured.

    Returns:
        The score, NaN where a block did not run at a timestep (an expert's, at the other's) or
        had no readable attention call.
    """
    measured = data.get("frame0", {})
    missing = [layer for layer in layers if layer not in measured]
    if missing:
        raise ToolkitError(
            f"{source}: no share for {missing[0]} (measured on {data.get('model')}); measure "
            "the store's own model with `anti-i2v attention`"
        )
    steps = [int(t) for t in data.get("timesteps", [])]
    absent = [t for t in timesteps if t not in steps]
    if absent:
        raise ToolkitError(
            f"{source}: measured at timesteps {steps}, the store has {absent[0]} too; pass "
            f"--timesteps {','.join(map(str, timesteps))} to `anti-i2v attention`"
        )
    return {
        ATTENTION_MEASURE: {
            layer: [
                math.nan
                if measured[layer][steps.index(t)] is None
                else measured[layer][steps.index(t)]
                for t in timesteps
            ]
            for layer in layers
        }
    }


def attention_anchors(profile: Profile, data: dict) -> list[str]:
    """The profile's anchor blocks re-chosen by the attention share alone.

    The profile's rule (anchor count and depth band) ranks blocks by the share instead of the
    semantic measures, and its collapse blocks and timesteps are kept: a study arm that differs
    from the profile's in the anchors only.

    Args:
        profile: a profile with its scores (`anti-i2v adapt`).
        data: attention.json's contents, measured at the profile's probed timesteps.

    Returns:
        The anchor blocks, in execution order.
    """
    steps = profile.timesteps_probed or profile.timesteps
    scores = profile.scores | attention_scores(data, profile.layers, steps, "attention.json")
    rule = {k: v for k, v in profile.rule.items() if k in ChoiceRule.__dataclass_fields__}
    rule = ChoiceRule(**{**rule, "measures": (ATTENTION_MEASURE,)})
    return choose(scores, profile.layers, steps, rule, collapse=profile.collapse_layers)[
        "anchor_layers"
    ]
