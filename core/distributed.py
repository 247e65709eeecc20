"""Many processes through torch.distributed: torchrun's environment, shards, and who writes what.

`torchrun --nproc-per-node N anti-i2v probe ...` (or `accelerate launch`, which sets the same
variables) starts N copies of a command with RANK, WORLD_SIZE and LOCAL_RANK set. Every command
that shards reads them through `Ranks.from_env()`; when they are unset it is one process, and
nothing here does anything. The process group (NCCL on CUDA, gloo on CPU) is the rendezvous; the
objects ranks exchange (`Ranks.barrier`, `broadcast`, `gather`) travel through the run's
key-value store, watched by heartbeats, so a stopped rank is named instead of waited for. Each
rank uses `cuda:LOCAL_RANK` when it uses CUDA.

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

from anti_i2v.core.common import ToolkitError

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
            _exchange(None)

    def broadcast(self, value: T) -> T:
        """Rank 0's `value` on every rank (a barrier too: no rank returns before rank 0 sent it)."""
        if not self.distributed:
            return value
        return _exchange(value if self.is_main else None, source=0)[0]

    def gather_items(self, items: dict[str, Any]) -> dict[str, Any]:
        """Every rank's items merged, on every rank, sent one item per exchange: large values
        (images) travel one at a time rather than as one pickle of them all, which the store
        cannot carry."""
        if not self.distributed:
            return dict(items)
        merged = {}
        for source, keys in enumerate(_exchange(sorted(items))):
            for key in keys:
                mine = items[key] if source == self.rank else None
                merged[key] = _exchange(mine, source=source)[0]
        return merged

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank (a one-item list when alone)."""
        if not self.distributed:
            return [value]
        return _exchange(value)


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
    global _LIVENESS
    _LIVENESS = _Liveness(ranks)
    try:
        yield ranks
    finally:
        _LIVENESS.stop()
        _LIVENESS = None
        dist.destroy_process_group()


# --- a rank that stops answering ---------------------------------------------------------------

# Seconds a rank may go without a heartbeat while others wait for it (ANTI_I2V_RANK_STALL).
# A rank that is merely slow keeps beating; one that is stopped (SIGSTOP), swapped out or hung
# in the kernel does not. torch's own collectives would wait for it for their 30-minute timeout,
# and on a rank that never crashed, torchrun never steps in.
RANK_STALL_SECONDS = 120.0
HEARTBEAT_SECONDS = 1.0
_LIVENESS: _Liveness | None = None


def _stall_seconds() -> float:
    raw = os.environ.get("ANTI_I2V_RANK_STALL")
    try:
        return float(raw) if raw else RANK_STALL_SECONDS
    except ValueError:
        raise ToolkitError(f"ANTI_I2V_RANK_STALL={raw!r}: give a number of seconds") from None


class _Liveness:
    """Heartbeats through the run's key-value store, and arrival at each collective.

    Each rank's background thread adds 1 to its counter `anti-i2v/beat/RANK` every second.
    Every exchange of objects (`Ranks.barrier`, `broadcast`, `gather`) waits for every rank's
    value while watching the counters of those not yet there: one that has not moved for the
    stall time ends the wait with one line naming the rank, instead of a hang.
    """

    def __init__(self, ranks: Ranks):
        import threading

        self.ranks, self.stall, self.calls = ranks, _stall_seconds(), 0
        # Two connections: the heartbeat thread's own, and the exchanges'
        self.store, self.beats = self._connect(), self._connect()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="anti-i2v-heartbeat")
        self.beats.add(self._beat_key(ranks.rank), 1)
        # Each process group of the run gets its own keys (a command may join and leave
        # several in turn); every rank counts them alike.
        self.prefix = f"anti-i2v/{self.store.add(f'anti-i2v/groups/{ranks.rank}', 1)}"
        self.thread.start()

    @staticmethod
    def _connect():
        from datetime import timedelta

        import torch.distributed as dist

        host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if host and port:
            return dist.TCPStore(host, int(port), is_master=False, timeout=timedelta(seconds=60))
        return dist.distributed_c10d._get_default_store()  # launched some other way

    @staticmethod
    def _beat_key(rank: int) -> str:
        return f"anti-i2v/beat/{rank}"

    def _beat(self) -> None:
        while not self.done.wait(HEARTBEAT_SECONDS):
            try:
                self.beats.add(self._beat_key(self.ranks.rank), 1)
            except Exception:  # the store went away: the run is ending
                return

    def stop(self) -> None:
        self.done.set()
        self.thread.join(5)

    def exchange(self, value: Any, source: int | None = None) -> list[Any]:
        """Every rank's `value` (or only `source`'s), in rank order, through the store.

        The objects travel through the store rather than a gloo or NCCL collective, so that
        waiting is always this loop's, which watches the heartbeats: a collective that one
        rank entered and then stopped in would hang the others, whatever checked before it.
        """
        import pickle
        import time

        self.calls += 1
        key = f"{self.prefix}/x/{self.calls}"
        me = self.ranks.rank
        self.store.set(f"{key}/{me}", pickle.dumps(value if source in (None, me) else None))
        seen: dict[int, tuple[int, float]] = {}
        while True:
            missing = [
                r for r in range(self.ranks.world_size) if not self.store.check([f"{key}/{r}"])
            ]
            if not missing:
                break
            now = time.monotonic()
            for r in missing:
                beats = int(self.beats.add(self._beat_key(r), 0))
                if r not in seen or seen[r][0] != beats:
                    seen[r] = (beats, now)
                elif now - seen[r][1] > self.stall:
                    raise ToolkitError(
                        f"rank {r} has not answered for {self.stall:g} s (stopped, or hung); "
                        "stop the run and start it again: finished work is kept and resumes, "
                        "with any number of processes"
                    )
            time.sleep(0.05)
        wanted = range(self.ranks.world_size) if source is None else [source]
        values = [pickle.loads(self.store.get(f"{key}/{r}")) for r in wanted]
        if self.calls > 1:  # every rank is past the previous exchange: its values can go
            self.store.delete_key(f"{self.prefix}/x/{self.calls - 1}/{me}")
        return values


def _exchange(value: Any, source: int | None = None) -> list[Any]:
    if _LIVENESS is None:
        raise RuntimeError("a collective outside `process_group`")
    return _LIVENESS.exchange(value, source)
