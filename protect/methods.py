"""Protection methods: each is a space plus loss weights, run through the same loop and budget.

| method               | space | terms                                   | after                      |
|----------------------|-------|-----------------------------------------|----------------------------|
| `anti-i2v`           | dual  | irc, ira, diffusion, lpips              | Anti-I2V (CVPR 2026)       |
| `rgb-pgd`            | rgb   | diffusion                               | AdvDM-style PGD            |
| `mist`               | rgb   | diffusion + latent pull to a target     | Mist                       |
| `sds`                | rgb   | score-distillation surrogate            | SDS(+) (Xue et al.)        |
| `photoguard-encoder` | rgb   | latent pull to a target (VAE only)      | PhotoGuard encoder attack  |
| `random-noise`       | rgb   | none: uniform noise at the same budget  | control                    |
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """A method's defaults: the space it perturbs and the weight of each loss term."""

    name: str
    space: str
    weights: dict[str, float]
    optimises: bool = True


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("anti-i2v", "dual", {"irc": 1.0, "ira": 1.0, "diffusion": 1.0, "lpips": 1.0}),
        Method("rgb-pgd", "rgb", {"diffusion": 1.0}),
        Method("mist", "rgb", {"diffusion": 1.0, "latent_pull": 1.0}),
        Method("sds", "rgb", {"sds": 1.0}),
        Method("photoguard-encoder", "rgb", {"latent_pull": 1.0}),
        Method("random-noise", "rgb", {}, optimises=False),
    )
}


LOSS_TERMS = ("irc", "ira", "diffusion", "lpips", "sds", "latent_pull", "attention", "unrolled")
PROFILE_TERMS = ("irc", "ira", "attention")  # the terms that need a layer profile


def parse_loss(entry: str) -> tuple[str, float | None]:
    """`"attention=30"` -> ("attention", 30.0); `"irc"` -> ("irc", None): a term and its weight,
    if given (`--losses diffusion,attention=30`)."""
    name, _, weight = entry.partition("=")
    try:
        value = float(weight) if weight else None
    except ValueError:
        raise ValueError(f"--losses {entry}: a weight is a number, e.g. {name}=10") from None
    if name not in LOSS_TERMS:
        raise ValueError(
            f"--losses {entry}: unknown loss {name!r}; choose from {', '.join(LOSS_TERMS)}"
        )
    if value is not None and not (value > 0 and value < float("inf")):
        raise ValueError(f"--losses {entry}: a weight above 0")
    return name, value


def method_weights(method: str, losses: list[str] | None) -> dict[str, float]:
    """A method's loss weights, restricted to `losses` when the user names them; an entry
    `term=w` sets that term's weight (the method's own, else 1, otherwise)."""
    base = METHODS[method].weights
    if losses is None:
        return dict(base)
    weights = {}
    for entry in losses:
        name, value = parse_loss(entry)
        weights[name] = value if value is not None else base.get(name, 1.0)
    return weights
