"""A study's cost, predicted before it starts: time and memory per arm from a measured step.

`anti_i2v.plan.run_step` runs one protect step (the objective's forward and backward) and one
generation step (a denoiser pass over the clip, as the pipeline batches it) on the study's own
device and model, with real weights; the counts of each (cloak steps, reference videos,
generated videos) come from the protocol. The prediction leaves out what a step does not
show: the VAE decode of each video, analysis and the first model load, so it is a floor; the
measured wall time is written beside it when the study finishes (`cost.json`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from anti_i2v.core.common import ToolkitError
from anti_i2v.experiments.study.config import ATTENTION_ARMS, StudyConfig

ADAPT_TIMESTEPS = 5  # adapt probes each selection photo at five timesteps (analyses.run)
REFERENCE_STEPS = 25  # protect's cached reference video (ProtectConfig.reference_steps)


@dataclass(frozen=True)
class StepCost:
    """One measured step on the study's device."""

    protect_s: float  # one optimisation step, forward and backward
    protect_peak_bytes: int
    generate_s: float  # one denoising step of a video
    generate_peak_bytes: int
    device: str


def measure_steps(cfg: StudyConfig, device: str) -> tuple[StepCost, int]:
    """Load the model once; time one protect and one generation step (after a warm-up each)
    and count each one's peak memory (a second, counted run: counting slows a step).

    Returns:
        The step's cost, and the model's block count (the pilot cloaks once per block).
    """
    from anti_i2v.models.backbones import load_backbone
    from anti_i2v.plan import PlanRequest, run_step, time_step

    backbone = load_backbone(cfg.model, None, "float32", device)
    out = {}
    for task in ("protect", "generate"):
        req = PlanRequest(model=cfg.model, task=task, dtype="float32")
        seconds = time_step(backbone, req)
        peak, _, _ = run_step(backbone, req, fake=False)
        out[task] = (seconds, peak)
    step = StepCost(
        out["protect"][0], out["protect"][1], out["generate"][0], out["generate"][1], device
    )
    return step, len(backbone.block_names())


@dataclass(frozen=True)
class ArmCost:
    name: str
    cloaks: int
    videos: int
    seconds: float
    peak_bytes: int


@dataclass(frozen=True)
class StudyCost:
    """The predicted cost of every stage and arm."""

    step: StepCost
    stages: dict[str, float]  # stage -> seconds (layers, reference and clean videos)
    arms: list[ArmCost]

    @property
    def seconds(self) -> float:
        return sum(self.stages.values()) + sum(a.seconds for a in self.arms)

    def to_json(self) -> dict:
        return asdict(self) | {"seconds": self.seconds}


def predict(
    cfg: StudyConfig,
    step: StepCost,
    n_eval: int,
    n_layers: int,
    done: dict[str, int] | None = None,
    layers_done: bool = False,
) -> StudyCost:
    """Seconds and peak memory per arm for `n_eval` evaluation photos on a model of `n_layers` blocks.

    A resumed study passes what is finished: `done` (arm -> cloaks already on disk) and
    `layers_done` (adapt and the pilot), so the prediction is of the work left. Videos are all
    counted (evaluate's cache is not read here), so a resumed prediction errs long.
    """
    done = done or {}
    budgets, seeds, gens = len(cfg.budgets), cfg.cloak_seeds, cfg.generation_seeds
    video = cfg.eval_steps * step.generate_s
    stages = {
        "reference videos": n_eval * seeds * REFERENCE_STEPS * step.generate_s,
        "clean videos": n_eval * gens * video,
    }
    if cfg.profile is None and not layers_done:
        stages["adapt"] = cfg.selection * ADAPT_TIMESTEPS * step.generate_s
    if (
        "pilot-layers" in cfg.arms and not layers_done
    ):  # a pilot cloak and video per block and photo
        pilot = cfg.selection * n_layers
        stages["pilot"] = pilot * (cfg.pilot_steps * step.protect_s + video) + cfg.selection * (
            REFERENCE_STEPS * step.generate_s + video
        )
    if (
        set(cfg.arms) & set(ATTENTION_ARMS) and not layers_done
    ):  # one recorded forward a photo and t
        stages["attention"] = cfg.selection * ADAPT_TIMESTEPS * step.generate_s
    arms = []
    for arm in cfg.study_arms():
        cloaks = max(0, n_eval * budgets * seeds - done.get(arm.name, 0))
        videos = n_eval * budgets * seeds * gens  # made at the end: all counted, cached or not
        optimise = cloaks * arm.steps(cfg.steps) * step.protect_s if arm.optimises else 0.0
        peak = step.protect_peak_bytes if arm.optimises else step.generate_peak_bytes
        arms.append(ArmCost(arm.name, cloaks, videos, optimise + videos * video, peak))
    return StudyCost(step, stages, arms)


def check_budget(cost: StudyCost, hours: float | None) -> None:
    """One line when the prediction is over `--budget-hours`."""
    if hours is not None and cost.seconds > hours * 3600:
        raise ToolkitError(
            f"this study is predicted to take {cost.seconds / 3600:.1f} h, over --budget-hours "
            f"{hours:g}: lower --budgets, --cloak-seeds, --random-layers, --steps or the photos, "
            "or raise --budget-hours"
        )


def cost_table(cost: StudyCost) -> str:
    """The prediction as printed before the study starts."""
    lines = [
        f"predicted cost of the work left, on {cost.step.device} (from one measured step: protect "
        f"{cost.step.protect_s * 1000:.0f} ms, generation {cost.step.generate_s * 1000:.0f} ms)",
        f"  {'arm':22s} {'cloaks':>7s} {'videos':>7s} {'minutes':>8s} {'peak MiB':>9s}",
    ]
    for a in cost.arms:
        lines.append(
            f"  {a.name:22s} {a.cloaks:7d} {a.videos:7d} {a.seconds / 60:8.1f} "
            f"{a.peak_bytes / 2**20:9.0f}"
        )
    for name, s in cost.stages.items():
        lines.append(f"  {name:22s} {'':7s} {'':7s} {s / 60:8.1f}")
    lines.append(
        f"  total {cost.seconds / 3600:.2f} h (a floor: VAE decodes and loads are not counted)"
    )
    return "\n".join(lines)
