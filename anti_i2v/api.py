"""The stages as Python functions, with the typed configs and results the CLI uses.

    from anti_i2v import api
    result = api.probe(api.ProbeConfig(model="tiny:cogvideox", images=("photos",), out="acts.zarr"))

Each function is the stage's own entry point (the CLI's commands call the same ones), so a
notebook gets the same checks, resumes and outputs as the command line. docs/api.md walks
through all four; the test suite runs that page's example.
"""

from __future__ import annotations

from pathlib import Path

from anti_i2v.analyses.choose import ChoiceRule
from anti_i2v.analyses.config import ExploreConfig
from anti_i2v.analyses.profile import Profile, load_profile
from anti_i2v.analyses.run import adapt, explore
from anti_i2v.analyses.run import analyse as _analyse
from anti_i2v.evaluate.run import evaluate as _evaluate
from anti_i2v.experiments.study.analysis import StudyReport
from anti_i2v.experiments.study.config import StudyConfig
from anti_i2v.probe.config import ProbeConfig
from anti_i2v.probe.run import ProbeResult, run_probe
from anti_i2v.protect.config import EvaluateConfig, ProtectConfig
from anti_i2v.protect.run import PhotoResult, run_protect
from anti_i2v.protect.sidecar import Sidecar

__all__ = [
    "ChoiceRule",
    "EvaluateConfig",
    "ExploreConfig",
    "PhotoResult",
    "ProbeConfig",
    "ProbeResult",
    "Profile",
    "ProtectConfig",
    "Sidecar",
    "StudyConfig",
    "StudyReport",
    "adapt",
    "analyse",
    "evaluate",
    "explore",
    "load_profile",
    "probe",
    "protect",
    "study",
]


def probe(config: ProbeConfig) -> ProbeResult:
    """Capture every block of `config.model` on `config.images` into the zarr store `config.out`.

    Returns:
        The store (`result.store`, an `ActivationStore`), the photos skipped and why, timings.
    """
    return run_probe(config)


def analyse(
    store: str | Path,
    out: str | Path,
    rule: ChoiceRule = ChoiceRule(),
    masks: str | Path | None = None,
    figures: str | Path | None = None,
) -> Profile:
    """Score every layer of a store, choose collapse and anchor layers, and write the profile.

    Args:
        store: an activation store from `probe` (a path or fsspec URL).
        out: the profile JSON to write.
        rule: how layers and timesteps are chosen.
        masks: part masks of the store's samples (for the mask-probe score).
        figures: a folder for the PCA and score figures and index.html.

    Returns:
        The profile, as written to `out`.
    """
    return _analyse(
        store,
        Path(out),
        Path(figures) if figures else None,
        Path(masks) if masks else None,
        rule=rule,
    )


def protect(config: ProtectConfig) -> list[PhotoResult]:
    """Cloak `config.images` into `config.out`; one result per photo, in order (a photo that
    fails is reported in its result and the others go on)."""
    return run_protect(config)


def evaluate(config: EvaluateConfig) -> Path:
    """Generate and judge videos of clean and protected photos; returns the report folder
    (results.csv, summary.json, index.html)."""
    return _evaluate(config)


def study(config: StudyConfig) -> StudyReport:
    """Run one pre-registered study (`anti-i2v study`; docs/study.md) and return its report.

    Writes `config.out`: protocol.json before the first cloak, then README.md, report.json,
    portraits.csv, results.csv and the frontier figure. Rerunning resumes.
    """
    import json

    from anti_i2v.experiments.study.run import run_study

    return StudyReport.from_json(json.loads(run_study(config).read_text()))
