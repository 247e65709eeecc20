"""nnsight's wrapper of a denoiser, built once, and the one way to swap what a wrapped module runs.

Everything that touches nnsight's hold on a module lives here, below the adapters and the
capture code that both need it.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch

# nnsight gives every object a `.save()`; pybind11 then refuses to define a method of that name,
# which dlib's classes have (the `--identity dlib` judge, `protect --region face`). Importing
# dlib first, when it is installed, lets both load in one process; nothing else depends on it.
with contextlib.suppress(ImportError):
    import dlib  # noqa: F401

from nnsight import NNsight  # noqa: E402

_WRAPPED: weakref.WeakKeyDictionary[torch.nn.Module, NNsight] = weakref.WeakKeyDictionary()


def wrapped(denoiser: torch.nn.Module) -> NNsight:
    """The nnsight wrapper of a denoiser, built once (building it walks every module)."""
    if denoiser not in _WRAPPED:
        _WRAPPED[denoiser] = NNsight(denoiser)
    return _WRAPPED[denoiser]


@contextlib.contextmanager
def forward_swapped(
    denoiser: torch.nn.Module, module: torch.nn.Module, forward: Callable[..., Any]
) -> Iterator[None]:
    """Calls of `module` (the denoiser or one of its modules), direct or in an nnsight trace,
    run `forward(module, *args, **kwargs)` for the duration, then its own forward again.

    nnsight installs its controller in every module's `forward` slot when it wraps the denoiser
    (`wrapped`) and runs, on each call, the body it keeps in the module's state; so the denoiser
    is wrapped first and the body is what is swapped. The slot itself is never touched: a
    forward set there would shadow the controller and, once removed, leave nnsight's traces of
    that module broken for the rest of the process.
    """
    from nnsight.intervention.source import STATE

    wrapped(denoiser)
    state = module.__dict__[STATE]
    own, state.body = state.body, forward
    try:
        yield
    finally:
        state.body = own
