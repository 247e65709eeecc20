"""Alternative layer picks to test a profile's choice against (`anti_i2v.experiments.layer_ablation`).

Does probing choose better layers than chance? Each variant keeps the profile's timesteps and
the number of collapse and anchor layers, and changes only which layers fill the two roles:
- `profile`: the automatic choice;
- `random-K`: for every picked layer, a layer drawn at random from the same depth band (the
  network cut into `bands` equal parts by depth), so depth alone cannot explain a difference;
  each draw differs from the profile's picks and from the other draws while alternatives remain;
- `inverted`: the roles swapped: the most semantic layers collapse, the most low-level anchor;
- `last`: the last blocks (collapse first, anchors at the very end), a common default in
  feature-space attacks that ignore probing.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

from anti_i2v.analyses.profile import Profile
from anti_i2v.core.common import ToolkitError


def depth_band(index: int, n_layers: int, bands: int) -> range:
    """The indices of the depth band that layer `index` falls in (bands of near-equal size)."""
    band = index * bands // n_layers
    lo = -(-band * n_layers // bands)  # ceil(band * n / bands)
    hi = -(-(band + 1) * n_layers // bands)
    return range(lo, hi)


def random_in_bands(
    profile: Profile, seed: int, bands: int = 3, avoid: set | None = None
) -> Profile:
    """The profile with each picked layer replaced by a random layer of the same depth band.

    Draws without replacement within a band, so the collapse and anchor roles stay disjoint.
    A draw whose picks are in `avoid` (sets already drawn; the profile's own among them) is
    drawn again, up to 1000 times, so each draw is a different alternative while any remain;
    the new picks are added to `avoid`.
    """
    rng = random.Random(seed)
    avoid = set() if avoid is None else avoid
    n = len(profile.layers)
    for _ in range(1000):
        taken: list[int] = []
        for layer in profile.collapse_layers + profile.anchor_layers:
            pool = [i for i in depth_band(profile.layers.index(layer), n, bands) if i not in taken]
            taken.append(rng.choice(pool) if pool else profile.layers.index(layer))
        n_c = len(profile.collapse_layers)
        picks = (tuple(sorted(taken[:n_c])), tuple(sorted(taken[n_c:])))
        if picks not in avoid:
            break
    avoid.add(picks)
    return replace(
        profile,
        collapse_layers=[profile.layers[i] for i in picks[0]],
        anchor_layers=[profile.layers[i] for i in picks[1]],
    )


def random_anywhere(profile: Profile, seed: int, avoid: set) -> Profile:
    """The profile with its collapse and anchor layers drawn at random over the whole depth.

    The counts are the profile's and the two roles stay disjoint. A draw already in `avoid`
    (the profile's own picks among them) is drawn again, so no draw equals the profile's or an
    earlier one; the new picks are added to `avoid`.

    Raises:
        ValueError: every distinct configuration is already in `avoid`.
    """
    rng = random.Random(seed)
    n_c, n_a = len(profile.collapse_layers), len(profile.anchor_layers)
    for _ in range(1000):
        taken = rng.sample(range(len(profile.layers)), n_c + n_a)
        picks = (tuple(sorted(taken[:n_c])), tuple(sorted(taken[n_c:])))
        if picks not in avoid:
            avoid.add(picks)
            return replace(
                profile,
                collapse_layers=[profile.layers[i] for i in picks[0]],
                anchor_layers=[profile.layers[i] for i in picks[1]],
            )
    raise ValueError(f"no layer configuration is left to draw for seed {seed}")


def random_draws(profile: Profile, k: int) -> dict[str, Profile]:
    """`random-layers-0 .. k-1`: `random_anywhere` with seeds 0..k-1, distinct from the profile
    and from each other.

    Raises:
        ToolkitError: the model has fewer than `k` other configurations to draw.
    """
    n, n_c, n_a = len(profile.layers), len(profile.collapse_layers), len(profile.anchor_layers)
    others = math.comb(n, n_c) * math.comb(n - n_c, n_a) - 1
    if k > others:
        raise ToolkitError(
            f"--random-layers {k}: {profile.model} has {n} blocks, so only {others} layer "
            f"configurations differ from the profile's; ask for at most {others}"
        )
    drawn = {_picks(profile)}
    return {f"random-layers-{i}": random_anywhere(profile, i, drawn) for i in range(k)}


def _picks(profile: Profile) -> tuple[tuple[int, ...], tuple[int, ...]]:
    index = profile.layers.index
    return (
        tuple(sorted(map(index, profile.collapse_layers))),
        tuple(sorted(map(index, profile.anchor_layers))),
    )


def inverted(profile: Profile) -> Profile:
    """Roles swapped: the most semantic layers collapse, the most low-level ones anchor."""
    by_semantic = sorted(profile.layers, key=lambda x: -profile.semantic.get(x, 0.0))
    collapse = by_semantic[: len(profile.collapse_layers)]
    by_low = [
        x
        for x in sorted(profile.layers, key=lambda x: -profile.low_level.get(x, 0.0))
        if x not in collapse
    ]
    return replace(
        profile, collapse_layers=collapse, anchor_layers=by_low[: len(profile.anchor_layers)]
    )


def last_blocks(profile: Profile) -> Profile:
    """The last blocks: collapse just before the anchors, anchors at the very end."""
    n_c, n_a = len(profile.collapse_layers), len(profile.anchor_layers)
    tail = profile.layers[-(n_c + n_a) :]
    return replace(profile, collapse_layers=tail[:n_c], anchor_layers=tail[n_c:])


def ablation_variants(profile: Profile, n_random: int = 5, seed: int = 0) -> dict[str, Profile]:
    """Name -> profile for every variant (see the module docstring), the profile's own first."""
    variants = {"profile": profile}
    drawn = {_picks(profile)}  # each random draw differs from the profile and from the others
    for k in range(n_random):
        variants[f"random-{k}"] = random_in_bands(profile, seed + k, avoid=drawn)
    variants["inverted"] = inverted(profile)
    variants["last"] = last_blocks(profile)
    return variants
