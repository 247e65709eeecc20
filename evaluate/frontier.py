"""The equal-visibility frontier: identity drop against cloak visibility, one curve per method.

Comparing methods "at the same budget" favours whichever method spends its budget more visibly
(an L-inf of 16/255 in L*a*b* is not the visibility of 16/255 in RGB). `evaluate --budgets`
therefore re-cloaks every method at several budgets through protect, with the recipe its
sidecars record (only eps changes), measures each cloak's visibility (mean CIEDE2000, SSIM, and
LPIPS where weights exist) and its videos' ISM drop, and compares methods where their curves
reach the same visibility.

Interpolation and intervals: a method's curve is its mean ΔE2000 and mean ISM drop over photos
at each budget; the drop at a target ΔE is read off that curve by linear interpolation (never
extrapolated: outside the measured range it is None). Intervals resample photos (the same
resample for every method, so differences are paired) and recompute the curves: 95% percentile
intervals over 2000 resamples, seeded. Hand-written: no library interpolates a bootstrap of
paired curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rich.console import Console

from anti_i2v.analyses.profile import load_profile
from anti_i2v.core.common import ToolkitError, atomic_path, file_slug
from anti_i2v.evaluate.results import CloakSet, method_label, row_value
from anti_i2v.protect.config import EQUAL_VISIBILITY, NOT_SETTINGS, EvaluateConfig, ProtectConfig

console = Console(stderr=True)
REPS, LEVEL = 2000, 0.95
# Visibility axes of the figure: (row field, axis label, transform)
AXES = (
    ("cloak_delta_e", "cloak visibility: mean CIEDE2000", lambda v: v),
    ("cloak_ssim", "cloak visibility: 1 - SSIM", lambda v: 1 - v),
    ("cloak_lpips", "cloak visibility: LPIPS", lambda v: v),
)
# ProtectConfig fields a sidecar's settings carry
_RECIPE_FIELDS = set(ProtectConfig.__dataclass_fields__) - set(NOT_SETTINGS)


def figure_name(judge: str) -> str:
    """The file of a judge's frontier figure, as the report links it."""
    return f"frontier-{file_slug(judge)}.png"


@dataclass
class FrontierPlan:
    """Every (method, budget) cloak set the frontier needs: reused folders, and protect runs to make."""

    sets: list[CloakSet]  # CloakSet already on disk (a --protected folder at one of the budgets)
    pending: list[tuple[str, float, ProtectConfig]]  # (label, budget, protect settings)

    @classmethod
    def make(
        cls, cfg: EvaluateConfig, clean: dict[str, Path], sets: list[CloakSet], out: Path
    ) -> FrontierPlan:
        """Check every recipe and build every protect config now, before any model work.

        Raises:
            ToolkitError: a folder without sidecars, cloaks made with a profile that `--profile`
                does not match, or a custom target (not re-creatable from its hash).
        """
        reused, pending, seen = [], [], {}
        by_sha = {load_profile(Path(p)).sha256: p for p in cfg.profiles}

        def profile_for(sha: str | None, whose: str) -> str | None:
            """The --profile file with this hash (None for none); one line when it is missing."""
            if sha is None:
                return None
            if sha not in by_sha:
                raise ToolkitError(
                    f"{whose} was cloaked with profile {sha[:12]}; pass that profile with "
                    "--profile so --budgets can re-cloak with the same layers"
                )
            return by_sha[sha]

        for s in sets:
            if s.made_on not in (cfg.model, "unknown"):
                console.print(
                    f"[yellow]note:[/] {s.label} is a transfer set; the frontier leaves it out"
                )
                continue
            if s.recipe is None:
                raise ToolkitError(
                    f"--budgets re-cloaks each method from its sidecars; the {s.label} folder has "
                    "none (cloak it with `anti-i2v protect`, or leave it out)"
                )
            settings = s.recipe.settings
            if settings.get("target"):
                raise ToolkitError(
                    f"{s.label} was cloaked with a custom --target, which --budgets cannot re-create "
                    "from its hash; leave that folder out of the frontier run"
                )
            profile = profile_for(settings.get("profile"), s.label)
            # An ensemble cloak names its other models' profiles by hash too
            ensemble = tuple(
                m["model"] + (f"={path}" if (path := profile_for(m["profile"], s.label)) else "")
                for m in settings.get("ensemble", [])
            )
            recipe = {k: v for k, v in settings.items() if k in _RECIPE_FIELDS and k != "eps"}
            label = s.label if s.named else method_label(settings, with_eps=False)
            key = repr(sorted(recipe.items()))
            if label in seen:
                if seen[label] != key:
                    raise ToolkitError(
                        f"two folders are {label} cloaks made with different settings; pass one "
                        "of them to --budgets runs"
                    )
                continue  # the same recipe at another budget: one curve
            seen[label] = key
            kwargs = {
                **recipe,
                "profile": profile,
                "ensemble": ensemble,
                "target": None,
                "losses": tuple(recipe["losses"]) if recipe.get("losses") else None,
                "timesteps": tuple(recipe["timesteps"]) if recipe.get("timesteps") else None,
                "eot": tuple(recipe.get("eot", ())),
            }
            for budget in cfg.budgets:
                if math.isclose(budget, s.budget):
                    reused.append(replace(s, label=label))
                    continue
                folder = out / ".cloaks" / file_slug(label) / f"eps{budget:g}"
                pc = ProtectConfig(
                    **kwargs,
                    eps=float(budget),
                    images=tuple(str(p) for p in clean.values()),
                    out=str(folder),
                    device=cfg.device,
                )
                pending.append((label, float(budget), pc))
        if not reused and not pending:
            raise ToolkitError("--budgets: no --protected folder was made on the main model")
        return cls(reused, pending)

    def cloak(self) -> list[CloakSet]:
        """Run protect for every pending set (finished photos are kept) and return every set."""
        from anti_i2v.core.images import gather_images
        from anti_i2v.protect.run import run_protect

        out = list(self.sets)
        for i, (label, budget, pc) in enumerate(self.pending):
            console.print(f"frontier {i + 1}/{len(self.pending)}: {label} at {budget:g}/255")
            run_protect(pc)
            files = {
                p.stem: p for p in gather_images([Path(pc.out)]) if not p.name.endswith(".loss.png")
            }
            out.append(CloakSet(label, files, pc.model, budget))
        return out


def _curves(rows: list, photos: list[str], budgets: list[float], key: str) -> np.ndarray:
    """`(P, B)` means over seeds of a measure per photo and budget (NaN where absent)."""
    acc: dict[tuple[str, float], list[float]] = {}
    for r in rows:
        acc.setdefault((r.photo, r.budget), []).append(row_value(r, key))
    arr = np.full((len(photos), len(budgets)), np.nan)
    for i, p in enumerate(photos):
        for j, b in enumerate(budgets):
            if (p, b) in acc:
                arr[i, j] = np.mean(acc[p, b])
    return arr


def _read_off(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    """y at `at` along the curve through points (x, y), NaN outside x's range (no extrapolation)."""
    order = np.argsort(x)
    x, y = x[order], y[order]
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return np.full(len(at), np.nan)
    x, y = x[ok], y[ok]
    return np.where((at >= x[0]) & (at <= x[-1]), np.interp(at, x, y), np.nan)


def _boot(x: np.ndarray, y: np.ndarray, at: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """`(reps, len(at))` curve read-offs over photo resamples `idx` `(reps, P)`."""
    return np.stack([_read_off(x[i].mean(0), y[i].mean(0), at) for i in idx])


def _ci(samples: np.ndarray) -> list[float] | None:
    """Percentile interval of finite samples; None when over 5% of resamples leave the range."""
    finite = samples[np.isfinite(samples)]
    if len(finite) < 0.95 * len(samples):
        return None
    lo, hi = np.percentile(finite, [(1 - LEVEL) / 2 * 100, (1 + LEVEL) / 2 * 100])
    return [float(lo), float(hi)]


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def frontier_summary(rows: list, budgets: tuple[float, ...], seed: int = 0) -> dict:
    """Curves, drops at equal visibility and paired differences there, per judge (module docstring).

    Args:
        rows: the frontier's EvalRows (undistorted, main model), every judge.
        budgets: the budgets swept, in 1/255 units.

    Returns:
        {"budgets", "equal_visibility_delta_e", "judges": {judge: {"curves", "at_delta_e", "paired"}}}
    """
    budgets_l = sorted(float(b) for b in budgets)
    at = np.array(EQUAL_VISIBILITY)
    out = {"budgets": budgets_l, "equal_visibility_delta_e": list(EQUAL_VISIBILITY), "judges": {}}
    for judge in dict.fromkeys(r.judge for r in rows):
        jr = [r for r in rows if r.judge == judge and r.method != "clean"]
        methods = sorted({r.method for r in jr})
        photos = sorted({r.photo for r in jr})
        idx = np.random.default_rng(seed).integers(0, len(photos), (REPS, len(photos)))
        de, drop, boot = {}, {}, {}
        entry = {"n_photos": len(photos), "curves": {}, "at_delta_e": {}, "paired": []}
        for m in methods:
            mr = [r for r in jr if r.method == m]
            de[m] = _curves(mr, photos, budgets_l, "cloak_delta_e")
            drop[m] = _curves(mr, photos, budgets_l, "ism_drop")
            ssim_m = _curves(mr, photos, budgets_l, "cloak_ssim")
            lp = _curves(mr, photos, budgets_l, "cloak_lpips")
            entry["curves"][m] = [
                {
                    "budget": b,
                    "cloak_delta_e": _finite(np.nanmean(de[m][:, j])),
                    "cloak_ssim": _finite(np.nanmean(ssim_m[:, j])),
                    "cloak_lpips": None
                    if np.isnan(lp[:, j]).all()
                    else float(np.nanmean(lp[:, j])),
                    "ism_drop": _finite(np.nanmean(drop[m][:, j])),
                    "ism_drop_ci95": _ci(np.nanmean(drop[m][:, j][idx], axis=1)),
                }
                for j, b in enumerate(budgets_l)
            ]
            point = _read_off(np.nanmean(de[m], 0), np.nanmean(drop[m], 0), at)
            boot[m] = _boot(de[m], drop[m], at, idx)
            entry["at_delta_e"][m] = {
                f"{t:g}": {"ism_drop": _finite(point[k]), "ci95": _ci(boot[m][:, k])}
                for k, t in enumerate(at)
            }
        for i, a in enumerate(methods):
            for b in methods[i + 1 :]:
                for k, t in enumerate(at):
                    pa = entry["at_delta_e"][a][f"{t:g}"]["ism_drop"]
                    pb = entry["at_delta_e"][b][f"{t:g}"]["ism_drop"]
                    entry["paired"].append(
                        {
                            "a": a,
                            "b": b,
                            "delta_e": float(t),
                            "diff": None if pa is None or pb is None else pa - pb,
                            "ci95": _ci(boot[a][:, k] - boot[b][:, k]),
                        }
                    )
        out["judges"][judge] = entry
    return out


def write_frontier_figures(rows: list, summary: dict, out: Path) -> list[Path]:
    """`frontier-<judge>.png`: ISM drop against each visibility axis, a curve and a 95% band per method."""
    from matplotlib.figure import Figure

    paths = []
    budgets = summary["budgets"]
    for judge, entry in summary["judges"].items():
        jr = [r for r in rows if r.judge == judge and r.method != "clean"]
        photos = sorted({r.photo for r in jr})
        axes = [
            a
            for a in AXES
            if not all(math.isnan(r.cloak_lpips) for r in jr) or a[0] != "cloak_lpips"
        ]
        fig = Figure(figsize=(5.2 * len(axes), 4.2))
        idx = np.random.default_rng(0).integers(0, len(photos), (REPS // 4, len(photos)))
        for ax, (key, xlabel, tf) in zip(
            fig.subplots(1, len(axes), squeeze=False)[0], axes, strict=True
        ):
            for m in entry["curves"]:
                mr = [r for r in jr if r.method == m]
                x = tf(_curves(mr, photos, budgets, key))
                y = _curves(mr, photos, budgets, "ism_drop")
                xm, ym = np.nanmean(x, 0), np.nanmean(y, 0)
                (line,) = ax.plot(xm, ym, marker="o", label=m)
                grid = np.linspace(np.nanmin(xm), np.nanmax(xm), 40)
                band = _boot(x, y, grid, idx)
                ok = np.isfinite(band).mean(0) > 0.95
                if ok.any():
                    lo, hi = np.nanpercentile(band[:, ok], [2.5, 97.5], axis=0)
                    ax.fill_between(grid[ok], lo, hi, color=line.get_color(), alpha=0.15)
            if key == "cloak_delta_e":
                for t in summary["equal_visibility_delta_e"]:
                    ax.axvline(t, color="grey", lw=0.6, ls=":")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"video ISM drop ({judge})")
            ax.grid(alpha=0.3)
        fig.axes[0].legend(fontsize=8)
        fig.suptitle(f"equal-visibility frontier, judge {judge}, {len(photos)} photos")
        fig.tight_layout()
        path = out / figure_name(judge)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, metadata={"Software": None})
        paths.append(path)
    return paths
