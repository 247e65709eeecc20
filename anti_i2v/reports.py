"""README.md for every shipped report and study folder, and the README's results table, written
from the folders' own result files: no number in them is typed by hand.

A report folder is read by what it holds:
- `summary.json` (evaluate): the main table and, with `--budgets`, the equal-visibility frontier;
- `ablation.json` (the layer ablation): each layer choice's drop and its paired differences;
- `pilot.json` (the pilot rule): the pilot's layers against the rule's and the random draws;
- a folder of such folders (`levers/`): an index of them;
- `NAME-profile/` (an `analyse --figures` report): the shipped profile `artifacts/profiles/NAME.json`;
- `lens.json` and `attention.json` (`make inside-mini-cogvideox`): what the lens and the attention
  share say about a model's blocks, also the README's "Inside" block.

Study folders (`artifacts/studies/NAME/`, written by `anti-i2v study`) get their README from
their report.json and protocol.json, and the README's results table has a row per study.

    python -m anti_i2v.reports           # write them (make reports)
    python -m anti_i2v.reports --check   # exit 1 naming any that differs (the test suite does this)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from anti_i2v.experiments.study.analysis import StudyReport
from anti_i2v.experiments.study.config import FAST_ARM
from anti_i2v.experiments.study.report import render_readme
from anti_i2v.models.registry import ARTIFACTS

REPORTS = ARTIFACTS / "reports"
STUDIES = ARTIFACTS / "studies"  # `anti-i2v study` folders: the README's results come from these
PROFILES = ARTIFACTS / "profiles"
DOCS = ARTIFACTS.parent / "docs"
HEADER = "<!-- Written by `python -m anti_i2v.reports` from this folder's {src}; do not edit. -->"
README_START = "<!-- results:start (python -m anti_i2v.reports writes this table) -->"
README_END = "<!-- results:end -->"
INSIDE_START = "<!-- inside:start (python -m anti_i2v.reports writes this block) -->"
INSIDE_END = "<!-- inside:end -->"
INSIDE = REPORTS / "inside-mini-cogvideox"


def _num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:+.{digits}f}" if digits == 3 else f"{x:.{digits}f}"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci or None in ci else f" [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


# --- evaluate reports ----------------------------------------------------------------------------


def evaluate_readme(folder: Path) -> str:
    s = json.loads((folder / "summary.json").read_text())
    cfg, judge = s["config"], s["judges"][0]
    lines = [
        HEADER.format(src="summary.json"),
        f"# {folder.name}: `anti-i2v evaluate {cfg['model']}`",
        "",
        f"Protected folders {', '.join(f'`{p}`' for p in cfg['protected'])}; judges "
        f"{', '.join(s['judges'])} (the first is the headline); {cfg['seeds']} generation "
        f"seed(s), {cfg['steps']} denoising steps; {s['rows']} rows in `results.csv`. "
        "Intervals are 95% bootstrap intervals over photos. The page is `index.html`.",
        "",
        f"## Identity drop on {cfg['model']}, no distortion, judge {judge}",
        "",
    ]
    rows = []
    for e in s["table"]:
        if (e["eval_model"], e["judge"], e["distortion"]) != (cfg["model"], judge, "none"):
            continue
        rows.append(
            [
                e["method"],
                str(e["n"]),
                _num(e["ism_drop"]) + _ci(e.get("ism_drop_ci95")),
                _num(e["cloak_delta_e"], 2),
                _num(e["cloak_psnr"], 1),
                _num(e.get("amplification"), 2),
            ]
        )
    lines += _table(
        ["method", "photos", "video ISM drop", "cloak ΔE2000", "cloak PSNR dB", "amplification"],
        rows,
    )
    distorted = [
        e
        for e in s["table"]
        if (e["eval_model"], e["judge"]) == (cfg["model"], judge)
        and e["distortion"] != "none"
        and e["method"] != "clean"
    ]
    if distorted:
        lines += [
            "",
            f"## After each distortion, judge {judge}",
            "",
            "The cloak passes through the distortion before the model sees it; the share is the "
            "drop after it over the undistorted drop (none where that drop is too small to divide by).",
            "",
        ]
        rows = [
            [
                e["method"],
                e["distortion"],
                _num(e["ism_drop"]) + _ci(e.get("ism_drop_ci95")),
                _num(e.get("ism_drop_surviving"), 2),
            ]
            for e in distorted
        ]
        lines += _table(["method", "distortion", "video ISM drop", "share surviving"], rows)
    front = s.get("frontier")
    if front:
        lines += ["", "## At equal visibility (the frontier)", ""]
        lines.append(
            f"Every method re-cloaked at budgets {', '.join(f'{b:g}' for b in front['budgets'])}"
            "/255 and read off its mean curve at each mean ΔE2000 (never extrapolated)."
        )
        marks = [
            str(int(d)) if float(d).is_integer() else str(d)
            for d in front["equal_visibility_delta_e"]
        ]
        for name, j in front["judges"].items():
            lines += ["", f"### judge {name} ({j['n_photos']} photos)", ""]
            rows = [
                [m] + [_num(at[d]["ism_drop"]) + _ci(at[d]["ci95"]) for d in marks]
                for m, at in j["at_delta_e"].items()
            ]
            lines += _table(["method"] + [f"drop at ΔE {d}" for d in marks], rows)
            rows = [
                [f"{p['a']} − {p['b']}", f"{p['delta_e']:g}", _num(p["diff"]) + _ci(p["ci95"])]
                for p in j["paired"]
            ]
            lines += ["", *_table(["paired difference", "ΔE", "A − B"], rows)]
    return "\n".join(lines) + "\n"


# --- layer ablation and pilot ----------------------------------------------------------------------


def ablation_readme(folder: Path) -> str:
    a = json.loads((folder / "ablation.json").read_text())
    lines = [
        HEADER.format(src="ablation.json"),
        f"# {folder.name}: which layers a cloak anchors",
        "",
        f"The profile `{a['profile']}` (world {a['world']}) against other layer choices, each "
        f"cloaking the same held-out portraits for {a['steps']} steps at the same budget; the "
        "drop is the video ISM drop. Random draws are confined to the rule's depth bands.",
        "",
        *_table(
            ["choice", "collapse", "anchors"],
            [
                [k, ", ".join(v["collapse"]), ", ".join(v["anchors"])]
                for k, v in a["layers"].items()
            ],
        ),
    ]
    for objective in ("irc-ira", "full"):
        for judge, r in a.get(objective, {}).items():
            lines += ["", f"## objective {objective}, judge {judge} ({r['n']} portraits)", ""]
            lines += _table(
                ["choice", "mean drop"], [[k, _num(v)] for k, v in r["mean_drop"].items()]
            )
            lines += [
                "",
                f"The median random draw is {r['median_random']}.",
                "",
                *_table(
                    ["paired difference", "diff", "portraits where A wins"],
                    [
                        [k, _num(v["diff"]) + _ci(v["ci95"]), f"{v['wins']}/{r['n']}"]
                        for k, v in r["paired"].items()
                    ],
                ),
            ]
    return "\n".join(lines) + "\n"


def pilot_readme(folder: Path) -> str:
    p = json.loads((folder / "pilot.json").read_text())
    lines = [
        HEADER.format(src="pilot.json"),
        f"# {folder.name}: layers chosen by a causal pilot",
        "",
        f"A pilot cloaks {len(p['pilot']['photos'])} selection portraits for {p['pilot_steps']} "
        f"steps (seed {p['pilot_seed']}) anchoring one block at a time and keeps the blocks that "
        f"remove most identity: collapse {', '.join(p['collapse'])}, anchors "
        f"{', '.join(p['anchors'])} (the rule's profile `{p['profile']}` anchors "
        f"{', '.join(p['rule_anchors'])}).",
    ]
    for objective in ("irc-ira", "full"):
        for judge, r in p.get(objective, {}).items():
            lines += [
                "",
                f"## objective {objective}, judge {judge} ({r['n']} portraits)",
                "",
                f"The pilot's layers remove {_num(r['pilot'])}; the median random draw is "
                f"{r['median_random']}.",
                "",
                *_table(
                    ["pilot minus", "their drop", "diff", "portraits where the pilot wins"],
                    [
                        [
                            k,
                            _num(v["mean"]),
                            _num(v["diff"]) + _ci(v["ci95"]),
                            f"{v['wins']}/{r['n']}",
                        ]
                        for k, v in r["minus"].items()
                    ],
                ),
            ]
    return "\n".join(lines) + "\n"


def profile_readme(folder: Path, profile: Path) -> str:
    d = json.loads(profile.read_text())
    rule = d.get("rule", {})
    return (
        "\n".join(
            [
                HEADER.format(src=f"profile, artifacts/profiles/{profile.name}"),
                f"# {folder.name}: the layer profile of {d['model']} ({d['family']})",
                "",
                f"`anti-i2v analyse --figures` on {d.get('samples', 0)} portraits: collapse "
                f"{', '.join(d['collapse_layers'])}; anchors {', '.join(d['anchor_layers'])}; "
                f"timesteps {', '.join(map(str, d['timesteps']))}. The rule averages "
                f"{', '.join(rule.get('measures', []))}. Figures are in `figures/`, the table in "
                "`index.html`.",
            ]
        )
        + "\n"
    )


def _block(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def inside_text(folder: Path, link: str = "") -> list[str]:
    """What the lens and the attention share say about a model's blocks, as sentences computed
    from the folder's lens.json and attention.json (and the model's shipped profile)."""
    lens = json.loads((folder / "lens.json").read_text())
    attention = json.loads((folder / "attention.json").read_text())
    layers, t = lens["layers"], max(lens["timesteps"])
    ti = lens["timesteps"].index(t)
    dist = [lens["to_output"][name][ti] for name in layers]
    drops = [dist[i - 1] - dist[i] for i in range(1, len(dist))]
    steep = max(range(len(drops)), key=lambda i: drops[i]) + 1
    share = {name: sum(v) / len(v) for name, v in attention["frame0"].items()}
    spread = max(max(v) - min(v) for v in attention["frame0"].values())
    top, low = max(share, key=share.get), min(share, key=share.get)
    profile_file = PROFILES / f"{lens['model']}.json"
    anchors = (
        json.loads(profile_file.read_text())["anchor_layers"] if profile_file.is_file() else []
    )
    both = layers[steep] == top
    out = [
        f"- **Lens** ({link}`lens.json`, one portrait, t={t}): read through the model's own output "
        f"head, the clean video after block {_block(layers[0])} is {dist[0]:.2f} of the output's "
        f"RMS away from the output, and the distance "
        + ("falls block by block" if all(d > 0 for d in drops) else "does not fall at every block")
        + f" to 0 at the last. Its largest single fall is at block {_block(layers[steep])} "
        f"({dist[steep - 1]:.2f} to {dist[steep]:.2f}).",
        f"- **Attention share** ({link}`attention.json`, {len(attention['photos'])} portraits, "
        f"{len(attention['timesteps'])} timesteps): later frames put {share[top]:.2f} of their "
        f"attention on the photo's frame in block {_block(top)}, and {share[low]:.2f} in block "
        f"{_block(low)}. No block's share moves by more than {spread:.2f} across the timesteps.",
        "- **What they say.** "
        + (
            f"Block {_block(top)} is both where the photo's frame draws the most attention and "
            "where the lens's estimate moves most towards the output: by both measures, it is "
            "where the photo enters the video. "
            if both
            else f"The lens's largest fall (block {_block(layers[steep])}) and the highest share "
            f"(block {_block(top)}) are at different blocks. "
        )
        + (
            f"The shipped profile's anchors (blocks {', '.join(_block(a) for a in anchors)}, "
            "chosen by the semantic scores) have shares "
            f"{', '.join(f'{share[a]:.2f}' for a in anchors)}"
            + (", so the semantic rule does not pick that block." if top not in anchors else ".")
            if anchors
            else ""
        ),
    ]
    return out


def inside_readme(folder: Path) -> str:
    lens = json.loads((folder / "lens.json").read_text())
    return (
        "\n".join(
            [
                HEADER.format(src="lens.json and attention.json"),
                f"# {folder.name}: the lens and the attention share of {lens['model']}",
                "",
                "![lens strip](lens-t700.png)",
                "",
                "![attention share](attention.png)",
                "",
                *inside_text(folder),
            ]
        )
        + "\n"
    )


def readme_with_inside(text: str, folder: Path = INSIDE) -> str:
    """README.md with the block between the inside markers regenerated."""
    start, end = text.index(INSIDE_START), text.index(INSIDE_END)
    rel = f"artifacts/reports/{folder.name}"
    block = [
        f"![lens strip]({rel}/lens-t700.png) ![attention share]({rel}/attention.png)",
        "",
        *inside_text(folder),
    ]
    return text[: start + len(INSIDE_START)] + "\n" + "\n".join(block) + "\n" + text[end:]


def index_readme(folder: Path) -> str:
    subs = sorted(p.name for p in folder.iterdir() if (p / "summary.json").is_file())
    return (
        "\n".join(
            [
                HEADER.format(src="sub-folders' summary.json"),
                f"# {folder.name}",
                "",
                *[f"- [{name}]({name}/README.md)" for name in subs],
            ]
        )
        + "\n"
    )


def readme_for(folder: Path) -> str | None:
    """The README a report folder gets, from what it holds; None for a folder that is no report."""
    if (folder / "summary.json").is_file():
        return evaluate_readme(folder)
    if (folder / "ablation.json").is_file():
        return ablation_readme(folder)
    if (folder / "pilot.json").is_file():
        return pilot_readme(folder)
    if (folder / "lens.json").is_file() and (folder / "attention.json").is_file():
        return inside_readme(folder)
    profile = PROFILES / f"{folder.name.removesuffix('-profile')}.json"
    if folder.name.endswith("-profile") and profile.is_file():
        return profile_readme(folder, profile)
    if any((p / "summary.json").is_file() for p in folder.iterdir() if p.is_dir()):
        return index_readme(folder)
    return None


def readmes(root: Path = REPORTS) -> dict[Path, str]:
    """Folder -> its README text, for every folder under `root` that gets one, sorted."""
    texts = {
        folder: readme_for(folder) for folder in sorted(p for p in root.rglob("*") if p.is_dir())
    }
    return {folder: text for folder, text in texts.items() if text is not None}


def report_folders(root: Path = REPORTS) -> list[Path]:
    """Every folder under `root` that gets a README (nested ones included), sorted."""
    return list(readmes(root))


# --- the README's table ------------------------------------------------------------------------


def _diff_cell(report: StudyReport, a: str, b: str) -> str:
    c = next((c for c in report.primary if c.a == a and c.b == b), None)
    if c is None or c.mean is None:
        return "-"
    mark = " **(Holm p < α)**" if c.significant else ""
    return f"{_num(c.mean)}{_ci(c.ci95)}{mark}"


def _rank_cell(report: StudyReport) -> str:
    r = report.rank
    return "-" if r is None else f"{r.rank} of {r.of} (p = {r.p:.2g})"


def studies(root: Path = STUDIES) -> list[Path]:
    """Every shipped study folder (one holding report.json and protocol.json), sorted."""
    return sorted(
        p.parent for p in root.glob("*/report.json") if (p.parent / "protocol.json").is_file()
    )


def study_report(folder: Path) -> StudyReport:
    """A study folder's typed report.json."""
    return StudyReport.from_json(json.loads((folder / "report.json").read_text()))


def study_readme(folder: Path) -> str:
    """A study folder's README, from its report.json and protocol.json (what the study wrote)."""
    return render_readme(study_report(folder), json.loads((folder / "protocol.json").read_text()))


# The results table's comparison columns: (heading, arm a, arm b), a cell reading a - b; the
# profile's rank sits after the first four.
TABLE_COMPARISONS = (
    ("Anti-I2V − RGB PGD", "anti-i2v", "rgb-pgd"),
    ("colour space alone − RGB PGD", "colour-space", "rgb-pgd"),
    ("profile − random layers (IRC+IRA)", "profile-layers", "random-layers"),
    ("attention-share anchors − random layers", "attention-layers", "random-layers"),
    ("fewer steps (anti-i2v-fast) − Anti-I2V", FAST_ARM, "anti-i2v"),
    ("attention term on the colour space − colour space alone", "attention-target", "colour-space"),
    ("two sampler steps − one (colour space)", "unrolled", "colour-space"),
    ("change moved towards the face − Anti-I2V", "face-region", "anti-i2v"),
)


def results_table(root: Path = STUDIES, links: bool = True, sentences: bool = True) -> str:
    """The results table, one row per shipped study: each cloak minus RGB PGD at the headline
    visibility (Holm-corrected across the study's pre-registered comparisons) and where the
    profile's layers rank, each naming its study (as links in the README; as folder names in
    the docs site, which cannot link outside itself); then, with `sentences`, each study's
    verdict sentences (docs/results.md; the README, a landing page, points there)."""
    found = {folder: study_report(folder) for folder in studies(root)}
    rows = [
        [
            report.model,
            f"{report.judge}, {report.photos} portraits, at ΔE {report.headline_delta_e:g}",
            *(_diff_cell(report, a, b) for _, a, b in TABLE_COMPARISONS[:4]),
            _rank_cell(report),
            *(_diff_cell(report, a, b) for _, a, b in TABLE_COMPARISONS[4:]),
            f"[{folder.name}](artifacts/studies/{folder.name}/README.md)"
            if links
            else f"`{folder.name}/`",
        ]
        for folder, report in found.items()
    ]
    head = [
        "model",
        "judge, portraits, visibility",
        *(h for h, _, _ in TABLE_COMPARISONS[:4]),
        "profile's rank (permutation p)",
        *(h for h, _, _ in TABLE_COMPARISONS[4:]),
        "study",
    ]
    if not sentences:
        tail = [
            "",
            "Each study's verdict sentences: `docs/results.md`, and its README (last column).",
        ]
    else:
        tail = ["", "What each study concludes, in its own words:", ""] + [
            f"- **{r.model}** (`{folder.name}`): " + " ".join(r.verdicts)
            for folder, r in found.items()
        ]
    return "\n".join(_table(head, rows) + tail)


def readme_with_results(text: str, root: Path = STUDIES, links: bool = True) -> str:
    """`text` (README.md, with links and no sentences, or docs/results.md) with the block between
    the results markers regenerated."""
    start, end = text.index(README_START), text.index(README_END)
    table = results_table(root, links, sentences=not links)
    return text[: start + len(README_START)] + "\n" + table + "\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if any differs")
    args = parser.parse_args(argv)
    wanted = {folder / "README.md": text for folder, text in readmes().items()}
    wanted |= {folder / "README.md": study_readme(folder) for folder in studies()}
    for page, links in ((ARTIFACTS.parent / "README.md", True), (DOCS / "results.md", False)):
        if page.is_file() and README_START in page.read_text():
            wanted[page] = readme_with_results(page.read_text(), links=links)
            if INSIDE_START in wanted[page] and INSIDE.is_dir():
                wanted[page] = readme_with_inside(wanted[page])
    stale = [p for p, text in wanted.items() if not p.is_file() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p.relative_to(ARTIFACTS.parent)} differs from what its results give; run "
                  "`python -m anti_i2v.reports`")  # fmt: skip
        return 1 if stale else 0
    for p in stale:
        p.write_text(wanted[p])
    print(f"wrote {len(stale)} of {len(wanted)} README files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
