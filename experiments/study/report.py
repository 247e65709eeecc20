"""A study's files: report.json, README.md (written by code from report.json), portraits.csv,
results.csv and the frontier figure. `render_readme` is also what `python -m anti_i2v.reports`
runs over the shipped studies, so a README is never edited by hand.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np

from anti_i2v.core.common import atomic_write, write_text_atomic
from anti_i2v.evaluate.results import EvalRow, write_csv
from anti_i2v.experiments.study.analysis import (
    ComparisonResult,
    StudyReport,
    measured,
    parse_label,
)
from anti_i2v.experiments.study.config import LEVER_FIELDS, Arm
from anti_i2v.experiments.study.protocol import POOLED_RANDOM
from anti_i2v.experiments.study.stats import nanmean, read_off

FIGURE = "frontier.png"


def write_report(out: Path, report: StudyReport, rows: list[EvalRow], protocol: dict) -> Path:
    """Write every file of the study's answer into `out`; returns `out/report.json`."""
    write_csv(rows, out / "results.csv")
    write_portraits(rows, protocol, out / "portraits.csv")
    write_figure(rows, report, out / FIGURE)
    path = write_text_atomic(out / "report.json", json.dumps(report.to_json(), indent=2) + "\n")
    write_text_atomic(out / "README.md", render_readme(report, protocol))
    return path


def write_portraits(rows: list[EvalRow], protocol: dict, path: Path) -> None:
    """portraits.csv: each arm's drop per portrait at each visibility (mean over its seeds)."""
    at = tuple(protocol["analysis"]["read_at_delta_e"])
    photos, data = measured(rows, protocol)
    with atomic_write(path, newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "photo", "delta_e", "ism_drop", "seeds_reached"])
        for arm, m in data.items():
            read = read_off(m.delta_e, m.drop, at)  # (P, C, G, T)
            means = nanmean(read, axis=(1, 2))
            reached = np.isfinite(read).sum(axis=(1, 2))
            for i, photo in enumerate(photos):
                for k, t in enumerate(at):
                    v = means[i, k]
                    w.writerow(
                        [
                            arm,
                            photo,
                            f"{t:g}",
                            f"{v:.6g}" if np.isfinite(v) else "",
                            int(reached[i, k]),
                        ]
                    )


def write_figure(rows: list[EvalRow], report: StudyReport, path: Path) -> None:
    """The equal-visibility frontier: every arm's drop against its visibility, the random draws
    pooled into one curve (evaluate's figure code, one judge)."""
    from anti_i2v.evaluate.frontier import write_frontier_figures

    pooled = []
    for r in rows:
        if r.method == "clean" or r.distortion != "none":
            continue
        arm, budget, _ = parse_label(r.method)
        if arm.startswith("random-layers-"):
            arm = POOLED_RANDOM
        pooled.append(EvalRow(**{**r.to_json(), "method": arm, "budget": budget}))
    arms = list(dict.fromkeys(r.method for r in pooled))
    summary = {
        "budgets": report.budgets,
        "equal_visibility_delta_e": report.delta_e,
        "judges": {report.judge: {"curves": dict.fromkeys(arms)}},
    }
    tmp = path.parent / ".figure"
    tmp.mkdir(exist_ok=True)
    (made,) = write_frontier_figures(pooled, summary, tmp)
    made.replace(path)
    shutil.rmtree(tmp, ignore_errors=True)


def _num(v: float | None, digits: int = 4, signed: bool = False) -> str:
    if v is None:
        return "—"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _ci(ci: list[float] | None) -> str:
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""


def _p(p: float | None) -> str:
    return "—" if p is None else f"{p:.3g}"


def _comparison_rows(found: list[ComparisonResult], corrected: bool) -> list[str]:
    head = "| comparison | at ΔE | difference [95% CI] | portraits | p |"
    head += " Holm p | verdict |" if corrected else ""
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in found:
        cells = [
            f"{c.name}" + (f" ({c.why})" if corrected else ""),
            f"{c.delta_e:g}",
            f"{_num(c.mean, signed=True)} {_ci(c.ci95)}",
            str(c.n),
            _p(c.p),
        ]
        if corrected:
            verdict = (
                "—"
                if c.significant is None
                else ("**differs**" if c.significant else "no difference shown")
            )
            cells += [_p(c.p_holm), verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _optimiser(record: dict, steps: int) -> str:
    """An arm's steps and how it steps (the protocol records the cost lever's fields only where
    an arm uses them: the paper's PGD otherwise)."""
    arm = Arm(
        record["name"], record["method"], **{k: record[k] for k in LEVER_FIELDS if k in record}
    )
    if not arm.optimises:
        return "—"
    decay = "" if arm.alpha_decay == "constant" else f", {arm.alpha_decay} decay"
    return f"{arm.steps(steps)}, {arm.optimizer}, alpha {arm.alpha:g}{decay}"


def render_readme(report: StudyReport, protocol: dict) -> str:
    """The study's README, every number from `report` and `protocol` (see the module docstring)."""
    h = f"{report.headline_delta_e:g}"
    split = protocol["split"]
    lines = [
        f"# Study: {report.model}, judged by {report.judge}",
        "",
        "Written by `anti-i2v study` from report.json; do not edit by hand "
        "(`python -m anti_i2v.reports` rewrites it).",
        "",
        f"**{report.question}**",
        "",
        *[f"- {v}" for v in report.verdicts],
        "",
        f"![equal-visibility frontier]({FIGURE})",
        "",
        "## The command",
        "",
        "```",
        report.command or "(not recorded)",
        "```",
        "",
        "## The protocol (pre-registered)",
        "",
        f"protocol.json was written before the first cloak (sha256 `{report.protocol_sha256[:16]}`); "
        "a rerun under other options refuses to start.",
        "",
        f"- Photos: {len(split['selection'])} selection photos choose the layers (adapt and the "
        f"pilot) and are never evaluated; {len(split['evaluation'])} evaluation photos; split "
        f"seed {split['seed']}.",
        f"- Model `{protocol['model']}`, weights sha256 `{protocol['weights_sha256'][:16]}`; judge "
        f"`{protocol['judge']}`, sha256 `{protocol['judge_sha256'][:16]}`; toolkit "
        f"{protocol['toolkit_version']}.",
        f"- Budgets {', '.join(f'{b:g}' for b in protocol['budgets'])} (1/255 units of each arm's "
        f"space); {protocol['steps']} steps; cloak seeds {protocol['cloak_seeds']}, generation "
        f"seeds {protocol['generation_seeds']}; {protocol['eval_steps']} denoising steps a video.",
        f"- Measure: {protocol['analysis']['measure']}. Read {protocol['analysis']['interpolation']}.",
        f"- Statistics: {protocol['analysis']['bootstrap']}; Holm over the "
        f"{len(report.primary)} comparisons at ΔE {h} (family-wise α {report.alpha:g}); the other "
        "visibilities are secondary and uncorrected.",
        f"- Rank: {protocol['analysis']['rank']}.",
        "",
        "## Arms",
        "",
        "| arm | method | space | losses | layers | EOT | steps, optimiser |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in protocol["arms"]:
        lines.append(
            f"| {a['name']} | {a['method']} | {a['space'] or 'its own'}"
            + (f", change towards the face (floor {a['region']:g})" if a.get("region") else "")
            + " | "
            f"{','.join(a['losses']) if a['losses'] else 'its own'} | {a['layers']} | "
            f"{','.join(a['eot']) or '—'} | {_optimiser(a, protocol['steps'])} |"
        )
    lines += [
        "",
        "Layers each configuration used (chosen on the selection photos):",
        "",
        "| configuration | collapse | anchors |",
        "|---|---|---|",
    ]
    for name, layers in report.layers.items():
        lines.append(
            f"| {name} | {', '.join(layers['collapse'])} | {', '.join(layers['anchors'])} |"
        )
    at = [f"{t:g}" for t in report.delta_e]
    lines += [
        "",
        "## Identity drop at equal visibility",
        "",
        "Relative ISM drop of the videos, read per portrait (and seed) at each mean CIEDE2000 and "
        "averaged, with 95% nested-bootstrap intervals; n = portraits whose curve reaches that "
        "visibility. The mean-curve reading (the older method) is beside it.",
        "",
        "| arm | " + " | ".join(f"ΔE {t}" for t in at) + f" | mean curve, ΔE {h} |",
        "|---|" + "---|" * (len(at) + 1),
    ]
    for arm, d in report.arms.items():
        cells = [
            f"{_num(e['mean'])} {_ci(e['ci95'])} (n {e['n']})"
            for e in (d["at_delta_e"][t] for t in at)
        ]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {_num(d['mean_curve'].get(h))} |")
    lines += [
        "",
        f"## Pre-registered comparisons at ΔE {h} (Holm-corrected)",
        "",
        *_comparison_rows(report.primary, True),
        "",
    ]
    if report.rank is not None:
        r = report.rank
        lines += [
            f"The profile's layers rank **{r.rank} of {r.of}** by mean drop at ΔE {h}; "
            f"permutation p = {r.p:.3g}.",
            "",
            "| configuration | mean drop |",
            "|---|---|",
            *[f"| {k} | {v:.4f} |" for k, v in sorted(r.scores.items(), key=lambda kv: -kv[1])],
            "",
        ]
    lines += [
        "## Secondary: the other visibilities (uncorrected)",
        "",
        *_comparison_rows(report.secondary, False),
        "",
        "## Visibility per budget",
        "",
        "Means over the evaluation photos and cloak seeds.",
        "",
        "| arm | budget | mean ΔE2000 | 95th-percentile ΔE2000 | SSIM |",
        "|---|---|---|---|---|",
    ]
    for arm, d in report.arms.items():
        for v in d["visibility"]:
            lines.append(
                f"| {arm} | {v['budget']:g} | {_num(v['delta_e_mean'], 2)} | "
                f"{_num(v['delta_e_p95'], 2)} | {_num(v['ssim'], 4)} |"
            )
    lines += [
        "",
        "## Files",
        "",
        "- `protocol.json`: the pre-registration; `report.json`: every number here, typed;",
        "- `portraits.csv`: each arm's drop per portrait at each visibility; `results.csv`: every "
        "video's row (evaluate's columns);",
        f"- `{FIGURE}`: drop against visibility per arm, random draws pooled; `cost.json`: the "
        "prediction of the work left and the wall time of the run that finished the study.",
        "",
    ]
    return "\n".join(lines)
