"""Many processes through torch.distributed: torchrun's environment, shards, and who writes what.

`torchrun --nproc-per-node N anti-i2v probe ...` (or `accelerate launch`, which sets the same
variables) starts N copies of a command with RANK, WORLD_SIZE and LOCAL_RANK set. Every command
that shards reads them through `Ranks.from_env()`; when they are unset it is one process, and
nothing here does anything. The process group is NCCL on CUDA and gloo on CPU; each rank uses
`cuda:LOCAL_RANK` when it uses CUDA.

The rule every sharded command follows, so that no file and no zarr chunk is written by two ranks:
- rank 0 alone creates shared metadata (a store's group, arrays and coordinates) and writes the
  run's shared outputs (profiles, results tables, reports); the others wait at a barrier before
  they use it, and rank 0 waits at one before it writes results from every rank;
- each rank writes only the items of its shard, `items[rank::world_size]` of one ordered list of
  pending items. Where that list depends on what is already done (a store's `completed` grid),
  rank 0 reads it before anyone writes and broadcasts it; reading it on every rank would race
  with the first writes;
- an item is marked done only after all of its files are written, so a rank that dies leaves
  items either done or pending, and the same command with any number of processes finishes them.

No scheduler of our own: torchrun (torch.distributed.elastic) starts, watches and stops the ranks.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from probe.common import ToolkitError

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks of one run (a single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Ranks:
        """Read RANK, WORLD_SIZE and LOCAL_RANK (as torchrun and accelerate set them)."""
        values = {}
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            raw = os.environ.get(key)
            if raw is None:
                continue
            try:
                values[key] = int(raw)
            except ValueError:
                raise ToolkitError(
                    f"{key}={raw!r} is not an integer; launch with torchrun or accelerate launch"
                ) from None
        if not values:
            return cls()
        world = values.get("WORLD_SIZE", 1)
        rank = values.get("RANK", 0)
        if world < 1 or not 0 <= rank < world:
            raise ToolkitError(
                f"RANK={rank} and WORLD_SIZE={world} do not fit; launch with torchrun or accelerate launch"
            )
        return cls(rank, world, values.get("LOCAL_RANK", rank))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's items: every `world_size`-th, from its rank (all of them when alone)."""
        return list(items[self.rank :: self.world_size])

    def device(self, device: str) -> str:
        """Each rank its own GPU: a bare `cuda` becomes `cuda:LOCAL_RANK`."""
        return f"cuda:{self.local_rank}" if self.distributed and device == "cuda" else device

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, value: T) -> T:
        """Rank 0's `value` on every rank (a barrier too: no rank returns before rank 0 sent it)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank (a one-item list when alone)."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out


@contextlib.contextmanager
def process_group(ranks: Ranks, device: str) -> Iterator[Ranks]:
    """Join the run's process group for the block (NCCL on CUDA, gloo on CPU); no-op when alone."""
    if not ranks.distributed:
        yield ranks
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():  # already joined (a command calling another): leave it to its owner
        yield ranks
        return
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        yield ranks
    finally:
        dist.destroy_process_group()
