"""A study's statistics: curves read per portrait at equal visibility, a nested paired bootstrap,
Holm's correction and the profile's permutation rank.

Hand-written, and why: scipy has no nested (hierarchical) bootstrap and no Holm step-down
(`scipy.stats.false_discovery_control` does Benjamini-Hochberg only), and the interpolation and
rank are a few lines of numpy. Every resample is drawn from a seeded generator.

Shapes: P portraits, C cloak seeds, G generation seeds, B budgets, T visibilities read at.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95


def read_off(delta_e: np.ndarray, drop: np.ndarray, at: tuple[float, ...]) -> np.ndarray:
    """Each portrait's drop at the visibilities `at`, along its own curve over the budgets.

    Args:
        delta_e: `(P, C, B)` mean CIEDE2000 of each cloak (one per portrait, cloak seed, budget).
        drop: `(P, C, G, B)` relative ISM drop of each video (generation seed g of that cloak).
        at: the visibilities to read at.

    Returns:
        `(P, C, G, T)`: linear interpolation in ΔE between the budgets' points, NaN outside
        the range the cloaks reached (never extrapolated) or where a point is missing.
    """
    p_n, c_n, g_n, _ = drop.shape
    out = np.full((p_n, c_n, g_n, len(at)), np.nan)
    targets = np.asarray(at, dtype=np.float64)
    for p in range(p_n):
        for c in range(c_n):
            x = delta_e[p, c]
            for g in range(g_n):
                y = drop[p, c, g]
                ok = np.isfinite(x) & np.isfinite(y)
                if ok.sum() < 2:
                    continue
                order = np.argsort(x[ok])
                xs, ys = x[ok][order], y[ok][order]
                inside = (targets >= xs[0]) & (targets <= xs[-1])
                out[p, c, g] = np.where(inside, np.interp(targets, xs, ys), np.nan)
    return out


def mean_curve_read_off(delta_e: np.ndarray, drop: np.ndarray, at: tuple[float, ...]) -> list:
    """The older reading, for comparison: average ΔE and drop over everything per budget, then
    interpolate that one curve (None outside its range)."""
    x = np.nanmean(delta_e, axis=(0, 1))
    y = np.nanmean(drop, axis=(0, 1, 2))
    order = np.argsort(x)
    x, y = x[order], y[order]
    return [float(np.interp(t, x, y)) if x[0] <= t <= x[-1] else None for t in at]


@dataclass(frozen=True)
class Resample:
    """One nested bootstrap draw per replicate: portraits, then seeds within each portrait."""

    portraits: np.ndarray  # (R, P)
    cloak_seeds: np.ndarray  # (R, P, C)
    generation_seeds: np.ndarray  # (R, P, G)

    @classmethod
    def draw(cls, p: int, c: int, g: int, reps: int, seed: int) -> Resample:
        rng = np.random.default_rng(seed)
        return cls(
            rng.integers(0, p, (reps, p)),
            rng.integers(0, c, (reps, p, c)),
            rng.integers(0, g, (reps, p, g)),
        )

    def means(self, values: np.ndarray) -> np.ndarray:
        """`(R,)` replicate means of `(P, C, G)` values: seeds averaged within a portrait, then
        portraits averaged (NaN cells are left out of their portrait's mean)."""
        v = values[
            self.portraits[:, :, None, None],
            self.cloak_seeds[:, :, :, None],
            self.generation_seeds[:, :, None, :],
        ]
        with _quiet():
            return np.nanmean(np.nanmean(v, axis=(2, 3)), axis=1)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """An all-NaN slice has a NaN mean, as meant: numpy's warning about it is noise here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def nanmean(values: np.ndarray, axis) -> np.ndarray:
    """`np.nanmean`, NaN (without a warning) where every value is NaN."""
    with _quiet():
        return np.nanmean(values, axis=axis)


def portrait_means(values: np.ndarray) -> np.ndarray:
    """`(P,)` each portrait's mean over its seeds (NaN when no seed reached the visibility)."""
    return nanmean(values, axis=(1, 2))


@dataclass(frozen=True)
class Estimate:
    """A mean over portraits with its nested-bootstrap interval (and p-value for a difference)."""

    mean: float | None
    ci95: tuple[float, float] | None
    n: int  # portraits whose curve reached the visibility (the others are left out)
    p: float | None = None  # two-sided bootstrap p-value of mean = 0 (differences only)


def estimate(values: np.ndarray, reps: int, seed: int, test: bool = False) -> Estimate:
    """Mean of `(P, C, G)` values over the portraits that have any, with its nested interval.

    With `test`, the two-sided percentile-bootstrap p-value of a zero mean:
    2 * min(share of replicates <= 0, share >= 0), each counted as (k + 1) / (R + 1).
    """
    keep = np.isfinite(portrait_means(values))
    n = int(keep.sum())
    if n < 2:
        return Estimate(None, None, n)
    v = values[keep]
    boot = Resample.draw(n, v.shape[1], v.shape[2], reps, seed).means(v)
    boot = boot[np.isfinite(boot)]
    lo, hi = np.percentile(boot, [(1 - LEVEL) / 2 * 100, (1 + LEVEL) / 2 * 100])
    p = None
    if test:
        below = (1 + np.sum(boot <= 0)) / (len(boot) + 1)
        above = (1 + np.sum(boot >= 0)) / (len(boot) + 1)
        p = float(min(1.0, 2 * min(below, above)))
    return Estimate(float(np.mean(portrait_means(v))), (float(lo), float(hi)), n, p)


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone); None stays None (not tested).

    The family is the tested ones: with m of them, the k-th smallest p is multiplied by
    m - k + 1, and each adjusted value is at least the one before it.
    """
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(tested)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for k, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


@dataclass(frozen=True)
class Rank:
    """Where the profile's layers stand among every layer configuration tried."""

    rank: int  # 1 = the largest mean drop
    of: int  # configurations ranked
    p: float  # permutation p-value against the random draws alone
    scores: dict[str, float]  # configuration -> mean drop at the headline visibility


def profile_rank(scores: dict[str, float], profile: str, draws: list[str]) -> Rank | None:
    """The profile's rank by mean drop (ties count against it), and its permutation p-value.

    Under the null hypothesis that the probe's choice is one more random draw, its score is
    exchangeable with the draws', so p = (1 + #draws scoring at least as high) / (1 + #draws).
    None when the profile's or any draw's score is missing (its curves never reached the
    visibility).
    """
    if profile not in scores or any(d not in scores for d in draws) or not draws:
        return None
    if any(not math.isfinite(v) for v in scores.values()):
        return None
    mine = scores[profile]
    rank = 1 + sum(v >= mine for k, v in scores.items() if k != profile)
    above = sum(scores[d] >= mine for d in draws)
    return Rank(rank, len(scores), (1 + above) / (1 + len(draws)), dict(scores))
