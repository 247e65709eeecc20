"""`anti-i2v plan`: peak accelerator memory and FLOPs of one probe or protect step, with no GPU.

The real code of each task runs on the real diffusers modules under torch's `FakeTensorMode`:
tensors have shapes, dtypes and devices but no data, so a 480x720 step of a large model is
planned on a laptop in seconds. `probe.memory.LiveBytes` counts the bytes alive at the
dispatcher (the weights from the start, then every activation, gradient and captured block
until it dies) and `torch.utils.flop_counter.FlopCounterMode` counts FLOPs.

What one step is, per task:
- `protect`: one step of the Anti-I2V objective (IRC, IRA and the diffusion term at one
  timestep), forward and backward to the photo. The target features `prepare` computes once
  stay alive and count; the reference video the diffusion term compares with is replaced by
  the photo's own latent (generating it is a separate, no-grad job).
- `probe`: one (timestep, batch of samples) cell: the conditioning, one forward with every
  block captured, laid out, frame-selected and pooled as the store keeps it.

Seconds per step assume a stated fraction of each GPU's dense bf16 peak (`UTILISATION`); the
FLOPs are exact for the code that ran, the utilisation is an assumption and says so.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field

import torch

from probe.common import ToolkitError
from probe.config import MODEL_DTYPES

TASKS = ("protect", "probe")
# Dense bf16 tensor-core peak and memory, from the vendors' datasheets (no sparsity).
GPUS: dict[str, tuple[float, float, str]] = {
    "h100-80gb": (80, 989.0, "NVIDIA H100 SXM datasheet: 989 TFLOP/s bf16 dense"),
    "a100-40gb": (40, 312.0, "NVIDIA A100 datasheet: 312 TFLOP/s bf16 dense"),
    "a100-80gb": (80, 312.0, "NVIDIA A100 datasheet: 312 TFLOP/s bf16 dense"),
    "l40s": (48, 362.05, "NVIDIA L40S datasheet: 362 TFLOP/s bf16 dense"),
    "rtx4090-24gb": (24, 165.2, "NVIDIA Ada (AD102) whitepaper: 165.2 TFLOP/s bf16, fp32 acc."),
}
UTILISATION = 0.35  # an assumed model-FLOPs utilisation for a diffusion step (stated in every plan)
GIB = 1024**3


@dataclass(frozen=True)
class PlanRequest:
    """What to plan: a model, a task and the levers."""

    model: str
    task: str = "protect"
    resolution: tuple[int, int] | None = None  # (height, width); default: the model's own
    frames: int | None = None  # video frames of the clip; default: the model's own
    batch_size: int = 1
    dtype: str = "bfloat16"
    checkpointing: bool = False
    pool: int = 1  # probe: spatial pooling of stored blocks
    store_dtype_bytes: int = 2  # probe: float16 store

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ToolkitError(f"--task {self.task}: choose from {', '.join(TASKS)}")
        if self.dtype not in MODEL_DTYPES:
            raise ToolkitError(f"--dtype {self.dtype}: choose from {', '.join(MODEL_DTYPES)}")
        if self.batch_size < 1 or (self.frames is not None and self.frames < 1) or self.pool < 1:
            raise ToolkitError("--batch-size, --frames and --pool must each be at least 1")
        if self.resolution is not None and min(self.resolution) < 8:
            raise ToolkitError(f"--resolution {self.resolution}: at least 8x8 pixels")


@dataclass(frozen=True)
class Plan:
    """A planned step: its memory, FLOPs and, per GPU, whether it fits and how long it takes."""

    request: PlanRequest
    resolution: tuple[int, int]
    frames: int
    params: int
    weights_bytes: int
    peak_bytes: int  # weights + activations + gradients (+ captured blocks) at the high-water mark
    flops_per_step: float
    store_bytes_per_sample: int | None  # probe: one sample's cell in the store
    utilisation: float = UTILISATION
    gpus: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["request"] = asdict(self.request)
        return d


def _protect_step(backbone, x: torch.Tensor, frames: int) -> None:
    from protect.objective import ModelObjective, ObjectiveSpec

    layers = backbone.block_names()
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


def _probe_cell(backbone, x: torch.Tensor, frames: int, pool: int) -> dict[str, torch.Tensor]:
    from probe.capture import execution_order
    from probe.run import probe_cells

    with torch.no_grad():
        cond = backbone.condition(x[:1], frames)
        layers = execution_order(backbone, backbone.denoiser_kwargs(cond.clean, cond, 500))
    return probe_cells(
        backbone, x, 500, [(0, i) for i in range(len(x))], layers, None, pool, frames
    )


def run_step(backbone, req: PlanRequest, fake: bool) -> tuple[int, float, int | None]:
    """Run one step of `req.task` and count it: (peak bytes, FLOPs, store bytes per sample).

    With `fake`, under FakeTensorMode (planning); otherwise on real tensors (measuring).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    from probe.memory import LiveBytes, module_tensors

    frames = req.frames or backbone.default_frames
    weights = module_tensors(backbone.denoiser, backbone.pipe.vae)
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()
    if fake:  # the fake twins the mode will use for the weights, so their views are not new bytes
        weights = [mode.from_tensor(w) for w in weights]
    with mode:
        x = torch.rand(req.batch_size, 3, *backbone.resolution, device=backbone.device)
        with LiveBytes(weights) as live, FlopCounterMode(display=False) as flops:
            if req.task == "protect":
                _protect_step(backbone, x, frames)
                store = None
            else:
                out = _probe_cell(backbone, x, frames, req.pool)
                per = sum(v[0].numel() for v in out.values())
                store = per * req.store_dtype_bytes
    return live.peak, float(flops.get_total_flops()), store


_MEASURE = """
import json, sys, time
from probe.plan import PlanRequest, prepared_backbone, run_step
req = PlanRequest(**json.loads(sys.argv[1]))
backbone = prepared_backbone(req)
run_step(backbone, req, fake=False)  # warm-up: first-call allocations and lazy set-up
t0 = time.perf_counter()
peak, flops, store = run_step(backbone, req, fake=False)
print(json.dumps({"peak": peak, "flops": flops, "store": store, "seconds": time.perf_counter() - t0}))
"""


def measure(req: PlanRequest) -> dict:
    """The same step on real tensors in a fresh process (nothing cached from a plan).

    Returns:
        peak (live bytes, as `run_step` counts them), flops, store (bytes per sample for probe)
        and seconds (wall time of the counted step, after one warm-up step).
    """
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, json.dumps(asdict(req))],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def prepared_backbone(req: PlanRequest):
    """The request's model with its resolution, frames and levers applied (weights loaded as-is)."""
    from probe.backbones import load_backbone

    backbone = load_backbone(req.model, None, req.dtype, "cpu")
    if req.resolution is not None:
        backbone.resolution = tuple(req.resolution)
    if req.checkpointing:
        backbone.enable_checkpointing()
    return backbone


def plan(req: PlanRequest) -> Plan:
    """Plan one step of `req.task` on `req.model` (see the module docstring)."""
    backbone = prepared_backbone(req)
    try:
        peak, flops, store = run_step(backbone, req, fake=True)
    except (ValueError, RuntimeError) as exc:  # e.g. learned position embeddings fix the size
        raise ToolkitError(
            f"{req.model} cannot run a {req.task} step at {backbone.resolution[0]}x"
            f"{backbone.resolution[1]}: {str(exc).splitlines()[0][:200]}"
        ) from None
    parameters = [*backbone.denoiser.parameters(), *backbone.pipe.vae.parameters()]
    weights = sum(t.numel() * t.element_size() for t in parameters)
    params = sum(t.numel() for t in parameters)
    gpus = {
        name: {
            "memory_gib": mem,
            "fits": peak <= mem * GIB * 0.9,  # 10% for the allocator, CUDA context and caches
            "seconds_per_step": flops / (tflops * 1e12 * UTILISATION),
            "source": source,
        }
        for name, (mem, tflops, source) in GPUS.items()
    }
    return Plan(
        request=req,
        resolution=tuple(backbone.resolution),
        frames=req.frames or backbone.default_frames,
        params=params,
        weights_bytes=weights,
        peak_bytes=peak,
        flops_per_step=flops,
        store_bytes_per_sample=store,
        gpus=gpus,
    )
