"""The evaluation's `index.html`: main table, frontier, robustness, transfer, paired differences, strips."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from PIL import Image

from anti_i2v.core.common import atomic_path, file_slug, write_text_atomic
from anti_i2v.evaluate.frontier import figure_name

MAIN = [
    "ism_protected",
    "ism_drop",
    "psnr_video",
    "ssim_video",
    "temporal",
    "cloak_psnr",
    "cloak_ssim",
    "cloak_delta_e",
    "cloak_ism",
    "amplification",  # the video's ISM drop over the cloak photo's own (above 1: generation amplifies)
    "cloak_lpips",
    "ref_protected",
]


def _cell(e: dict, key: str) -> str:
    v = e.get(key)
    if v is None:
        return "<td>-</td>"
    ci = e.get(f"{key}_ci95")
    extra = f"<br><small>[{ci[0]:.3f}, {ci[1]:.3f}]</small>" if ci and ci[0] is not None else ""
    return f"<td>{v:.3f}{extra}</td>"


def _order(methods: list[str]) -> list[str]:
    return sorted(methods, key=lambda m: (m != "clean", m))


def _main_table(table: list[dict], model: str, judge: str) -> list[str]:
    main = [e for e in table if e["distortion"] == "none" and e["eval_model"] == model]
    parts = [
        f"<h3>judge: {html.escape(judge)}</h3><table><tr><th>method</th>"
        + "".join(f"<th>{k}</th>" for k in MAIN)
        + "</tr>"
    ]
    for m in _order(list({e["method"] for e in main if e["judge"] == judge})):
        e = next(x for x in main if x["method"] == m and x["judge"] == judge)
        parts.append(
            f"<tr><td>{html.escape(m)}</td>" + "".join(_cell(e, k) for k in MAIN) + "</tr>"
        )
    return [*parts, "</table>"]


def _robustness(table: list[dict], model: str, judge: str, dists: list[str]) -> list[str]:
    parts = [
        f"<h3>judge: {html.escape(judge)}</h3><table><tr><th>method</th>"
        + "".join(f"<th>{html.escape(d)}</th>" for d in dists)
        + "</tr>"
    ]
    mine = [e for e in table if e["eval_model"] == model and e["judge"] == judge]
    for m in _order([x for x in {e["method"] for e in mine} if x != "clean"]):
        cells = []
        for d in dists:
            e = next((x for x in mine if x["method"] == m and x["distortion"] == d), None)
            kept = e and e["ism_drop_surviving"]
            s = (
                "-"
                if e is None
                else f"{e['ism_drop']:.3f}" + (f" ({kept:.0%})" if kept is not None else "")
            )
            cells.append(f"<td>{s}</td>")
        parts.append(f"<tr><td>{html.escape(m)}</td>{''.join(cells)}</tr>")
    return [*parts, "</table>"]


def _transfer(table: list[dict], models: list[str], judge: str) -> list[str]:
    main = [e for e in table if e["distortion"] == "none" and e["judge"] == judge]
    parts = [
        f"<h3>judge: {html.escape(judge)}</h3><table><tr><th>method</th>"
        + "".join(f"<th>{html.escape(m)}</th>" for m in models)
        + "</tr>"
    ]
    for m in _order(list({e["method"] for e in main})):
        cells = []
        for mod in models:
            e = next((x for x in main if x["method"] == m and x["eval_model"] == mod), None)
            cells.append("<td>-</td>" if e is None else f"<td>{e['ism_drop']:.3f}</td>")
        parts.append(f"<tr><td>{html.escape(m)}</td>{''.join(cells)}</tr>")
    return [*parts, "</table>"]


def _interval(v: float | None, ci: list | None) -> str:
    if v is None:
        return "<td>out of range</td>"
    extra = f"<br><small>[{ci[0]:+.3f}, {ci[1]:+.3f}]</small>" if ci else ""
    return f"<td>{v:+.3f}{extra}</td>"


def _frontier(frontier: dict) -> list[str]:
    """Figures and the equal-visibility table, per judge (see protect.evaluate.frontier)."""
    targets = [f"{t:g}" for t in frontier["equal_visibility_delta_e"]]
    parts = [
        "<h2>Equal-visibility frontier</h2><p>Every method re-cloaked at budgets "
        + ", ".join(f"{b:g}" for b in frontier["budgets"])
        + "/255; ISM drop read off each method's curve where its cloaks reach the same mean "
        "CIEDE2000 (never extrapolated), with 95% bootstrap intervals over photos, paired "
        "between methods. This, not the same budget value, is the fair comparison.</p>"
    ]
    for judge, entry in frontier["judges"].items():
        file = figure_name(judge)
        parts.append(
            f"<h3>judge: {html.escape(judge)} ({entry['n_photos']} photos)</h3>"
            f"<img src='{file}' style='max-width:100%'>"
            "<table><tr><th>method</th>"
            + "".join(f"<th>ISM drop at ΔE {t}</th>" for t in targets)
            + "</tr>"
        )
        for m, at in entry["at_delta_e"].items():
            cells = "".join(_interval(at[t]["ism_drop"], at[t]["ci95"]) for t in targets)
            parts.append(f"<tr><td>{html.escape(m)}</td>{cells}</tr>")
        parts.append("</table><table><tr><th>A</th><th>B</th>")
        parts.append("".join(f"<th>A - B at ΔE {t}</th>" for t in targets) + "</tr>")
        pairs: dict[tuple[str, str], dict[str, dict]] = {}
        for p in entry["paired"]:
            pairs.setdefault((p["a"], p["b"]), {})[f"{p['delta_e']:g}"] = p
        for (a, b), by_t in pairs.items():
            cells = "".join(_interval(by_t[t]["diff"], by_t[t]["ci95"]) for t in targets)
            parts.append(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td>{cells}</tr>")
        parts.append("</table>")
    return parts


def write_report(out: Path, summary: dict, strips: dict[str, np.ndarray]) -> Path:
    """Write index.html (and strip PNGs) into `out`; every identity table is repeated per judge."""
    table = summary["table"]
    first = summary["config"]["model"]
    judges = summary.get("judges") or sorted({e["judge"] for e in table})
    models = sorted({e["eval_model"] for e in table})
    parts = [
        f"<h1>anti-i2v evaluation ({html.escape(first)})</h1>",
        f"<p>Identity judges: {', '.join(map(html.escape, judges))} (the first is the headline).</p>",
        "<h2>Main table (no distortion; mean and 95% bootstrap interval)</h2>",
    ]
    for judge in judges:
        parts += _main_table(table, first, judge)
    if "frontier" in summary:
        parts += _frontier(summary["frontier"])
    dists = sorted({e["distortion"] for e in table if e["distortion"] != "none"})
    if dists:
        parts.append(
            "<h2>Robustness: ISM drop after each distortion (fraction of the undistorted drop)</h2>"
        )
        for judge in judges:
            parts += _robustness(table, first, judge, dists)
    if len(models) > 1:
        parts.append(
            "<h2>Transfer: ISM drop on each eval model (rows: the model a cloak was made on)</h2>"
        )
        for judge in judges:
            parts += _transfer(table, models, judge)
    pairs = [p for p in summary.get("paired", []) if p["eval_model"] == first]
    if pairs:
        parts.append(
            "<h2>Paired differences, A minus B (same photos and seeds, no distortion; 95% bootstrap "
            "interval)</h2><p>An ISM-drop difference above 0 means A protects identity better; "
            "video PSNR/SSIM below 0 means A degrades the video more.</p><table><tr><th>judge</th>"
            "<th>A</th><th>B</th><th>ISM drop</th><th>A wins</th><th>video PSNR</th>"
            "<th>video SSIM</th></tr>"
        )
        for p in pairs:
            cells = [
                _cell({k: p[f"{k}_diff"], f"{k}_ci95": p[f"{k}_diff_ci95"]}, k)
                for k in ("ism_drop", "psnr_video", "ssim_video")
            ]
            cells.insert(1, f"<td>{p['ism_drop_wins']}/{p['n']}</td>")
            parts.append(
                f"<tr><td>{html.escape(p['judge'])}</td><td>{html.escape(p['a'])}</td>"
                f"<td>{html.escape(p['b'])}</td>{''.join(cells)}</tr>"
            )
        parts.append("</table>")
    if strips:
        parts.append("<h2>Videos: clean-photo video (top) and protected-photo video (bottom)</h2>")
        (out / "strips").mkdir(exist_ok=True)
        for key, arr in strips.items():
            # Method labels may hold spaces and brackets
            file = file_slug(key)
            with atomic_path(out / "strips" / f"{file}.png") as tmp:
                Image.fromarray(arr).save(tmp)
            parts.append(
                f"<p>{html.escape(key.replace('__', ' / '))}<br><img src='strips/{file}.png' "
                "style='image-rendering:pixelated;width:100%;max-width:1100px'></p>"
            )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>anti-i2v evaluation</title><style>"
        "body{font-family:sans-serif;margin:2em} td,th{padding:3px 8px;text-align:right} "
        "td:first-child{text-align:left}</style></head><body>" + "\n".join(parts) + "</body></html>"
    )
    return write_text_atomic(out / "index.html", page)
