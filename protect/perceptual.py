"""LPIPS, when its weights are on this machine (the AlexNet backbone comes from torchvision's cache)."""

from __future__ import annotations

import contextlib
import io

from rich.console import Console

console = Console(stderr=True)
_CACHE: dict[str, object] = {}


def load_lpips(net: str = "alex", purpose: str = "the perceptual term is off"):
    """An LPIPS model (inputs in [-1, 1]) or None, with one line saying why it is unavailable."""
    if net in _CACHE:
        return _CACHE[net]
    try:
        import lpips

        with contextlib.redirect_stdout(io.StringIO()):  # lpips prints its set-up
            model = lpips.LPIPS(net=net, verbose=False).eval().requires_grad_(False)
    except Exception as exc:  # offline: torchvision cannot fetch the backbone weights
        console.print(f"[yellow]note:[/] LPIPS unavailable ({type(exc).__name__}: {str(exc)[:80]}); {purpose}. "
                      "Put torchvision's alexnet weights in ~/.cache/torch/hub/checkpoints to enable it")
        model = None
    _CACHE[net] = model
    return model
