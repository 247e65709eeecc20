"""The one optimisation loop every method shares (sign-gradient ascent with projection).

Like advertorch's `perturb_iterative`: the caller gives an objective to *maximise* and a space;
each step takes `torch.autograd.grad`, moves every parameter by `alpha * sign(direction)`,
projects the parameters into the budget, and re-applies them so the image stays in [0, 1].

The direction is the gradient (`sign`: PGD, the paper's) or MI-FGSM's momentum of L1-normalised
gradients (`momentum`), and the step size is constant or decays on a half cosine (`cosine`):
the levers for reaching a 200-step cloak's effect in fewer steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from anti_i2v.protect.spaces import Space

Objective = Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
MOMENTUM_DECAY = 1.0  # MI-FGSM's mu (Dong et al. 2018)


def step_size(alpha: float, step: int, steps: int, decay: str) -> float:
    """Step `step`'s size (0-based, of `steps`): `alpha`, or `alpha` on a half cosine towards 0."""
    if decay == "constant":
        return alpha
    return alpha * 0.5 * (1 + math.cos(math.pi * step / steps))


def _per_sample_l1(g: torch.Tensor) -> torch.Tensor:
    """Each sample's mean |g| over its own elements, shaped to divide `g` (batch-independent)."""
    mean = g.abs().flatten(1).mean(1).clamp_min(1e-12)
    return mean.view(-1, *([1] * (g.dim() - 1)))


class DivergedError(RuntimeError):
    """The objective became NaN/inf or exploded; the photo is abandoned, others go on."""


@dataclass
class LoopResult:
    """The perturbed image, its parameters and the objective's history."""

    adv: torch.Tensor
    params: dict[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)


def perturb_iterative(
    image: torch.Tensor,
    objective: Objective,
    space: Space,
    steps: int,
    alpha: float,
    params: dict[str, torch.Tensor] | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    explode_at: float = 1e6,
    optimizer: str = "sign",
    alpha_decay: str = "constant",
) -> LoopResult:
    """Maximise `objective(space.apply(image, params))` by projected sign-gradient steps.

    Args:
        image: `(B, 3, H, W)` in [0, 1]; never modified.
        objective: `x_adv (B, 3, H, W) -> (scalar to maximise, {term: float})`.
        space: where the perturbation lives and its L-inf budget (in the space's own units).
        steps: sign-gradient steps (at least 1).
        alpha: step size, in the space's units (1/255 for the paper's alpha = 1).
        params: a starting perturbation (default: zeros from `space.init`).
        on_step: called after each step with (step, that step's terms).
        explode_at: |objective| above this, or a non-finite value, raises `DivergedError`.
        optimizer: "sign" (PGD) or "momentum" (MI-FGSM: the sign of mu * m + g / mean|g|, per sample).
        alpha_decay: "constant" or "cosine" (alpha * (1 + cos(pi * step / steps)) / 2).

    Returns:
        The perturbed image `(B, 3, H, W)` in [0, 1], its parameters (inside the budget) and
        the objective's history, one dict per step.
    """
    image = image.detach()
    params = {k: v.detach().clone() for k, v in (params or space.init(image)).items()}
    history: list[dict[str, float]] = []
    velocity: dict[str, torch.Tensor] = {}  # momentum's running direction, per parameter
    for step in range(steps):
        for v in params.values():
            v.requires_grad_(True)
        value, terms = objective(space.apply(image, params))
        current = float(value.detach())
        if not math.isfinite(current) or abs(current) > explode_at:
            raise DivergedError(f"objective became {current:.3g} at step {step}")
        grads = torch.autograd.grad(value, list(params.values()), allow_unused=True)
        with torch.no_grad():
            size = step_size(alpha, step, steps, alpha_decay)
            stepped = {}
            for (k, v), g in zip(params.items(), grads, strict=True):
                g = torch.zeros_like(v) if g is None else g
                if optimizer == "momentum":
                    velocity[k] = MOMENTUM_DECAY * velocity.get(k, 0) + g / _per_sample_l1(g)
                    g = velocity[k]
                stepped[k] = v + size * g.sign()
            params = space.project(stepped)
        history.append({"step": step, "objective": current, **terms})
        if on_step is not None:
            on_step(step, history[-1])
    with torch.no_grad():
        adv = space.apply(image, params)
    return LoopResult(
        adv=adv.detach(), params={k: v.detach() for k, v in params.items()}, history=history
    )
