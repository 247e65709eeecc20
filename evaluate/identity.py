"""Identity judges for ISM: the mini world's, dlib's face recogniser, or FaceNet from local weights.

`--identity` names one of:
- nothing or `mini-identity`: the mini world's v2 judge (`artifacts/models/mini-identity`),
  trained with a face recogniser's augmentations so colour shifts do not read as identity;
- `mini-identity-v1`: the first mini judge, which reads colour too (kept to compare);
- `mini-identity-world2`: judge v2's recipe trained on the v2 world's 96x96 portraits (use it
  with `mini-cogvideox-v2`);
- a folder holding an encoder in that format (`identity_encoder.safetensors` + `.json`);
- `dlib`: dlib's face-recognition ResNet for real photos, offline (see `DlibFace`);
- `facenet:PATH`: facenet-pytorch's InceptionResnetV1 (512-d, the VGGFace2 or CASIA-WebFace
  weights) loaded from a local `.safetensors` file. Frames are taken as face-centred crops (as
  the mini world's and CelebV-Text's are) and resized to 160x160; crop wider shots first.

facenet-pytorch 2.6's metadata pins torch<2.3, so it is installed with `--no-deps` (the Makefile
does); its model code runs unchanged on current torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from anti_i2v.core.common import ToolkitError, to_uint8
from anti_i2v.models.registry import MINI_IDENTITY, MINI_JUDGES
from anti_i2v.world.identity import load_identity_encoder

# Frames (N, 3, H, W) in [0, 1] -> unit (N, D)
IdentityModel = Callable[[torch.Tensor], torch.Tensor]
FACENET_SIZE = 160
# dlib's landmark and recognition models, in face_recognition_models' models/ folder
DLIB_MODELS = ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat")


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


def dlib_models() -> Path:
    """The folder of dlib's models in `face-recognition-models`, found without importing it (its
    `__init__` needs setuptools' pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ToolkitError(
            "--identity dlib needs its models: `pip install face-recognition-models`"
        )
    return Path(spec.submodule_search_locations[0]) / "models"


def judge_folder(spec: str | None) -> Path:
    """The folder of a mini-world judge `--identity` names (a built-in name, or a folder)."""
    return MINI_JUDGES.get(spec or "mini-identity", Path(spec) if spec else MINI_IDENTITY)


class DlibFace:
    """dlib's face-recognition ResNet (99.38% on LFW) as a judge: frames in, unit descriptors out.

    Runs offline: the models ship inside the `face-recognition-models` package (located without
    importing it: its `__init__` needs setuptools' pkg_resources), dlib from the `dlib-bin` wheels.
    Per frame: the largest face dlib's HOG detector finds (one upsampling pass), aligned by the
    5-point shape predictor, described by the ResNet (128-d), L2-normalised so ISM is the same
    cosine as for every other judge. A frame with no detectable face gets a zero descriptor:
    its ISM is 0, identity lost. Not differentiable: a judge, never a loss.
    """

    needs_face = True

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise ToolkitError(
                "--identity dlib needs dlib: `pip install dlib-bin face-recognition-models`"
            ) from exc
        models = dlib_models()
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(str(models / DLIB_MODELS[0]))
        self.recogniser = dlib.face_recognition_model_v1(str(models / DLIB_MODELS[1]))

    def descriptor(self, image: np.ndarray) -> np.ndarray | None:
        """uint8 `(H, W, 3)` -> the largest face's 128-d descriptor, or None when no face is found."""
        faces = self.detector(image, 1)
        if not faces:
            return None
        face = max(faces, key=lambda r: r.width() * r.height())
        return np.asarray(
            self.recogniser.compute_face_descriptor(image, self.landmarks(image, face))
        )

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames `(N, 3, H, W)` in [0, 1] -> `(N, 128)` unit descriptors (zero where no face)."""
        out = torch.zeros(len(frames), 128)
        for i, image in enumerate(to_uint8(frames)):
            d = self.descriptor(np.ascontiguousarray(image))
            if d is not None:
                out[i] = F.normalize(torch.from_numpy(d).float(), dim=0)
        return out

    def require_face(self, photo: torch.Tensor, where: str) -> None:
        """One line when the clean photo itself has no face: its ISM would mean nothing."""
        if self.descriptor(np.ascontiguousarray(to_uint8(photo))) is None:
            raise ToolkitError(
                f"no face found in {where} by dlib's detector; crop the photo to the face, "
                "or judge it with another --identity"
            )


def load_identity(spec: str | None) -> IdentityModel:
    """The identity judge `--identity` names (see the module docstring)."""
    if spec == "dlib":
        return DlibFace()
    if spec and spec.startswith("facenet:"):
        return load_facenet(Path(spec.removeprefix("facenet:")))
    try:
        return load_identity_encoder(judge_folder(spec))
    except FileNotFoundError as exc:
        raise ToolkitError(f"{exc}; or pass dlib, or facenet:PATH for FaceNet weights") from exc


def judge_sha256(spec: str | None) -> str:
    """Content hash of the judge `--identity` names: every file its weights come from.

    Two judges that share a name (a retrained mini judge, other FaceNet weights) hash apart,
    so a study's protocol and results say which one scored them.
    """
    from anti_i2v.core.common import file_sha256

    if spec == "dlib":
        files = [dlib_models() / n for n in DLIB_MODELS]
    elif spec and spec.startswith("facenet:"):
        files = [Path(spec.removeprefix("facenet:"))]
    else:
        files = sorted(p for p in judge_folder(spec).glob("*") if p.is_file())
    missing = [f for f in files if not f.is_file()]
    if missing or not files:
        raise ToolkitError(f"judge {spec}: no weights at {missing[0] if missing else spec}")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}:{file_sha256(f)}\n".encode())
    return digest.hexdigest()
