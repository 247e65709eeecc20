"""`anti-i2v plan`: peak accelerator memory and FLOPs of one probe or protect step, with no GPU.

The real code of each task runs on the real diffusers modules under torch's `FakeTensorMode`:
tensors have shapes, dtypes and devices but no data, so a 480x720 step of a large model is
planned on a laptop in seconds. `anti_i2v.models.memory.LiveBytes` counts the bytes alive at the
dispatcher (the weights from the start, then every activation, gradient and captured block
until it dies) and `torch.utils.flop_counter.FlopCounterMode` counts FLOPs.

What one step is, per task:
- `protect`: one step of the Anti-I2V objective (IRC, IRA and the diffusion term at one
  timestep), forward and backward to the photo. The target features `prepare` computes once
  stay alive and count; the reference video the diffusion term compares with is replaced by
  the photo's own latent (generating it is a separate, no-grad job).
- `probe`: one (timestep, batch of samples) cell: the conditioning, one forward with every
  block captured, laid out, frame-selected and pooled as the store keeps it.
- `lens`: one timestep of `anti-i2v lens` on one photo: every block read through the output
  head (a forward pass per block, the blocks after it passed over) and each block's clean
  estimate decoded by the VAE, one after another.
- `attention`: one (timestep, photo) of `anti-i2v attention`: a forward pass with every block's
  attention recorded for its query subset (`AttentionConfig.queries` rows a call).

Seconds per step assume a stated fraction of each GPU's dense bf16 peak (`UTILISATION`); the
FLOPs are exact for the code that ran, the utilisation is an assumption and says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

from anti_i2v.core.common import ToolkitError
from anti_i2v.probe.config import MODEL_DTYPES, OFFLOADS

if TYPE_CHECKING:  # torch loads when a plan is made: `anti-i2v plan` refuses bad arguments at once
    import torch

TASKS = ("protect", "probe", "generate", "lens", "attention")
# Dense bf16 tensor-core peak and memory, from the vendors' datasheets (no sparsity).
GPUS: dict[str, tuple[float, float, str]] = {
    "h100-80gb": (80, 989.0, "NVIDIA H100 SXM datasheet: 989 TFLOP/s bf16 dense"),
    "a100-40gb": (40, 312.0, "NVIDIA A100 datasheet: 312 TFLOP/s bf16 dense"),
    "a100-80gb": (80, 312.0, "NVIDIA A100 datasheet: 312 TFLOP/s bf16 dense"),
    "l40s": (48, 362.05, "NVIDIA L40S datasheet: 362 TFLOP/s bf16 dense"),
    "rtx4090-24gb": (24, 165.2, "NVIDIA Ada (AD102) whitepaper: 165.2 TFLOP/s bf16, fp32 acc."),
}
UTILISATION = 0.35  # an assumed model-FLOPs utilisation for a diffusion step (stated in every plan)
HEADROOM = 0.9  # of a GPU's memory usable by tensors: the rest is CUDA context, allocator, caches
GIB = 1024**3


@dataclass(frozen=True)
class PlanRequest:
    """What to plan: a model, a task and the levers."""

    model: str
    task: str = "protect"
    resolution: tuple[int, int] | None = None  # (height, width); default: the model's own
    frames: int | None = None  # probe and generate: video frames; default: the model's own
    clip_frames: int | None = None  # protect: first video frames the losses see; default protect's
    batch_size: int = 1
    dtype: str = "bfloat16"
    checkpointing: bool = False
    offload: str = "none"
    pool: int = 1  # probe: spatial pooling of stored blocks
    store_dtype_bytes: int = 2  # probe: float16 store

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ToolkitError(f"--task {self.task}: choose from {', '.join(TASKS)}")
        if self.dtype not in MODEL_DTYPES:
            raise ToolkitError(f"--dtype {self.dtype}: choose from {', '.join(MODEL_DTYPES)}")
        if self.offload not in OFFLOADS:
            raise ToolkitError(f"--offload {self.offload}: choose from {', '.join(OFFLOADS)}")
        # `is None`, not `or`: a 0 given on the command line is refused, never read as unset
        counts = (
            self.batch_size,
            1 if self.frames is None else self.frames,
            1 if self.clip_frames is None else self.clip_frames,
            self.pool,
        )
        if min(counts) < 1:
            raise ToolkitError(
                "--batch-size, --frames, --clip-frames and --pool must each be at least 1"
            )
        if self.resolution is not None and min(self.resolution) < 8:
            raise ToolkitError(f"--resolution {self.resolution}: at least 8x8 pixels")


@dataclass(frozen=True)
class Plan:
    """A planned step: its memory, FLOPs and, per GPU, whether it fits and how long it takes."""

    request: PlanRequest
    resolution: tuple[int, int]
    frames: int  # video frames the step runs (protect: the clip that covers `clip_frames`)
    params: int
    weights_bytes: int  # every component the step runs (denoiser, VAE, image encoder)
    resident_weights_bytes: int  # of those, on the GPU at the peak (less with --offload)
    peak_bytes: int  # resident weights + activations + gradients (+ captured blocks)
    flops_per_step: float
    store_bytes_per_sample: int | None  # probe: one sample's cell in the store
    utilisation: float = UTILISATION
    gpus: dict[str, dict] = field(default_factory=dict)
    fit: dict | None = None  # for --gpu: its fewest levers that fit (None: nothing fits)
    experts: int = 1  # denoisers that share the timesteps (Wan 2.2 A14B: 2; a step runs one)

    def to_json(self) -> dict:
        d = asdict(self)
        d["request"] = asdict(self.request)
        return d


def _protect_step(backbone, x: torch.Tensor, frames: int) -> None:
    import torch

    from anti_i2v.protect.objective import ModelObjective, ObjectiveSpec

    layers = backbone.active_blocks(500)  # a model of experts: the expert that runs at t=500
    mid = len(layers) // 2
    spec = ObjectiveSpec(
        weights={"irc": 1.0, "ira": 1.0, "diffusion": 1.0},
        collapse_layers=layers[:1],
        anchor_layers=layers[mid : mid + 2] or layers[-1:],
        timesteps=[500],
        clip_frames=frames,
    )
    objective = ModelObjective(backbone, spec, x, None, 1 - x).prepare()
    adv = x.clone().requires_grad_(True)
    value, _ = objective(adv)
    torch.autograd.grad(value, adv)


def _probe_layers(backbone, x: torch.Tensor, frames: int) -> list[str]:
    """The block order, found once per probe run (not per cell), so outside what is counted."""
    import torch

    from anti_i2v.models.capture import execution_order

    with torch.no_grad():
        cond = backbone.condition(x[:1], frames)
        return execution_order(backbone, backbone.denoiser_kwargs(cond.clean, cond, 500), 500)


def _probe_cell(backbone, x: torch.Tensor, frames: int, pool: int, layers: list[str]) -> dict:
    from anti_i2v.probe.run import probe_cells

    return probe_cells(
        backbone, x, 500, [(0, i) for i in range(len(x))], layers, None, pool, frames
    )


def _generate_step(backbone, x: torch.Tensor, frames: int) -> None:
    import torch

    # The pipeline call itself cannot run under FakeTensorMode (its schedulers read tensor
    # values with `.item()`), so this is the step's dominant part: one denoiser pass over the
    # whole clip, batched for classifier-free guidance as the pipelines batch it.
    with torch.no_grad():
        cond = backbone.condition(x.repeat(backbone.guidance_passes, 1, 1, 1), frames)
        backbone.denoiser(**backbone.denoiser_kwargs(cond.clean, cond, 500))


def _lens_step(backbone, x: torch.Tensor, frames: int) -> None:
    import torch

    from anti_i2v.models.lens import lens_clean

    with torch.no_grad():
        cond = backbone.condition(x[:1], frames)
        noisy = backbone.add_noise(cond.clean, torch.randn_like(cond.clean), 500)
        for clean in lens_clean(backbone, cond, noisy, 500).values():
            backbone.decode_video(clean, cond)  # the job decodes one block at a time


def _attention_step(backbone, x: torch.Tensor, frames: int) -> None:
    import torch

    from anti_i2v.models.attention import capture_attention
    from anti_i2v.probe.config import AttentionConfig

    with torch.no_grad():
        cond = backbone.condition(x[:1], frames)
        kwargs = backbone.denoiser_kwargs(cond.clean, cond, 500)
        with capture_attention(
            backbone.denoiser, backbone.active_blocks(500), AttentionConfig.queries, 0
        ):
            backbone.denoiser(**kwargs)


def step_frames(backbone, req: PlanRequest) -> int:
    """Video frames the step runs: protect's clip covering `clip_frames`, else `frames`."""
    if req.task == "protect":
        from anti_i2v.protect.config import ProtectConfig
        from anti_i2v.protect.objective import clip_frames_for

        return clip_frames_for(backbone, req.clip_frames or ProtectConfig.frames)
    return req.frames or backbone.default_frames


EXPERT = "denoiser."  # step_modules' prefix of each expert of a model of experts


def step_modules(backbone) -> dict[str, torch.nn.Module]:
    """The components a step runs, by name (the text encoders never are: embeddings are saved).

    A model of experts (Wan 2.2 A14B) gives each expert as a component of its own
    (`denoiser.high`, `denoiser.low`): the pipeline holds them apart, and model offload moves one
    at a time.
    """
    parts = {name: getattr(backbone.pipe, name, None) for name in backbone.conditioning_parts}
    denoiser = backbone.denoiser
    experts = {
        f"{EXPERT}{e}": getattr(denoiser, e) for e in ("high", "low") if hasattr(denoiser, e)
    }
    mine = experts or {"denoiser": denoiser}
    return {k: m for k, m in {**mine, **parts}.items() if m is not None}


@contextlib.contextmanager
def _fake_weights(modules: list[torch.nn.Module], mode):
    """Swap meta-device weights for fake CPU tensors of `mode` for the duration, then back.

    Config-only models are built on the meta device; code that makes its own CPU tensors (a
    scheduler's tables, `torch.ones(..., device=x.device)`) must meet weights on one device.
    """
    import torch

    saved = []
    for module in {id(m): m for root in modules for m in root.modules()}.values():
        for table in (module._parameters, module._buffers):
            for name, t in table.items():
                if t is None or t.device.type != "meta":
                    continue
                saved.append((table, name, t))
                with mode:
                    fake = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cpu")
                param = table is module._parameters
                table[name] = torch.nn.Parameter(fake, t.requires_grad) if param else fake
    try:
        yield
    finally:
        for table, name, t in saved:
            table[name] = t


# The tasks whose step is one call; probe's cell is counted apart (its store bytes)
STEPS: dict[str, Callable] = {
    "protect": _protect_step,
    "generate": _generate_step,
    "lens": _lens_step,
    "attention": _attention_step,
}


def run_step(backbone, req: PlanRequest, fake: bool) -> tuple[int, float, int | None]:
    """Run one step of `req.task` and count it: (peak bytes, FLOPs, store bytes per sample).

    With `fake`, under FakeTensorMode (planning); otherwise on real tensors (measuring). The
    peak counts every weight of `step_modules` as resident (no offload).
    """
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    from anti_i2v.models.memory import LiveBytes, module_tensors

    frames = step_frames(backbone, req)
    modules = list(step_modules(backbone).values())
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()
    swap = _fake_weights(modules, mode) if fake else contextlib.nullcontext()
    traced = backbone.traceable() if fake else contextlib.nullcontext()
    with swap, traced:
        weights = module_tensors(*modules)
        if fake:  # the fake twins the mode will use for the weights, so views are not new bytes
            weights = [mode.from_tensor(w) for w in weights]
        with mode:
            x = torch.rand(req.batch_size, 3, *backbone.resolution, device=backbone.device)
            layers = _probe_layers(backbone, x, frames) if req.task == "probe" else []
            with LiveBytes(weights) as live, FlopCounterMode(display=False) as flops:
                store = None
                if req.task in STEPS:
                    STEPS[req.task](backbone, x, frames)
                else:
                    out = _probe_cell(backbone, x, frames, req.pool, layers)
                    store = sum(v[0].numel() for v in out.values()) * req.store_dtype_bytes
    return live.peak, float(flops.get_total_flops()), store


def time_step(backbone, req: PlanRequest) -> float:
    """Wall seconds of one protect or generate step on real tensors, uncounted (no dispatch
    mode slows it), after one warm-up step."""
    import time

    import torch

    frames = step_frames(backbone, req)
    x = torch.rand(req.batch_size, 3, *backbone.resolution, device=backbone.device)
    step = STEPS[req.task]
    step(backbone, x, frames)  # first-call allocations and lazy set-up
    if str(backbone.device).startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    step(backbone, x, frames)
    if str(backbone.device).startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


_MEASURE = """
import json, sys, time
from anti_i2v.plan import PlanRequest, prepared_backbone, run_step
args = json.loads(sys.argv[1])
for fields in args["requests"]:
    req = PlanRequest(**fields)
    backbone = prepared_backbone(req, weights=args["weights"])
    if args["warmup"]:
        run_step(backbone, req, fake=False)  # first-call allocations and lazy set-up
    t0 = time.perf_counter()
    peak, flops, store = run_step(backbone, req, fake=False)
    took = time.perf_counter() - t0
    print(json.dumps({"peak": peak, "flops": flops, "store": store, "seconds": took}), flush=True)
"""


def measure(
    req: PlanRequest | list[PlanRequest], weights: bool | str = True, warmup: bool = True
) -> dict | list[dict]:
    """The same step on real tensors in a fresh process (nothing cached from a plan).

    Args:
        req: one request, or several measured one after another in the same fresh process
            (peaks are live tensor bytes inside each step, so they do not add up).
        weights: as `load_backbone`'s; "random" gives a config-only model seeded random weights.
        warmup: run each step once before the counted one (first-call allocations, timing).

    Returns:
        Per request: peak (live bytes, as `run_step` counts them), flops, store (bytes per
        sample for probe) and seconds (wall time of the counted step).
    """
    import json
    import subprocess
    import sys

    reqs = req if isinstance(req, list) else [req]
    payload = {"requests": [asdict(r) for r in reqs], "weights": weights, "warmup": warmup}
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, json.dumps(payload)], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"measuring in a fresh process failed:\n{out.stderr[-3000:]}")
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return rows if isinstance(req, list) else rows[0]


def prepared_backbone(req: PlanRequest, weights: bool | str = True):
    """The request's model with its resolution, frames and levers applied (see `load_backbone`'s
    `weights`: True loads them, False builds on the meta device, "random" seeds random ones)."""
    from anti_i2v.models.backbones import load_backbone

    backbone = load_backbone(req.model, None, req.dtype, "cpu", weights=weights)
    if req.resolution is not None:
        backbone.resolution = tuple(req.resolution)
    if req.checkpointing:
        backbone.enable_checkpointing()
    return backbone


def resident_weights(req: PlanRequest, sizes: dict[str, int], largest_leaf: int) -> int:
    """Weight bytes on the GPU at the peak under `req.offload` (diffusers' CPU-offload hooks).

    - `none`: every component the step runs.
    - `model` (`enable_model_cpu_offload`): one whole component at a time, so the largest.
    - `sequential` (`enable_sequential_cpu_offload`): one leaf module's weights at a time.
    For `protect` offload saves nothing: the backward to the photo needs every weight the forward
    used, and autograd keeps the GPU copies the hooks made alive until then. Nothing but the
    idle expert of a model of experts (Wan 2.2 A14B): a step runs one expert, so under offload
    one expert is resident, and without it both are.
    """
    if req.offload == "none":
        return sum(sizes.values())
    if req.task == "protect":  # but a model of experts leaves the idle expert on the CPU
        experts = [v for k, v in sizes.items() if k.startswith(EXPERT)]
        return sum(sizes.values()) - sum(experts) + max(experts, default=0)
    if req.offload == "model":
        return max(sizes.values())
    return largest_leaf


def _sizes(backbone) -> tuple[dict[str, int], int, int]:
    """Per-component weight bytes, the largest leaf module's bytes, and the parameter count."""
    sizes, leaf, params = {}, 0, 0
    for name, module in step_modules(backbone).items():
        sizes[name] = sum(
            t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers())
        )
        params += sum(t.numel() for t in module.parameters())
        for m in module.modules():
            own = [*m.parameters(recurse=False), *m.buffers(recurse=False)]
            leaf = max(leaf, sum(t.numel() * t.element_size() for t in own))
    return sizes, leaf, params


# Lever sets tried per GPU, cheapest first (each costs speed: recomputation, PCIe transfers).
LEVER_SETS = (
    (False, "none"),
    (True, "none"),
    (False, "model"),
    (True, "model"),
    (False, "sequential"),
    (True, "sequential"),
)


def fewest_levers(
    req: PlanRequest, need: Callable[[bool, str], int], memory_gib: float
) -> dict | None:
    """The first of `LEVER_SETS` whose peak fits `memory_gib` (with `HEADROOM`), or None.

    Args:
        req: the request; levers it already asks for stay on, and only those that can lower
            its peak are tried (offload cannot for protect, checkpointing only for protect).
        need: peak bytes for (checkpointing, offload).
        memory_gib: the GPU's memory.
    """
    for checkpointing, offload in LEVER_SETS:
        if req.task == "protect" and offload != "none":
            continue  # offload cannot lower protect's peak (see resident_weights)
        if req.checkpointing and not checkpointing:
            continue  # never plan without a lever the user asked for
        if checkpointing and req.task != "protect":
            continue  # no backward, so nothing for checkpointing to recompute
        peak = need(checkpointing, offload)
        if peak <= memory_gib * GIB * HEADROOM:
            return {"checkpointing": checkpointing, "offload": offload, "peak_bytes": peak}
    return None


def plan(req: PlanRequest, gpu: str | None = None) -> Plan:
    """Plan one step of `req.task` on `req.model` (see the module docstring).

    Args:
        req: the model, task and levers.
        gpu: a key of `GPUS`, whose fewest levers that fit become `Plan.fit`.

    Returns:
        The plan; its peaks and FLOPs come from running the real modules under FakeTensorMode.
    """
    if gpu is not None and gpu not in GPUS:
        raise ToolkitError(f"--gpu {gpu}: choose from {', '.join(GPUS)}")
    backbone = prepared_backbone(req, weights=False)
    sizes, leaf, params = _sizes(backbone)
    weights = sum(sizes.values())
    activations: dict[bool, tuple[int, float, int | None]] = {}

    def counted(checkpointing: bool) -> tuple[int, float, int | None]:
        if checkpointing not in activations:
            if checkpointing and not req.checkpointing:
                backbone.enable_checkpointing()
            try:
                peak, flops, store = run_step(backbone, req, fake=True)
            except (ValueError, RuntimeError) as exc:  # e.g. learned position embeddings
                raise ToolkitError(
                    f"{req.model} cannot run a {req.task} step at {backbone.resolution[0]}x"
                    f"{backbone.resolution[1]}: {str(exc).splitlines()[0][:200]}"
                ) from None
            activations[checkpointing] = (peak - weights, flops, store)
        return activations[checkpointing]

    act, flops, store = counted(req.checkpointing)
    resident = resident_weights(req, sizes, leaf)
    peak = act + resident

    def need(checkpointing: bool, offload: str) -> int:
        levered = replace(req, checkpointing=checkpointing, offload=offload)
        return counted(checkpointing)[0] + resident_weights(levered, sizes, leaf)

    gpus = {
        name: {
            "memory_gib": mem,
            "fits": peak <= mem * GIB * HEADROOM,
            "seconds_per_step": flops / (tflops * 1e12 * UTILISATION),
            "levers": fewest_levers(req, need, mem),  # None: no lever set fits
            "source": source,
        }
        for name, (mem, tflops, source) in GPUS.items()
    }
    fit = (
        None if gpu is None or gpus[gpu]["levers"] is None else {"gpu": gpu, **gpus[gpu]["levers"]}
    )
    return Plan(
        request=req,
        resolution=tuple(backbone.resolution),
        frames=step_frames(backbone, req),
        params=params,
        weights_bytes=weights,
        resident_weights_bytes=resident,
        peak_bytes=peak,
        flops_per_step=flops,
        store_bytes_per_sample=store,
        gpus=gpus,
        fit=fit,
        experts=max(1, sum(k.startswith(EXPERT) for k in sizes)),
    )
