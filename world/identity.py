"""The mini identity encoder: the mini world's stand-in for ArcFace.

A small CNN maps a portrait frame (64x64 in v1, 96x96 in v2) to a unit-length embedding; cosine similarity of two
embeddings is the identity similarity (ISM). It is trained on renders to be invariant to the
head's motion, blinks and mouth (see :mod:`anti_i2v.world.train`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS = "identity_encoder.safetensors"
CONFIG = "identity_encoder.json"


class IdentityEncoder(nn.Module):
    """Frames `(N, 3, H, W)` in [0, 1] -> unit embeddings `(N, dim)`."""

    def __init__(self, dim: int = 64, width: int = 24, size: int = 64, world: str = "v1"):
        super().__init__()
        # `world`: the mini world it was trained on (its card renders that world); the judges
        # saved before v2 existed have no such key and are v1's.
        self.config = {"dim": dim, "width": width, "size": size, "world": world}

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.GroupNorm(8, cout),
                nn.SiLU(),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.GroupNorm(8, cout),
                nn.SiLU(),
                nn.AvgPool2d(2),
            )

        self.features = nn.Sequential(
            block(3, width),
            block(width, width * 2),
            block(width * 2, width * 4),
            block(width * 4, width * 4),
        )
        self.head = nn.Linear(width * 4 * 2, dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        size = self.config["size"]
        if frames.shape[-2:] != (size, size):  # any input size: differentiable resize
            frames = F.interpolate(
                frames, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        h = self.features(frames * 2 - 1)
        # Mean and max pooling: position-invariant, so head motion does not change identity.
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return F.normalize(self.head(pooled), dim=-1)

    def save(self, directory: Path) -> None:
        """Write weights (safetensors) and config (JSON) into `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / WEIGHTS)
        )
        (directory / CONFIG).write_text(json.dumps(self.config, indent=2))


def load_identity_encoder(directory: Path, device: str = "cpu") -> IdentityEncoder:
    """Load a saved identity encoder (eval mode, no gradients needed on its weights)."""
    if not (directory / WEIGHTS).exists():
        raise FileNotFoundError(
            f"no identity encoder in {directory}: run `anti-i2v world train` or pass the folder holding {WEIGHTS}"
        )
    model = IdentityEncoder(**json.loads((directory / CONFIG).read_text()))
    model.load_state_dict(load_file(str(directory / WEIGHTS)))
    return model.to(device).eval().requires_grad_(False)
