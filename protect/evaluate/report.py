"""The evaluation's `index.html`: main table, robustness, transfer, and video strips."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
from PIL import Image

from probe.common import atomic_path, write_text_atomic

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


def write_report(out: Path, summary: dict, strips: dict[str, np.ndarray]) -> Path:
    """Write index.html (and strip PNGs) into `out`."""
    table = summary["table"]
    main_model = summary["config"]["model"]
    main = [e for e in table if e["distortion"] == "none"]
    models = sorted({e["eval_model"] for e in table})
    first = main_model
    parts = [
        f"<h1>anti-i2v evaluation ({html.escape(first)})</h1>",
        "<h2>Main table (no distortion; mean and 95% bootstrap interval)</h2><table><tr><th>method</th>"
        + "".join(f"<th>{k}</th>" for k in MAIN)
        + "</tr>",
    ]
    for m in _order(list({e["method"] for e in main if e["eval_model"] == first})):
        e = next(x for x in main if x["method"] == m and x["eval_model"] == first)
        parts.append(
            f"<tr><td>{html.escape(m)}</td>" + "".join(_cell(e, k) for k in MAIN) + "</tr>"
        )
    parts.append("</table>")
    dists = sorted({e["distortion"] for e in table if e["distortion"] != "none"})
    if dists:
        parts.append(
            "<h2>Robustness: ISM drop after each distortion (fraction of the undistorted drop)</h2>"
            "<table><tr><th>method</th>" + "".join(f"<th>{d}</th>" for d in dists) + "</tr>"
        )
        for m in _order([x for x in {e["method"] for e in table} if x != "clean"]):
            cells = []
            for d in dists:
                e = next(
                    (
                        x
                        for x in table
                        if x["method"] == m and x["distortion"] == d and x["eval_model"] == first
                    ),
                    None,
                )
                s = (
                    "-"
                    if e is None
                    else f"{e['ism_drop']:.3f} ({e['ism_drop_surviving'] or 0:.0%})"
                )
                cells.append(f"<td>{s}</td>")
            parts.append(f"<tr><td>{html.escape(m)}</td>{''.join(cells)}</tr>")
        parts.append("</table>")
    if len(models) > 1:
        parts.append(
            "<h2>Transfer: ISM drop on each eval model (rows: the model a cloak was made on)</h2>"
            "<table><tr><th>method</th>"
            + "".join(f"<th>{html.escape(m)}</th>" for m in models)
            + "</tr>"
        )
        for m in _order({e["method"] for e in main}):
            cells = []
            for mod in models:
                e = next((x for x in main if x["method"] == m and x["eval_model"] == mod), None)
                cells.append("<td>-</td>" if e is None else f"<td>{e['ism_drop']:.3f}</td>")
            parts.append(f"<tr><td>{html.escape(m)}</td>{''.join(cells)}</tr>")
        parts.append("</table>")
    pairs = [p for p in summary.get("paired", []) if p["eval_model"] == first]
    if pairs:
        parts.append(
            "<h2>Paired differences, A minus B (same photos and seeds, no distortion; 95% bootstrap "
            "interval)</h2><p>An ISM-drop difference above 0 means A protects identity better; "
            "video PSNR/SSIM below 0 means A degrades the video more.</p><table><tr><th>A</th><th>B</th>"
            "<th>ISM drop</th><th>video PSNR</th><th>video SSIM</th></tr>"
        )
        for p in pairs:
            cells = "".join(
                _cell({k: p[f"{k}_diff"], f"{k}_ci95": p[f"{k}_diff_ci95"]}, k)
                for k in ("ism_drop", "psnr_video", "ssim_video")
            )
            parts.append(
                f"<tr><td>{html.escape(p['a'])}</td><td>{html.escape(p['b'])}</td>{cells}</tr>"
            )
        parts.append("</table>")
    if strips:
        parts.append("<h2>Videos: clean-photo video (top) and protected-photo video (bottom)</h2>")
        (out / "strips").mkdir(exist_ok=True)
        for key, arr in strips.items():
            # Method labels may hold spaces and brackets
            file = re.sub(r"[^A-Za-z0-9_.-]+", "-", key).strip("-")
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
