"""The adapter contract: what a family adapter must do for every stage of the toolkit to work on it.

Six checks, each run on the family's tiny model (seeded random weights, CPU, seconds):

- `blocks`: every named block exists, gives a hidden state, and runs: in one forward pass, or, for
  a model of experts, in the pass at a timestep of its expert's band (`Backbone.active_blocks`).
- `layout`: `Backbone.layout` is a pure rearrangement of a block's output (no value lost, made
  up or moved twice), so the token at (frame, row, column) is the one the block computed there.
- `gradient`: a loss on the denoiser's output reaches the photo, finite and non-zero: the cloak
  needs conditioning differentiable end to end.
- `schedule`: noising moves toward noise as t grows; `predict_clean` of the family's own training
  target (`Backbone.target`) gives back the clean latent; and the noising is the scheduler's own
  where the scheduler states it (flow matching: sigma = t / 1000 at the scheduler's timesteps;
  DDPM-type: `add_noise` and `get_velocity`).
- `generation`: the pipeline generates a video of the adapter's frames and resolution in [0, 1],
  and `encode_video` turns it into a latent laid out as the conditioning's clean latent.
- `plan`: `anti-i2v plan`'s peak for one protect step, counted on fake tensors, is within 20% of
  the live bytes of the same step on real ones, and its FLOPs agree to 1%.

`tests/test_contract.py` runs every check on every registered family through one parametrised
fixture; `anti-i2v models --check MODULE` runs them on an adapter module of a user's own
(`load_adapter_module` says what such a module defines). Written here: no library offers a
conformance suite for diffusers adapters.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from anti_i2v.core.common import ToolkitError
from anti_i2v.models.backbones import FAMILIES, Backbone, register
from anti_i2v.models.capture import execution_order

TIMESTEPS = (100.0, 500.0, 900.0)  # where the schedule is checked, low to high noise
PEAK_RATIO = (0.8, 1.2)  # plan's peak over the measured one (as `tests/test_plan.py` allows)
FLOPS_REL = 0.01


class ContractError(AssertionError):
    """An adapter broke a check: the message says which promise and by how much."""


@dataclass(frozen=True)
class Check:
    """One promise of the contract: its name, what it means, and the function that checks it."""

    name: str
    what: str
    run: Callable[[Backbone], str]  # returns what it saw, one line; raises ContractError


@dataclass(frozen=True)
class Outcome:
    """One check run on one adapter."""

    check: str
    passed: bool
    detail: str


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ContractError(message)


def _inputs(backbone: Backbone, image: torch.Tensor, t: float = 500.0):
    """Conditioning and one denoiser call's kwargs for `image`, with seeded noise."""
    cond = backbone.condition(image.to(backbone.device))
    noise = torch.randn(cond.clean.shape, generator=torch.Generator().manual_seed(0))
    noisy = backbone.add_noise(cond.clean, noise.to(cond.clean), t)
    return cond, backbone.denoiser_kwargs(noisy, cond, t)


def _block_outputs(backbone: Backbone, kwargs: dict) -> tuple[dict[str, object], torch.Tensor]:
    """Each block's raw output (its first call) and the denoiser's output, by plain hooks."""
    seen: dict[str, object] = {}
    handles = [
        backbone.denoiser.get_submodule(n).register_forward_hook(
            lambda _m, _a, o, n=n: seen.setdefault(n, o)
        )
        for n in backbone.block_names()
    ]
    try:
        with torch.no_grad():
            out = backbone.hidden(backbone.denoiser(**kwargs))
    finally:
        for h in handles:
            h.remove()
    return seen, out


def check_blocks(backbone: Backbone) -> str:
    names = backbone.block_names()
    _require(len(names) > 0, "block_names() is empty: name the block containers")
    _require(len(set(names)) == len(names), f"block_names() repeats a name: {names}")
    for name in names:
        try:
            backbone.denoiser.get_submodule(name)
        except AttributeError:
            raise ContractError(f"block {name!r} is not a submodule of the denoiser") from None
    ran: set[str] = set()
    for t in TIMESTEPS:  # a multi-expert model runs one expert's blocks per call
        active = backbone.active_blocks(t)
        _require(
            bool(active) and set(active) <= set(names),
            f"t={t:g}: active_blocks() {active[:3]} is empty or names unknown blocks",
        )
        _, kwargs = _inputs(backbone, torch.rand(1, 3, 40, 56), t)
        try:
            order = execution_order(backbone, kwargs, t)
        except RuntimeError as exc:
            raise ContractError(str(exc)) from None
        seen, _ = _block_outputs(backbone, kwargs)
        for name in order:
            hidden = backbone.hidden(seen[name])
            _require(
                isinstance(hidden, torch.Tensor) and hidden.is_floating_point(),
                f"hidden() of block {name!r} is not a float tensor",
            )
        ran |= set(order)
    _require(
        ran == set(names),
        f"blocks never run at t in {TIMESTEPS}: {sorted(set(names) - ran)[:4]}",
    )
    bands = len({tuple(backbone.active_blocks(t)) for t in TIMESTEPS})
    how = "one forward pass" if bands == 1 else f"{bands} bands of timesteps (one expert each)"
    return f"{len(names)} blocks, all run in {how}: {names[0]} ... {names[-1]}"


def check_layout(backbone: Backbone) -> str:
    cond, kwargs = _inputs(backbone, torch.rand(2, 3, 40, 56))
    seen, _ = _block_outputs(backbone, kwargs)
    f, h, w = backbone.token_grid(cond)
    for name, output in seen.items():
        hidden = backbone.hidden(output)
        x = backbone.layout(hidden, cond)
        _require(
            x.ndim == 5 and x.shape[0] == 2,
            f"{name}: layout gave {tuple(x.shape)}, not (2,F,H,W,C)",
        )
        _require(x.shape[1] == f, f"{name}: {x.shape[1]} frames, token_grid says {f}")
        # Lay out each value's own index instead of the value: every index must come out at
        # most once (a rearrangement, or a slice of one), and nothing is averaged or made up.
        index = torch.arange(hidden.numel(), dtype=torch.float64).reshape(hidden.shape)
        where = backbone.layout(index, cond).flatten()
        _require(
            bool((where == where.round()).all()) and where.unique().numel() == where.numel(),
            f"{name}: layout mixes or repeats values of the block's output",
        )
    # No hook is left behind on the denoiser.
    _require(
        all(not m._forward_hooks for m in backbone.denoiser.modules()),
        "a forward hook was left on the denoiser",
    )
    return f"{len(seen)} blocks lay out as (B, F, H, W, C); {_token_positions(backbone)}"


def _token_positions(backbone: Backbone) -> str:
    """Tokens sit where the latent put them: nudge the noisy latent at one corner pixel and find
    which of the first block's input tokens move (patch embedding and conv_in are local, so
    only that corner's token, or a 3x3 conv's neighbours, may). A transposed, flipped or
    mis-strided layout puts the change elsewhere."""
    cond, _ = _inputs(backbone, torch.rand(1, 3, 40, 56))
    if cond.grid is not None:
        return "packed tokens: positions not nudged"
    first = backbone.active_blocks(500.0)[0]
    noise = torch.randn(cond.clean.shape, generator=torch.Generator().manual_seed(0))
    noisy = backbone.add_noise(cond.clean, noise.to(cond.clean), 500.0)
    lat_h, lat_w = noisy.shape[-2:]
    nudged = noisy.clone()
    nudged[..., 0, lat_w - 1] += 3.0  # the top-right corner, in every frame and channel
    inputs = []
    for latent in (noisy, nudged):
        got: dict[str, torch.Tensor] = {}

        def keep(_m, args, kw, got=got):
            got.setdefault("x", args[0] if args else next(iter(kw.values())))

        hook = backbone.denoiser.get_submodule(first).register_forward_pre_hook(
            keep, with_kwargs=True
        )
        try:
            with torch.no_grad():
                backbone.denoiser(**backbone.denoiser_kwargs(latent, cond, 500.0))
        finally:
            hook.remove()
        inputs.append(backbone.layout(got["x"], cond))
    moved = (inputs[1] - inputs[0]).abs().amax(dim=(0, 1, 4))  # (H', W') tokens
    _require(bool((moved > 0).any()), f"nudging the latent moved no input token of {first}")
    th, tw = moved.shape
    row, col = 0, (lat_w - 1) * tw // lat_w  # the nudged pixel's token
    # a conv_in on unpatched latents (UNets) also moves the 3x3 neighbours; patches move one token
    reach = 1 if th == lat_h else 0
    rows, cols = (moved > 1e-6 * moved.max()).nonzero(as_tuple=True)
    _require(
        bool(moved[row, col] > 0)
        and int(rows.max()) <= row + reach
        and int(cols.min()) >= col - reach,
        f"{first}: nudging latent pixel (0, {lat_w - 1}) moved tokens at rows "
        f"{sorted(set(rows.tolist()))[:6]}, columns {sorted(set(cols.tolist()))[:6]}; expected "
        f"token ({row}, {col}) of {th}x{tw}: the layout misplaces tokens",
    )
    return f"a nudge at latent pixel (0, {lat_w - 1}) moves token ({row}, {col}) of {th}x{tw}"


def check_gradient(backbone: Backbone) -> str:
    image = torch.rand(1, 3, 37, 45, requires_grad=True)  # any size: resized inside
    cond, kwargs = _inputs(backbone, image)
    out = backbone.hidden(backbone.denoiser(**kwargs))
    out.float().pow(2).mean().backward()
    grad = image.grad
    _require(grad is not None, "no gradient reached the photo through the denoiser's output")
    _require(bool(torch.isfinite(grad).all()), "the photo's gradient is not finite")
    _require(float(grad.abs().sum()) > 0, "the photo's gradient is all zeros")
    return f"d(output)/d(photo) reaches the photo: mean |grad| {float(grad.abs().mean()):.2e}"


def check_schedule(backbone: Backbone) -> str:
    g = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(2, 4, 3, 4, 4, generator=g).unbind(0)
    clean, noise = clean[None], noise[None]
    toward = [
        float(backbone.add_noise(torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2), t).mean())
        for t in (50.0, *TIMESTEPS)
    ]
    _require(
        all(a < b for a, b in zip(toward, toward[1:], strict=False)) and toward[0] > 0,
        f"noising does not move toward the noise as t grows: {toward}",
    )
    for t in TIMESTEPS:
        noisy = backbone.add_noise(clean, noise, t)
        back = backbone.predict_clean(noisy, backbone.target(clean, noise, t), t)
        err = float((back - clean).abs().max())
        _require(err < 1e-4, f"t={t:g}: predict_clean of the target misses x0 by {err:.2e}")
    return "noising grows with t; predict_clean(target) = x0; " + _scheduler_agrees(
        backbone, clean, noise
    )


def _scheduler_agrees(backbone: Backbone, clean: torch.Tensor, noise: torch.Tensor) -> str:
    """Compare the adapter's noising with its pipeline's scheduler, where the scheduler says how."""
    sched = backbone.pipe.scheduler
    name = type(sched).__name__
    cfg = dict(sched.config)
    flow = "FlowMatch" in name or cfg.get("prediction_type") == "flow_prediction"
    if flow and hasattr(sched, "set_timesteps"):
        sched.set_timesteps(4)
        train = cfg.get("num_train_timesteps", 1000)
        # EDM sigmas (Cosmos: 0.002 to 80) reach the denoiser as x / (1 + sigma), which is the
        # flow interpolation at s = sigma / (1 + sigma); flow sigmas are s themselves
        edm = max(sched.sigmas.tolist()) > 1
        for ts, sigma in zip(sched.timesteps.tolist(), sched.sigmas.tolist(), strict=False):
            # UniPC hands the denoiser int(sigma * 1000): within one training step of sigma
            _require(
                abs(ts / train - sigma) <= 1.0 / train + 1e-6,
                f"{name}: timestep {ts:g} has sigma {sigma:.4f}, the adapter assumes t/1000",
            )
            s = sigma / (1 + sigma) if edm else sigma
            want = (1 - s) * clean + s * noise
            got = backbone.add_noise(clean, noise, s * 1000.0)
            _require(torch.allclose(got, want, atol=1e-5), f"{name}: noising differs at t={ts:g}")
        if edm:
            return f"{name}: EDM sigmas, noising (1-s) x0 + s noise at s = sigma / (1 + sigma)"
        return f"{name}: its timesteps are sigma x 1000 (to one step), noising (1-s) x0 + s noise"
    # DDPM-type: add_noise indexed by training timestep (Euler's is indexed by its own sigmas)
    if hasattr(sched, "alphas_cumprod") and not hasattr(sched, "sigmas"):
        diffs = []
        for t in TIMESTEPS:
            ts = torch.tensor([int(t)])
            if not torch.allclose(
                backbone.add_noise(clean, noise, t), sched.add_noise(clean, noise, ts), atol=1e-5
            ):
                diffs.append(t)
        if diffs:  # DynamiCrafter scales x0 on purpose; its round trip above still holds
            return f"{name}: the adapter's noising has a factor of its own (not the scheduler's)"
        if cfg.get("prediction_type") == "v_prediction" and hasattr(sched, "get_velocity"):
            for t in TIMESTEPS:
                v = sched.get_velocity(clean, noise, torch.tensor([int(t)]))
                _require(
                    torch.allclose(backbone.target(clean, noise, t), v, atol=1e-5),
                    f"{name}: target is not the scheduler's get_velocity at t={t:g}",
                )
            return f"{name}: add_noise and get_velocity are the scheduler's"
        return f"{name}: add_noise is the scheduler's"
    return f"{name}: the scheduler states no noising to compare with"


def check_generation(backbone: Backbone) -> str:
    frames = backbone.default_frames
    video = backbone.generate(torch.rand(3, 40, 56), frames=frames, steps=1, seed=0)
    want = (backbone.generated_frames(frames), 3, *backbone.resolution)
    _require(tuple(video.shape) == want, f"generate gave {tuple(video.shape)}, expected {want}")
    _require(
        bool(torch.isfinite(video).all()) and 0 <= float(video.min()) <= float(video.max()) <= 1,
        "generated frames are not finite values in [0, 1]",
    )
    # protect's diffusion loss compares a generated video's latent with the photo's still one
    with torch.no_grad():
        latent = backbone.encode_video(video[None].to(backbone.device))
        still = backbone.condition(video[:1].to(backbone.device), len(video)).clean
    _require(
        isinstance(latent, torch.Tensor) and latent.shape == still.shape,
        f"encode_video gave {getattr(latent, 'shape', latent)}, the conditioning's latent is "
        f"{tuple(still.shape)}",
    )
    return (
        f"{want[0]} frames of {want[2]}x{want[3]} in [0, 1] for {frames} asked; "
        "encode_video lays them out as the conditioning's latent"
    )


def check_lens(backbone: Backbone) -> str:
    if backbone.lens_refusal is not None:
        return f"no lens, as the family says: {backbone.lens_refusal}"
    from anti_i2v.models.lens import lens_clean

    t = TIMESTEPS[1]
    cond = backbone.condition(torch.rand(1, 3, 40, 56).to(backbone.device))
    noise = torch.randn(cond.clean.shape, generator=torch.Generator().manual_seed(0))
    noisy = backbone.add_noise(cond.clean, noise.to(cond.clean), t)
    clean = lens_clean(backbone, cond, noisy, t)
    with torch.no_grad():
        output = backbone.hidden(backbone.denoiser(**backbone.denoiser_kwargs(noisy, cond, t)))
        real = backbone.predict_clean(noisy, output, t)
        last = list(clean.values())[-1]
        _require(
            torch.allclose(last, real, rtol=1e-4, atol=1e-5),
            f"the last block's lens differs from the model's output by "
            f"{float((last - real).abs().max()):.3g}: a block after it was not passed over, or "
            "lens_pass_on does not hand on the stream",
        )
        video = backbone.decode_video(last, cond)
        cut = _cut_lens_agrees(backbone, clean, cond, noisy, t)
    frames = video.shape[1] if video.dim() == 5 else None
    _require(
        video.dim() == 5 and tuple(video.shape[2:]) == (3, *backbone.resolution),
        f"decode_video gave {tuple(video.shape)}, expected (B, F, 3, {backbone.resolution[0]}, "
        f"{backbone.resolution[1]})",
    )
    _require(
        bool(torch.isfinite(video).all()) and 0 <= float(video.min()) <= float(video.max()) <= 1,
        "decode_video's frames are not finite values in [0, 1]",
    )
    return (
        f"{len(clean)} blocks read through the head, the last one is the output{cut}; "
        f"{frames} frames decoded"
    )


def _cut_lens_agrees(
    backbone: Backbone, clean: dict, cond: object, noisy: torch.Tensor, t: float
) -> str:
    """Where the blocks are one list, the last-but-one block's lens against the model with the
    last block deleted (built independently of the lens); returns what was compared, or ''."""
    container = backbone.block_containers[0]
    blocks = backbone.denoiser.get_submodule(container)
    names = list(clean)
    if len(backbone.block_containers) != 1 or not isinstance(blocks, nn.ModuleList):
        return ""
    if len(names) < 2 or names[-1] != f"{container}.{len(blocks) - 1}":
        return ""
    try:
        _set_blocks(backbone.denoiser, container, blocks[:-1])
        output = backbone.hidden(backbone.denoiser(**backbone.denoiser_kwargs(noisy, cond, t)))
    finally:
        _set_blocks(backbone.denoiser, container, blocks)  # the very list, for every reference
    cut = backbone.predict_clean(noisy, output, t)
    _require(
        torch.allclose(clean[names[-2]], cut, rtol=1e-4, atol=1e-5),
        f"{names[-2]}'s lens differs from the model cut after it by "
        f"{float((clean[names[-2]] - cut).abs().max()):.3g}: lens_pass_on does not hand on the "
        "stream as that block left it",
    )
    return f"; {names[-2]}'s lens is the model cut after it"


def _set_blocks(denoiser: nn.Module, container: str, blocks: nn.ModuleList) -> None:
    parent, _, attr = container.rpartition(".")
    setattr(denoiser.get_submodule(parent) if parent else denoiser, attr, blocks)


def check_plan(backbone: Backbone) -> str:
    from anti_i2v.plan import PlanRequest, plan, run_step

    req = PlanRequest(
        model=backbone.name, task="protect", dtype="float32", resolution=backbone.resolution
    )
    planned = plan(req)
    peak, flops, _ = run_step(backbone, req, fake=False)
    ratio = planned.peak_bytes / peak
    _require(
        PEAK_RATIO[0] <= ratio <= PEAK_RATIO[1],
        f"plan's peak is {ratio:.2f}x the measured one (allowed {PEAK_RATIO[0]}-{PEAK_RATIO[1]})",
    )
    _require(
        abs(planned.flops_per_step - flops) <= FLOPS_REL * flops,
        f"plan counts {planned.flops_per_step:.3g} FLOPs, the step ran {flops:.3g}",
    )
    return f"planned peak {ratio:.2f}x the measured {peak / 2**20:.1f} MiB; FLOPs agree"


CHECKS: tuple[Check, ...] = (
    Check("blocks", "named blocks exist and all run in one forward pass", check_blocks),
    Check("layout", "block outputs round-trip to (B, F, H, W, C) tokens", check_layout),
    Check("gradient", "the denoiser's output is differentiable down to the photo", check_gradient),
    Check(
        "schedule", "noise, target and x0 agree with each other and the scheduler", check_schedule
    ),
    Check("generation", "the pipeline generates frames x 3 x H x W in [0, 1]", check_generation),
    Check("lens", "the last block's lens is the output; decode_video gives frames", check_lens),
    Check("plan", "plan's protect peak and FLOPs match the measured step", check_plan),
)


def run_contract(backbone: Backbone) -> list[Outcome]:
    """Every check on one adapter; a failing check never stops the others.

    Args:
        backbone: an adapter on its tiny model (`load_backbone("tiny:FAMILY")`).

    Returns:
        One outcome per check of `CHECKS`, in order.
    """
    outcomes = []
    for check in CHECKS:
        try:
            outcomes.append(Outcome(check.name, True, check.run(backbone)))
        except ContractError as exc:
            outcomes.append(Outcome(check.name, False, str(exc)))
        except Exception as exc:  # an adapter's own bug is a failed check, not a crash
            first = (str(exc).splitlines() or [""])[0][:200]
            outcomes.append(Outcome(check.name, False, f"{type(exc).__name__}: {first}"))
    return outcomes


def load_adapter_module(spec: str) -> str:
    """Import a user's adapter module and register its family; returns the family name.

    The module (a dotted name on `sys.path`, or a `.py` file) defines exactly one subclass of
    `Backbone` (with `family`, `pipeline_class` and `block_containers`), a function
    `tiny(seed) -> pipeline` that builds its model at toy size with seeded random weights, and
    `TINY_SIZE = ((height, width), frames)`. `docs/adding-a-family.md` walks through one.

    Raises:
        ToolkitError: the module cannot be imported or lacks one of those (one line each).
    """
    module = _import(spec)
    adapters = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Backbone)
        and obj.__module__ == module.__name__
        and not inspect.isabstract(obj)
    ]
    if len(adapters) != 1:
        found = ", ".join(a.__name__ for a in adapters) or "none"
        raise ToolkitError(
            f"{spec}: define exactly one concrete Backbone subclass (found {found}); "
            "see docs/adding-a-family.md"
        )
    adapter = adapters[0]
    for attr in ("family", "pipeline_class", "block_containers"):
        if not hasattr(adapter, attr):
            raise ToolkitError(f"{spec}: {adapter.__name__} sets no `{attr}` class attribute")
    tiny, size = getattr(module, "tiny", None), getattr(module, "TINY_SIZE", None)
    if not callable(tiny) or size is None:
        raise ToolkitError(
            f"{spec}: define `tiny(seed)` (the model at toy size) and "
            "`TINY_SIZE = ((height, width), frames)` beside the adapter"
        )
    if FAMILIES.get(adapter.family) is adapter:
        return adapter.family
    if adapter.family in FAMILIES:
        raise ToolkitError(
            f"{spec}: family {adapter.family!r} is built in; give your adapter a name of its own"
        )
    register(adapter, tiny, size)
    return adapter.family


def _import(spec: str) -> ModuleType:
    try:
        if spec.endswith(".py"):
            path = Path(spec)
            if not path.is_file():
                raise ToolkitError(f"{spec}: no such file")
            name = f"anti_i2v_user_adapter_{path.stem}"
            loader = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(loader)
            sys.modules[name] = module  # dataclasses and pickling look modules up by name
            loader.loader.exec_module(module)
            return module
        return importlib.import_module(spec)
    except ToolkitError:
        raise
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        raise ToolkitError(
            f"{spec}: cannot import it ({type(exc).__name__}: {first}); give a dotted module "
            "name on PYTHONPATH or a .py file"
        ) from None


__all__ = ["CHECKS", "Check", "ContractError", "Outcome", "load_adapter_module", "run_contract"]
