"""The analyses validity gate on mini-cogvideox: depth variation, anchor vs collapse mask score, stability.

Adapts the mini model on two disjoint sets of held-out portraits (with their part masks) and
prints whether the picks agree; re-running one set checks the profile is byte-identical.
Usage: python -m anti_i2v.experiments.analyses_gate [--count 16] [--out out/gate-analyses]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from anti_i2v.analyses.run import adapt
from anti_i2v.world.dataset import render_dataset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--out", default="out/gate-analyses")
    args = parser.parse_args()
    out = Path(args.out)
    profiles = {}
    for name, seed in (("A", 101), ("B", 202)):
        world, photos = out / name / "world", out / name / "photos"
        render_dataset(world, args.count, seed, "heldout", photos=photos)
        profiles[name] = adapt(
            "mini-cogvideox",
            [photos],
            out / name / "adapt",
            masks=world,
            probe_overrides={"timesteps": (100, 300, 500, 700, 900)},
        )
    again = adapt(
        "mini-cogvideox",
        [out / "A" / "photos"],
        out / "A" / "adapt-again",
        masks=out / "A" / "world",
        probe_overrides={"timesteps": (100, 300, 500, 700, 900)},
    )
    a, b = profiles["A"], profiles["B"]
    layers = a.layers
    for name, p in profiles.items():
        mp = {k: float(np.mean(v)) for k, v in p.scores["mask_probe"].items()}
        anchor = np.mean([mp[x] for x in p.anchor_layers])
        collapse = np.mean([mp[x] for x in p.collapse_layers])
        print(
            f"set {name}: collapse {p.collapse_layers} anchors {p.anchor_layers} timesteps {p.timesteps}"
        )
        print("  mask_probe by depth: " + " ".join(f"{mp[x]:.3f}" for x in layers))
        print(
            f"  mask_probe anchors {anchor:.3f} vs collapse {collapse:.3f} (margin {anchor - collapse:+.3f}); "
            f"range over depth {max(mp.values()) - min(mp.values()):.3f}"
        )
    idx = {x: i for i, x in enumerate(layers)}
    dist = max(min(abs(idx[x] - idx[y]) for y in b.anchor_layers) for x in a.anchor_layers)
    print(
        f"anchors A {a['anchor_layers']} vs B {b['anchor_layers']}: farthest pick is {dist} block(s) from the other set's"
    )
    same = json.dumps(a.scores, sort_keys=True) == json.dumps(again.scores, sort_keys=True)
    print(
        f"same seed, same profile scores and picks: {same and a['anchor_layers'] == again['anchor_layers']}"
    )


if __name__ == "__main__":
    main()
