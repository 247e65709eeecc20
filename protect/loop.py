"""The one optimisation loop every method shares (sign-gradient ascent with projection).

Like advertorch's `perturb_iterative`: the caller gives an objective to *maximise* and a space;
each step takes `torch.autograd.grad`, moves every parameter by `alpha * sign(grad)`, projects
the parameters into the budget, and re-applies them so the image stays in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from anti_i2v.protect.spaces import Space

Objective = Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


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

    Returns:
        The perturbed image `(B, 3, H, W)` in [0, 1], its parameters (inside the budget) and
        the objective's history, one dict per step.
    """
    image = image.detach()
    params = {k: v.detach().clone() for k, v in (params or space.init(image)).items()}
    history: list[dict[str, float]] = []
    for step in range(steps):
        for v in params.values():
            v.requires_grad_(True)
        value, terms = objective(space.apply(image, params))
        current = float(value.detach())
        if not math.isfinite(current) or abs(current) > explode_at:
            raise DivergedError(f"objective became {current:.3g} at step {step}")
        grads = torch.autograd.grad(value, list(params.values()), allow_unused=True)
        with torch.no_grad():
            stepped = {
                k: v + alpha * (g.sign() if g is not None else torch.zeros_like(v))
                for (k, v), g in zip(params.items(), grads, strict=True)
            }
            params = space.project(stepped)
        history.append({"step": step, "objective": current, **terms})
        if on_step is not None:
            on_step(step, history[-1])
    with torch.no_grad():
        adv = space.apply(image, params)
    return LoopResult(
        adv=adv.detach(), params={k: v.detach() for k, v in params.items()}, history=history
    )
