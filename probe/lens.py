"""The lens job: the video each block of a DiT "sees" for one photo, per timestep.

For each timestep, the photo's still latent is noised (seeded), and every block's state is read
through the denoiser's own output head (`anti_i2v.models.lens.lens_clean`) into a clean-latent
estimate, which the family's VAE decodes (`Backbone.decode_video`). Two numbers per block say how
far along the stack the estimate is: its distance to the last block's estimate (the model's real
output) and to the photo's still latent, each as an RMS relative to that target's RMS.

Writes `OUT/lens.json` (schema `anti-i2v.lens/1`; null where a block does not run at a
timestep), `OUT/lens-t<t>.png`, one row of decoded frames per block (a figure), and
`OUT/frames-t<t>.png`, the same frames as a bare mosaic of cells at most `CELL` pixels on a side
(rows: `LensResult.rows[t]`, columns: `LensResult.shown`), which the explorer shows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from anti_i2v.core.common import (
    TOOLKIT_VERSION,
    ToolkitError,
    atomic_path,
    check_writable_dir,
    nan_to_null,
    pick_device,
    write_text_atomic,
)
from anti_i2v.models.backbones import FAMILIES, load_backbone, model_family
from anti_i2v.models.lens import lens_clean
from anti_i2v.probe.config import LensConfig
from anti_i2v.probe.run import load_photos, sample_noise

SCHEMA = "anti-i2v.lens/1"
CELL = 96  # longest side of a frame in the bare mosaic (the explorer's strip)


@dataclass
class LensResult:
    """Per block and timestep: how far its clean estimate is from the output and the photo."""

    model: str
    family: str
    photo: str
    layers: list[str]
    timesteps: list[int]
    to_output: dict[str, list[float]]  # RMS(x0_block - x0_last) / RMS(x0_last)
    to_photo: dict[str, list[float]]  # RMS(x0_block - still) / RMS(still)
    strips: list[str] = field(default_factory=list)  # lens-t<t>.png, one per timestep
    # The bare mosaics: per timestep (as a string), its file and the blocks of its rows
    rows: dict[str, dict] = field(default_factory=dict)
    shown: list[int] = field(default_factory=list)  # the decoded frames each row shows
    seed: int = 0
    toolkit_version: str = TOOLKIT_VERSION
    schema: str = SCHEMA

    def to_json(self) -> dict:
        return {
            **asdict(self),
            "to_output": nan_to_null(self.to_output),
            "to_photo": nan_to_null(self.to_photo),
        }


def _relative_rms(x: torch.Tensor, target: torch.Tensor) -> float:
    return float(
        (x.float() - target.float()).pow(2).mean().sqrt() / target.float().pow(2).mean().sqrt()
    )


def run_lens(cfg: LensConfig) -> LensResult:
    """Look at `cfg.image` through every block of `cfg.model` at `cfg.timesteps`.

    Returns:
        The result, also written to `cfg.out` (`lens.json`, `lens-t<t>.png`).

    Raises:
        ToolkitError: a family with no lens (UNets), an unreadable photo or an unwritable folder,
            each before the model loads.
    """
    out = check_writable_dir(Path(cfg.out))
    refusal = FAMILIES[model_family(cfg.model)].lens_refusal
    if refusal is not None:
        raise ToolkitError(
            f"{cfg.model}: no lens for its family: {refusal}; `anti-i2v attention` works for it"
        )
    photos, skipped = load_photos([Path(cfg.image)], 4096)
    if not photos:
        raise ToolkitError(skipped[0][1])
    backbone = load_backbone(cfg.model, device=pick_device(cfg.device))
    photo = photos[0]
    layers = backbone.block_names()
    to_output = np.full((len(layers), len(cfg.timesteps)), np.nan)
    to_photo = np.full_like(to_output, np.nan)
    strips, mosaics, shown = [], {}, []
    with torch.no_grad():
        cond = backbone.condition(backbone.resize(photo.pixels[None]).to(backbone.device))
        noise = sample_noise(tuple(cond.clean.shape[1:]), cfg.seed, 0)[None].to(cond.clean)
        for ti, t in enumerate(cfg.timesteps):
            clean = lens_clean(backbone, cond, backbone.add_noise(cond.clean, noise, t), t)
            last = list(clean.values())[-1]
            rows = {}
            for name, x0 in clean.items():
                i = layers.index(name)
                to_output[i, ti] = _relative_rms(x0, last)
                to_photo[i, ti] = _relative_rms(x0, cond.clean)
                rows[name] = backbone.decode_video(x0, cond)[0].cpu()  # (F, 3, H, W)
            strips.append(f"lens-t{t}.png")
            shown = plot_strip(rows, cfg.shown_frames, f"{backbone.name}, t={t}", out / strips[-1])
            mosaics[str(t)] = {"file": f"frames-t{t}.png", "rows": list(rows)}
            write_mosaic(rows, shown, out / f"frames-t{t}.png")
    result = LensResult(
        model=backbone.name,
        family=backbone.family,
        photo=photo.name,
        layers=layers,
        timesteps=list(cfg.timesteps),
        to_output={name: to_output[i].tolist() for i, name in enumerate(layers)},
        to_photo={name: to_photo[i].tolist() for i, name in enumerate(layers)},
        strips=strips,
        rows=mosaics,
        shown=[int(i) for i in shown],
        seed=cfg.seed,
    )
    write_text_atomic(out / "lens.json", json.dumps(result.to_json(), indent=2) + "\n")
    return result


def shown_frames(frames: int, shown: int) -> np.ndarray:
    """`shown` frame indices spread evenly over `frames`, first and last included."""
    return np.unique(np.linspace(0, frames - 1, min(shown, frames)).round().astype(int))


def write_mosaic(rows: dict[str, torch.Tensor], picks: np.ndarray, path: Path) -> Path:
    """The `picks` frames of every row as a bare PNG mosaic, each cell at most `CELL` pixels."""
    from PIL import Image

    from anti_i2v.core.common import to_uint8

    h, w = next(iter(rows.values())).shape[-2:]
    scale = min(1.0, CELL / max(h, w))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    cells = [
        torch.nn.functional.interpolate(v[picks].float(), size=size, mode="area")
        for v in rows.values()
    ]
    mosaic = torch.cat([torch.cat(list(c), dim=2) for c in cells], dim=1)  # (3, rows*h, cols*w)
    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(mosaic)).save(tmp, format="PNG")
    return path


def plot_strip(rows: dict[str, torch.Tensor], shown: int, title: str, path: Path) -> np.ndarray:
    """One row of decoded frames per block (evenly spaced frames), drawn as one mosaic image.

    Args:
        rows: block -> its decoded video `(F, 3, H, W)` in [0, 1].
        shown: frames per row (all of them when the video is shorter).

    Returns:
        The frame indices shown.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    videos = list(rows.values())
    frames = videos[0].shape[0]
    picks = shown_frames(frames, shown)
    mosaic = torch.cat([torch.cat(list(v[picks]), dim=2) for v in videos], dim=1)  # (3, rH, cW)
    h, w = videos[0].shape[-2:]
    cell = 0.8  # inches a frame: small enough for a README, large enough to read
    fig_w = min(12.0, 1.6 + cell * len(picks) * w / max(h, w))
    fig, ax = plt.subplots(figsize=(fig_w, 0.6 + cell * len(videos) * h / max(h, w)), dpi=100)
    ax.imshow(mosaic.permute(1, 2, 0).numpy(), interpolation="nearest")
    # Labels are set as text (matplotlib draws them; no markup is read from a block's name)
    ax.set_yticks([h * (i + 0.5) for i in range(len(videos))], list(rows), fontsize=7)
    ax.set_xticks(
        [w * (i + 0.5) for i in range(len(picks))], [f"frame {p}" for p in picks], fontsize=7
    )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    return picks
