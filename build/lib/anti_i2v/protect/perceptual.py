"""LPIPS, when its weights are on this machine (the AlexNet backbone comes from torchvision's cache)."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from rich.console import Console

console = Console(stderr=True)
_CACHE: dict[str, object] = {}
# torchvision backbone checkpoints LPIPS builds on (its own linear heads ship inside the package).
BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "ANTI_I2V_OFFLINE")


def offline() -> bool:
    """Whether the user asked for no network (the hub's offline flags, or the toolkit's own)."""
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in OFFLINE_FLAGS)


def load_lpips(net: str = "alex", purpose: str = "the perceptual term is off"):
    """An LPIPS model (inputs in [-1, 1]) or None, with one line saying why it is unavailable."""
    if net in _CACHE:
        return _CACHE[net]
    import torch

    cached = Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES.get(net, "")
    if offline() and not cached.is_file():  # do not even try the network
        console.print(
            f"[yellow]note:[/] LPIPS unavailable offline (no {cached.name} in {cached.parent}); {purpose}"
        )
        _CACHE[net] = None
        return None
    try:
        import lpips

        with contextlib.redirect_stdout(io.StringIO()):  # lpips prints its set-up
            model = lpips.LPIPS(net=net, verbose=False).eval().requires_grad_(False)
    except Exception as exc:  # offline: torchvision cannot fetch the backbone weights
        console.print(
            f"[yellow]note:[/] LPIPS unavailable ({type(exc).__name__}: {str(exc)[:80]}); {purpose}. "
            "Put torchvision's alexnet weights in ~/.cache/torch/hub/checkpoints to enable it"
        )
        model = None
    _CACHE[net] = model
    return model
