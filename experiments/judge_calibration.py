"""Is dlib a judge worth trusting on real faces, and how far does an invisible cloak move it?

On real photos of named people (face_recognition's test photos: three of one person, one of
another), this checks that dlib's face recogniser scores every same-person pair above every
different-person pair, then measures how far cloaks at mean CIEDE2000 3 move each photo's own
score: 1 - cosine(dlib(cloak), dlib(photo)). Each cloak method is run at several budgets on a
model, its per-photo score change is read at ΔE 3 along its own curve (the study's read-off),
and the mean is the figure. Far below the same/different gap, a cloak alone cannot make dlib
call a photo someone else; the video must do that, which is what a study measures.

Usage: python -m anti_i2v.experiments.judge_calibration PHOTOS [--model tiny:svd]
    [--budgets 2,4,8] [--steps 10] [--out artifacts/calibration/dlib.json] [--work DIR]
PHOTOS holds NAME.jpg files; a photo's person is its name without trailing digits (obama2 ->
obama).
"""

from __future__ import annotations

import argparse
import json
import re
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image

from anti_i2v.core.common import ToolkitError, to_uint8, write_text_atomic
from anti_i2v.core.images import gather_images, load_photo
from anti_i2v.evaluate.identity import DlibFace, judge_sha256
from anti_i2v.experiments.study.stats import read_off
from anti_i2v.protect.config import ProtectConfig
from anti_i2v.protect.metrics import delta_e
from anti_i2v.protect.run import run_protect

AT_DELTA_E = 3.0
METHODS = ("random-noise", "rgb-pgd", "anti-i2v")


def person(name: str) -> str:
    return re.sub(r"\d+$", "", name)


def descriptors(judge: DlibFace, photos: list[Path]) -> dict[str, np.ndarray]:
    """Photo name -> unit 128-d descriptor; one line for a photo with no face."""
    out = {}
    for p in photos:
        image = load_photo(p).pixels
        judge.require_face(image, p.name)
        out[p.stem] = judge(image[None])[0].numpy()
    return out


def pair_scores(desc: dict[str, np.ndarray]) -> tuple[list[float], list[float]]:
    """Cosines of every same-person pair and every different-person pair."""
    same, other = [], []
    for a, b in combinations(sorted(desc), 2):
        (same if person(a) == person(b) else other).append(float(desc[a] @ desc[b]))
    return same, other


def calibrate(
    photos: Path,
    out: Path,
    model: str,
    budgets: tuple[float, ...],
    steps: int,
    work: Path,
    max_side: int = 512,
    methods: tuple[str, ...] = METHODS,
) -> dict:
    """Run the calibration (module docstring); writes and returns the JSON."""
    given = gather_images([photos])
    if len({person(p.stem) for p in given}) < 2:
        raise ToolkitError(f"{photos}: photos of at least two people are needed")
    files = []  # at most `max_side` pixels a side (dlib's detector is slow on large photos)
    for p in given:
        small = work / "photos" / f"{p.stem}.png"
        if not small.exists():
            small.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(to_uint8(load_photo(p).work_pixels(max_side))).save(small)
        files.append(small)
    judge = DlibFace()
    clean = descriptors(judge, files)
    pixels = {p: load_photo(p).pixels for p in files}
    same, other = pair_scores(clean)
    moves = {}
    for method in methods:
        de = np.full((len(files), 1, len(budgets)), np.nan)
        move = np.full((len(files), 1, 1, len(budgets)), np.nan)
        for j, budget in enumerate(budgets):
            folder = work / method / f"eps{budget:g}"
            run_protect(
                ProtectConfig(
                    model=model,
                    images=tuple(map(str, files)),
                    profile=None,
                    out=str(folder),
                    method=method,
                    losses=("diffusion",) if method == "anti-i2v" else None,
                    eps=float(budget),
                    steps=steps,
                    # big enough steps that the budget's boundary is reached in half of them
                    alpha=max(1.0, 2 * budget / steps),
                )
            )
            for i, p in enumerate(files):
                cloak = load_photo(folder / f"{p.stem}.png").pixels
                de[i, 0, j] = delta_e(cloak, pixels[p])
                move[i, 0, 0, j] = 1 - float(judge(cloak[None])[0].numpy() @ clean[p.stem])
        at = read_off(de, move, (AT_DELTA_E,))[:, 0, 0, 0]
        moves[method] = {
            "score_change_at_delta_e_3": float(np.nanmean(at)) if np.isfinite(at).any() else None,
            "photos_reached": int(np.isfinite(at).sum()),
            "delta_e_per_budget": [float(np.nanmean(de[:, 0, j])) for j in range(len(budgets))],
        }
    result = {
        "judge": "dlib",
        "judge_sha256": judge_sha256("dlib"),
        "photos": sorted(clean),
        "max_side": max_side,
        "same_person": same,
        "different_person": other,
        "separates": min(same) > max(other),
        "gap": min(same) - max(other),
        "cloak_model": model,
        "budgets": list(budgets),
        "steps": steps,
        "cloaks": moves,
    }
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path)
    parser.add_argument("--model", default="tiny:svd")
    parser.add_argument("--budgets", default="2,4,8")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("artifacts/calibration/dlib.json"))
    parser.add_argument("--work", type=Path, default=Path("out/judge-calibration"), help="cloaks")
    parser.add_argument("--max-side", type=int, default=512, help="photos shrunk to this")
    args = parser.parse_args(argv)
    budgets = tuple(float(b) for b in args.budgets.split(","))
    result = calibrate(
        args.photos, args.out, args.model, budgets, args.steps, args.work, args.max_side
    )
    print(json.dumps({k: result[k] for k in ("separates", "gap", "cloaks")}, indent=2))
    return args.out


if __name__ == "__main__":
    main()
