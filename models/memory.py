"""Live tensor bytes, counted at the dispatcher: the peak a piece of model code needs.

`LiveBytes` is a `TorchDispatchMode`: every tensor an operator returns adds its storage's bytes
once, and a weak-reference finalizer subtracts them when the storage dies, so `peak` is the
most tensor memory alive at once inside the region. The same mode runs on real tensors (to
measure) and under `FakeTensorMode` (to plan, with no memory allocated), which is why it is
written here: `torch.distributed._tools.mem_tracker.MemTracker` does this too but registers
gradient hooks on every parameter and refuses frozen weights, and a cloak's weights are frozen.
Hand-written in the way torchtitan's memory estimator counts; allocator caching and
fragmentation are not modelled (an accelerator's reserved memory sits above this figure).
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveBytes(TorchDispatchMode):
    """Counts bytes of tensor storages alive inside the mode; `peak` is the high-water mark.

    Args:
        baseline: tensors already alive that count toward the peak (weights, inputs), added
            once each; their bytes stay counted for the whole region.
    """

    def __init__(self, baseline: list[torch.Tensor] | tuple = ()):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()
        for t in baseline:
            self._track(t, forever=True)

    def _track(self, t: torch.Tensor, forever: bool = False) -> None:
        try:
            storage = t.untyped_storage()
        except (NotImplementedError, RuntimeError):  # tensors without storage (sparse, nested)
            return
        key = storage._cdata  # the StorageImpl: views and every Python wrapper share it
        if key in self._seen:
            return
        self._seen.add(key)
        n = storage.nbytes()
        self.live += n
        self.peak = max(self.peak, self.live)
        if not forever:
            weakref.finalize(storage, self._free, key, n)

    def _free(self, key: int, n: int) -> None:
        self._seen.discard(key)
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out


def module_tensors(*modules: torch.nn.Module) -> list[torch.Tensor]:
    """Every parameter and buffer of `modules` (the weights a pass keeps alive throughout)."""
    return [t for m in modules for t in (*m.parameters(), *m.buffers())]
