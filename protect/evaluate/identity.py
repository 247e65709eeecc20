"""Identity encoders for ISM: the mini world's, or FaceNet (facenet-pytorch) from local weights.

`--identity` names one of:
- nothing: the mini identity encoder shipped in `artifacts/models/mini-identity`;
- a folder holding an encoder in that format (`identity_encoder.safetensors` + `.json`);
- `facenet:PATH`: facenet-pytorch's InceptionResnetV1 (512-d, the VGGFace2 or CASIA-WebFace
  weights) loaded from a local `.safetensors` file. Frames are taken as face-centred crops (as
  the mini world's and CelebV-Text's are) and resized to 160x160; crop wider shots first.

facenet-pytorch 2.6's metadata pins torch<2.3, so it is installed with `--no-deps` (the Makefile
does); its model code runs unchanged on current torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from probe.common import MINI_IDENTITY, ToolkitError
from probe.world.identity import load_identity_encoder

IdentityModel = Callable[
    [torch.Tensor], torch.Tensor
]  # frames (N, 3, H, W) in [0, 1] -> unit (N, D)
FACENET_SIZE = 160


class FaceNet(torch.nn.Module):
    """InceptionResnetV1 behind the mini encoder's interface: [0, 1] frames in, unit embeddings out."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(
            frames.float(), size=(FACENET_SIZE, FACENET_SIZE), mode="bilinear", antialias=True
        )
        # facenet-pytorch's fixed_image_standardization: (255 x - 127.5) / 128.
        return F.normalize(self.net((x * 255 - 127.5) / 128), dim=-1)


def load_facenet(path: Path) -> FaceNet:
    """FaceNet (InceptionResnetV1, embeddings only) with weights from a local safetensors file."""
    try:
        from facenet_pytorch import InceptionResnetV1
    except ImportError as exc:
        raise ToolkitError(
            "facenet needs facenet-pytorch: `pip install --no-deps facenet-pytorch==2.6.0` "
            "(its metadata pins an old torch; the model runs on this one)"
        ) from exc
    if not path.is_file():
        raise ToolkitError(
            f"no FaceNet weights at {path}: pass facenet:PATH to a local .safetensors file"
        )
    if path.suffix != ".safetensors":
        converted = path.with_suffix(".safetensors")
        raise ToolkitError(
            f"{path} is not safetensors; weights are only loaded as safetensors. Convert once with "
            f"python -c \"import torch, safetensors.torch as st; st.save_file(torch.load('{path}', "
            f"weights_only=True), '{converted}')\""
        )
    net = InceptionResnetV1(pretrained=None, classify=False)
    state = {
        k: v for k, v in load_file(str(path)).items() if not k.startswith("logits.")
    }  # the classifier head
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ToolkitError(
            f"{path} is not an InceptionResnetV1 state dict ({len(missing)} weights missing, e.g. "
            f"{(missing or unexpected)[0]!r}); use facenet-pytorch's vggface2 or casia-webface weights"
        )
    return FaceNet(net).eval().requires_grad_(False)


def load_identity(spec: str | None) -> IdentityModel:
    """The identity encoder `--identity` names (see the module docstring)."""
    if spec and spec.startswith("facenet:"):
        return load_facenet(Path(spec.removeprefix("facenet:")))
    folder = Path(spec) if spec else MINI_IDENTITY
    try:
        return load_identity_encoder(folder)
    except FileNotFoundError as exc:
        raise ToolkitError(f"{exc}; or pass facenet:PATH for FaceNet weights") from exc
