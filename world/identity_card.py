"""The identity judge's card: does it behave like a face recogniser? Measured on held-out portraits.

The gate (the honest-efficacy issue), each a mean over held-out identities:
- the same identity across the frames of its clip: at least 0.95;
- different identities (first frames): at most 0.2;
- a random smooth a*/b* field of +-8 units (no optimisation): at least 0.97;
- +-16/255 sign noise: at least 0.97.
A judge that fails the colour rows reads a colour cloak as a new identity: it measures colour.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from anti_i2v.core.common import write_text_atomic
from anti_i2v.models.registry import judge_name
from anti_i2v.world.dataset import identity_seeds
from anti_i2v.world.gates import gate_row, passes
from anti_i2v.world.identity import load_identity_encoder
from anti_i2v.world.robust import smooth_field
from anti_i2v.world.training import portrait_clip

GATE = {
    "same_identity_across_frames": (">=", 0.95),
    "different_identities": ("<=", 0.2),
    "ab_field_8": (">=", 0.97),
    "sign_noise_16": (">=", 0.97),
}


def measure_judge(folder: Path, count: int = 32, seed: int = 0) -> dict:
    """Every gate measure of the judge in `folder`, on `count` held-out portraits (deterministic)."""
    encoder = load_identity_encoder(folder)
    world = encoder.config["world"]  # the world it was trained on is the one it is judged on
    clips = [portrait_clip(s, world=world) for s in identity_seeds(count, seed, "heldout")]
    firsts = torch.stack([c[0] for c in clips])  # (N, 3, H, W)
    gen = torch.Generator().manual_seed(seed)
    # Only a* and b* move, each image by exactly 8 units at its peak, as a colour cloak would.
    field = _ab_field(firsts, 8.0, gen)
    sign = torch.sign(torch.randn(firsts.shape, generator=gen))
    noisy = (firsts + sign * 16 / 255).clamp(0, 1)
    with torch.no_grad():
        ref = encoder(firsts)
        same = torch.stack([(encoder(c[1:]) @ ref[i]).mean() for i, c in enumerate(clips)])
        cross = (ref @ ref.T)[~torch.eye(len(clips), dtype=torch.bool)]
        ab = (encoder(field) * ref).sum(-1)
        sn = (encoder(noisy) * ref).sum(-1)
    values = {
        "same_identity_across_frames": float(same.mean()),
        "different_identities": float(cross.mean()),
        "ab_field_8": float(ab.mean()),
        "sign_noise_16": float(sn.mean()),
    }
    lows = {"ab_field_8_min": float(ab.min()), "sign_noise_16_min": float(sn.min())}
    passed = {k: passes(v, *GATE[k]) for k, v in values.items()}
    return {
        "judge": judge_name(folder),
        "world": world,
        "heldout_identities": count,
        "seed": seed,
        **values,
        **lows,
        "passed": passed,
    }


def _ab_field(x: torch.Tensor, units: float, gen: torch.Generator) -> torch.Tensor:
    """A random smooth a*/b* field whose peak is exactly `units` on every image."""
    import kornia.color

    lab = kornia.color.rgb_to_lab(x)
    n, _, h, w = x.shape
    field = smooth_field(n, 2, (h, w), torch.full((n,), units), gen)
    return kornia.color.lab_to_rgb(torch.cat([lab[:, :1], lab[:, 1:] + field], dim=1), clip=True)


def write_judge_card(folder: Path, count: int = 32) -> tuple[Path, dict]:
    """Measure the judge and write `folder/README.md` (the card) and `folder/card.json`; returns both.

    The card names the judge as `--identity` takes it (`judge_name`).
    """
    m = measure_judge(folder, count)
    name = m["judge"]
    rows = "\n".join(
        gate_row(k, m[k], op, bound, m["passed"][k]) for k, (op, bound) in GATE.items()
    )
    text = f"""# {name}: the mini world's identity judge ({m["world"]} world)

Frames `(N, 3, H, W)` in [0, 1] -> unit embeddings; ISM is their cosine. Measured on
{m["heldout_identities"]} held-out portraits of the {m["world"]} world by
`anti-i2v world identity-card --identity {name}`.

| measure | value | gate | |
|---|---|---|---|
{rows}

Lowest single portrait: a*/b* field {m["ab_field_8_min"]:.3f}, sign noise {m["sign_noise_16_min"]:.3f}.
"""
    write_text_atomic(folder / "card.json", json.dumps(m, indent=2) + "\n")
    return write_text_atomic(folder / "README.md", text), m


def summary(m: dict) -> str:
    """One line per measure, for the console."""
    return "; ".join(f"{k} {m[k]:.3f} ({'pass' if m['passed'][k] else 'fail'})" for k in GATE) + (
        f"; lowest a*/b* {m['ab_field_8_min']:.3f}"
    )
