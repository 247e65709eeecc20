"""Run a study, stage by stage; every stage resumes and runs under the registered protocol.

1. Inputs: every photo readable, the split, the judge (and, for a face judge, a face in every
   photo), the model's weights and judge hashed; the protocol built and checked against the
   one registered in `DIR` (one line, exit 2, before any model work).
2. Cost: one protect and one generation step measured; the prediction printed; refused over
   `--budget-hours`. Then protocol.json is written (before the first cloak).
3. Layers, on the selection photos only: the profile (`adapt`, or the given one), K random
   draws over the whole depth, the pilot rule's anchors.
4. Cloaks: every arm at every budget and cloak seed, on the evaluation photos (`protect`
   resumes photo by photo and shards photos over torchrun ranks).
5. Videos: one `evaluate` over every cloak set with the generation seeds (resumes, shards).
6. The analysis and the report (rank 0): report.json, README.md, portraits.csv, the figure.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from anti_i2v.analyses.profile import Profile, load_profile, save_profile
from anti_i2v.core.common import (
    ToolkitError,
    atomic_path,
    check_writable_dir,
    pick_device,
    write_text_atomic,
)
from anti_i2v.core.distributed import Ranks, process_group
from anti_i2v.core.images import gather_images, load_photo
from anti_i2v.experiments.study.config import ARMS, ATTENTION_ARMS, StudyConfig
from anti_i2v.experiments.study.cost import (
    StudyCost,
    check_budget,
    cost_table,
    measure_steps,
    predict,
)
from anti_i2v.experiments.study.protocol import Split, build_protocol, register, split_photos
from anti_i2v.models.registry import MINI_WORLD, WORLD_JUDGE, judge_name
from anti_i2v.protect.config import ProtectConfig

console = Console(stderr=True)


def say(message: str) -> None:
    """Progress, printed once (by rank 0 under torchrun)."""
    if Ranks.from_env().is_main:
        console.print(message)


def default_judge(model: str) -> str:
    """The mini world's judge for a mini model (its world's), dlib's face recogniser otherwise."""
    return WORLD_JUDGE[MINI_WORLD[model]] if model in MINI_WORLD else "dlib"


def check_inputs(cfg: StudyConfig) -> tuple[list[Path], dict[Path, str], str]:
    """The photos (each readable) with their content hashes, and the judge; or one line naming
    the problem and the fix."""
    from anti_i2v.models.backbones import check_generates, resolve_model

    folder = Path(cfg.photos)
    if not folder.is_dir():
        raise ToolkitError(f"{cfg.photos}: not a folder; pass a folder of photos")
    photos = gather_images([folder])
    if not photos:
        raise ToolkitError(f"{cfg.photos}: no photos there (png, jpg, webp, ...)")
    if cfg.masks and not Path(cfg.masks).is_dir():
        raise ToolkitError(f"--masks {cfg.masks}: not a folder (the world render's --out)")
    region = None
    if any(ARMS[a].region is not None for a in cfg.arms):  # each photo's region, or one line now
        from anti_i2v.protect.region import FACE, Region

        region = Region.check(cfg.masks or FACE, cfg.region_floor)
    sha256 = {}
    for p in photos:
        photo = load_photo(p)  # a damaged file is one line now
        sha256[p] = photo.sha256
        if region is not None:
            region.binary(photo, photo.work_size(ProtectConfig.work_max_side))
    if cfg.profile:
        load_profile(Path(cfg.profile))
    resolve_model(cfg.model)
    check_generates(cfg.model)  # the study animates every cloak
    check_writable_dir(Path(cfg.out))
    return photos, sha256, cfg.judge or default_judge(cfg.model)


def require_faces(judge: str, photos: list[Path]) -> None:
    """A face judge needs a face in every photo: one line naming the first without one."""
    from anti_i2v.evaluate.identity import load_identity

    model = load_identity(judge)
    if getattr(model, "needs_face", False):
        for p in photos:
            model.require_face(load_photo(p).pixels, p.name)


def copy_group(photos: list[Path], names: dict[str, str], dest: Path) -> Path:
    """Copy the group's photos into `dest` (the stages take a folder; the originals stay put)."""
    dest.mkdir(parents=True, exist_ok=True)
    for p in photos:
        if p.stem in names and not (dest / p.name).exists():
            with atomic_path(dest / p.name) as tmp:  # torchrun ranks copy side by side
                shutil.copyfile(p, tmp)
    return dest


def choose_layers(cfg: StudyConfig, selection: Path, out: Path, judge: str) -> dict[str, Profile]:
    """Stage 3: configuration name -> profile, every one chosen on the selection photos only."""
    from anti_i2v.analyses.run import adapt
    from anti_i2v.experiments.layer_pilot import pilot_anchors, pilot_scores
    from anti_i2v.experiments.variants import random_draws

    layers = out / "layers"
    if cfg.profile:
        profile = load_profile(Path(cfg.profile))
    elif (out / "adapt" / "profile.json").exists():
        profile = load_profile(out / "adapt" / "profile.json")
    else:
        say("study: adapt on the selection photos")
        profile = adapt(cfg.model, gather_images([selection]), out / "adapt", masks=cfg.masks)
        Ranks.from_env().barrier()  # rank 0 analyses after the probe; the others wait for it
        if profile is None:  # a torchrun rank other than 0: rank 0 wrote it
            profile = load_profile(out / "adapt" / "profile.json")
    chosen = {"profile-layers": profile}
    if "random-layers" in cfg.arms:
        chosen |= random_draws(profile, cfg.random_layers)
    if "pilot-layers" in cfg.arms:
        say("study: the pilot rule on the selection photos")
        scores = pilot_scores(
            profile,
            selection,
            out / "pilot",
            (judge,),
            cfg.pilot_steps,
            cfg.eval_steps,
            latent_seed=None,
            device=cfg.device,
        )
        chosen["pilot-layers"] = replace(
            profile, anchor_layers=pilot_anchors(profile, scores, judge_name(judge))
        )
        write_text_atomic(out / "pilot" / "scores.json", json.dumps(scores, indent=2) + "\n")
    if set(cfg.arms) & set(ATTENTION_ARMS):
        from anti_i2v.analyses.attention import attention_anchors, read_attention
        from anti_i2v.analyses.run import measure_attention

        say("study: the attention share on the selection photos")
        shares = measure_attention(
            cfg.model,
            [selection],
            out / "attention",
            tuple(profile.timesteps_probed or profile.timesteps),
            cfg.device,
        )
        chosen["attention-layers"] = replace(
            profile, anchor_layers=attention_anchors(profile, read_attention(shares))
        )
    for name, p in chosen.items():
        save_profile(p, layers / f"{name}.json")
    return chosen


def cloak_sets(cfg: StudyConfig, out: Path, evaluation: Path) -> list[tuple[str, Path]]:
    """Stage 4: every arm at every budget and cloak seed; (evaluate label, folder) of each."""
    from anti_i2v.experiments.study.analysis import cloak_label
    from anti_i2v.protect.region import FACE
    from anti_i2v.protect.run import run_protect

    arms = cfg.study_arms()
    sets = []
    total = len(arms) * len(cfg.budgets) * cfg.cloak_seeds
    for arm in arms:
        source = {
            "none": None,
            "timesteps": "profile-layers",
            "profile": "profile-layers",
            "attention": "attention-layers",
        }.get(arm.layers, arm.name)
        profile = None if source is None else str(out / "layers" / f"{source}.json")
        for budget in cfg.budgets:
            for seed in range(cfg.cloak_seeds):
                folder = out / "cloaks" / arm.name / f"eps{budget:g}" / f"seed{seed}"
                sets.append((cloak_label(arm.name, budget, seed), folder))
                say(f"study: cloaks {len(sets)}/{total}: {arm.name} at {budget:g}/255, seed {seed}")
                run_protect(
                    ProtectConfig(
                        model=cfg.model,
                        images=(str(evaluation),),
                        profile=profile if arm.optimises else None,
                        out=str(folder),
                        method=arm.method,
                        space=arm.space,
                        losses=arm.losses,
                        eps=float(budget),
                        steps=arm.steps(cfg.steps),
                        alpha=arm.alpha,
                        optimizer=arm.optimizer,
                        alpha_decay=arm.alpha_decay,
                        seed=seed,
                        eot=arm.eot,
                        region=None if arm.region is None else cfg.masks or FACE,
                        region_floor=arm.region or ProtectConfig.region_floor,
                        device=cfg.device,
                        reference_cache=str(out / "cloaks" / ".reference"),
                    )
                )
    return sets


def run_study(cfg: StudyConfig) -> Path:
    """Run every stage (see the module docstring); returns `DIR/report.json` (rank 0's path on
    every rank)."""
    from anti_i2v.evaluate.identity import judge_sha256
    from anti_i2v.models.backbones import weights_sha256

    out = Path(cfg.out)
    photos, sha256, judge = check_inputs(cfg)
    split = split_photos(photos, cfg, sha256)
    protocol = build_protocol(
        cfg, split, judge_name(judge), judge_sha256(judge), weights_sha256(cfg.model)
    )
    if (out / "protocol.json").exists():
        register(out, protocol)  # the same protocol, or one line now
    require_faces(judge, [p for p in photos if p.stem in split.evaluation | split.selection])
    ranks = Ranks.from_env()
    device = ranks.device(pick_device(cfg.device))
    with process_group(ranks, device):  # the stages' own groups join this one
        return _run(cfg, out, photos, split, judge, protocol, ranks, device)


def _run(
    cfg: StudyConfig,
    out: Path,
    photos: list[Path],
    split: Split,
    judge: str,
    protocol: dict,
    ranks: Ranks,
    device: str,
) -> Path:
    """Stages 2-6, inside the run's process group."""
    evaluated = [p for p in photos if p.stem in split.evaluation]
    started = time.perf_counter()
    step, n_layers = measure_steps(cfg, device)
    cost = predict(
        cfg,
        step,
        len(evaluated),
        n_layers,
        finished_cloaks(out, [p.stem for p in evaluated]),
        layers_done=(out / "layers" / "profile-layers.json").is_file(),
    )
    cost = ranks.broadcast(cost)  # every rank decides on rank 0's prediction
    if ranks.is_main:
        console.print(cost_table(cost))
    check_budget(cost, cfg.budget_hours)
    if ranks.is_main:
        register(out, protocol)  # pre-registered: before the first cloak
    ranks.barrier()
    selection = copy_group(photos, split.selection, out / "photos" / "selection")
    evaluation = copy_group(photos, split.evaluation, out / "photos" / "evaluation")
    chosen = choose_layers(cfg, selection, out, judge)
    sets = cloak_sets(cfg, out, evaluation)
    return finish(cfg, protocol, chosen, sets, evaluation, judge, cost, started)


def finished_cloaks(out: Path, names: list[str]) -> dict[str, int]:
    """Arm -> cloaks of these photos already on disk (a resumed study predicts what is left)."""
    found: dict[str, int] = {}
    for arm in (out / "cloaks").glob("*"):
        found[arm.name] = sum(
            (folder / f"{n}.png").is_file() for folder in arm.glob("eps*/seed*") for n in names
        )
    return found


def finish(
    cfg: StudyConfig,
    protocol: dict,
    chosen: dict[str, Profile],
    sets: list[tuple[str, Path]],
    evaluation: Path,
    judge: str,
    cost: StudyCost,
    started: float,
) -> Path:
    """Stages 5 and 6: the videos, then (rank 0) the analysis and every report file."""
    from anti_i2v.evaluate.results import EvalRow
    from anti_i2v.evaluate.run import evaluate
    from anti_i2v.experiments.study.analysis import analyse
    from anti_i2v.experiments.study.report import write_report
    from anti_i2v.protect.config import EvaluateConfig

    out = Path(cfg.out)
    say(f"study: videos of {len(sets)} cloak sets, {cfg.generation_seeds} seeds each")
    report_dir = evaluate(
        EvaluateConfig(
            model=cfg.model,
            clean=str(evaluation),
            protected=tuple(f"{label}={folder}" for label, folder in sets),
            out=str(out / "eval"),
            seeds=cfg.generation_seeds,
            distortions=(),
            identity=(judge,),
            steps=cfg.eval_steps,
            device=cfg.device,
        )
    )
    if not Ranks.from_env().is_main:
        return out / "report.json"
    rows = EvalRow.read_csv(report_dir / "results.csv")
    layers = {
        name: {"collapse": p.collapse_layers, "anchors": p.anchor_layers, "timesteps": p.timesteps}
        for name, p in chosen.items()
    }
    report = analyse(rows, protocol, layers)
    # This run's time only: a resumed run's wall time is not the study's
    measured = {"predicted": cost.to_json(), "wall_seconds_this_run": time.perf_counter() - started}
    write_text_atomic(out / "cost.json", json.dumps(measured, indent=2) + "\n")
    return write_report(out, replace(report, command=command_line(cfg)), rows, protocol)


def command_line(cfg: StudyConfig) -> str:
    """The command that reruns this study, as the README shows it (folder names, not paths)."""
    from anti_i2v.experiments.study.config import StudyConfig as D

    parts = ["anti-i2v study", cfg.model, Path(cfg.photos).name, "--out", Path(cfg.out).name]
    for name in D.__dataclass_fields__:
        if name in ("model", "photos", "out", "device", "budget_hours"):
            continue
        value, default = getattr(cfg, name), D.__dataclass_fields__[name].default
        if value == default:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, tuple):
            value = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        elif name in ("masks", "profile"):
            value = Path(value).name
        parts += [flag, str(value)]
    return " ".join(parts)
