"""The static `index.html` tying an analysis's figures and picks together."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from anti_i2v.analyses.profile import Profile
from anti_i2v.core.common import write_text_atomic


def write_index(out_dir: Path, profile: Profile, figures: dict[str, Path]) -> Path:
    """Write `out_dir/index.html`: picks, the rule, a score table, and the figures."""
    layers = profile.layers + profile.vae_layers
    names = sorted(profile.scores)
    rows = []
    for layer in layers:
        role = (
            "collapse"
            if layer in profile.collapse_layers
            else "anchor"
            if layer in profile.anchor_layers + profile.vae_anchor_layers
            else ""
        )
        cells = "".join(f"<td>{np.mean(profile.scores[n][layer]):.3f}</td>" for n in names)
        rows.append(
            f"<tr class='{role}'><td>{html.escape(layer)}</td><td>{role}</td>"
            f"<td>{profile.semantic[layer]:.3f}</td>{cells}</tr>"
        )
    imgs = "".join(
        f"<h2>{html.escape(title)}</h2><img src='{html.escape(str(p.relative_to(out_dir)))}' style='max-width:100%'>"
        for title, p in figures.items()
        if p is not None
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>anti-i2v profile: {html.escape(profile.model)}</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:2px 8px;text-align:right}} td:first-child{{text-align:left}}
tr.collapse{{background:#dde8ff}} tr.anchor{{background:#ffdede}}</style></head><body>
<h1>Layer profile of {html.escape(profile.model)} ({html.escape(profile.family)})</h1>
<p><b>collapse layers</b>: {", ".join(profile.collapse_layers)} &nbsp; <b>anchor layers</b>: {", ".join(profile.anchor_layers + profile.vae_anchor_layers)}
&nbsp; <b>timesteps</b>: {", ".join(map(str, profile.timesteps))}</p>
<p>{profile.samples} samples from <code>{html.escape(profile.store)}</code>; rule: <code>{html.escape(str(profile.rule))}</code></p>
<table><tr><th>layer</th><th>role</th><th>semantic</th>{"".join(f"<th>{html.escape(n)}</th>" for n in names)}</tr>
{"".join(rows)}</table>{imgs}</body></html>"""
    return write_text_atomic(out_dir / "index.html", page)
