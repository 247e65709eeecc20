"""Analyse on Dask: serial scoring against a 2-worker LocalCluster on the same store, side by side.

Probes a store (mini-cogvideox on held-out portraits, unless --store names one), then scores it
serially and on a LocalCluster of --workers processes (one thread each, as `analyse --workers`
starts it), alternating the two --repeats times. Prints each time, the speed-up, and whether the
profiles are byte-identical. Usage:
    python bench/analyse_dask.py [--count 8] [--workers 2] [--repeats 2] [--store PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from anti_i2v.analyses.run import analyse, dask_client
from anti_i2v.probe.config import ProbeConfig
from anti_i2v.probe.run import run_probe
from anti_i2v.probe.store import open_store
from anti_i2v.world.dataset import render_dataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--store", type=str, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="analyse-dask-"))
    store = args.store
    if store is None:
        render_dataset(tmp / "world", args.count, seed=3, photos=tmp / "photos")
        store = str(tmp / "acts.zarr")
        run_probe(
            ProbeConfig(
                model="mini-cogvideox",
                images=(str(tmp / "photos"),),
                out=store,
                timesteps=(100, 300, 500, 700, 900),
            )
        )
    s = open_store(store)
    size = sum(s.stored_bytes(layer) for layer in s.layers)
    print(
        f"store: {s.attrs.model}, {len(s.layers)} layers x {len(s.attrs.timesteps)} timesteps x "
        f"{len(s.attrs.samples)} samples, {size / 2**20:.1f} MiB stored"
    )
    times: dict[str, list[float]] = {"serial": [], f"dask-{args.workers}": []}
    t0 = time.perf_counter()
    with dask_client(workers=args.workers) as client:  # started once, as one `analyse` run does
        startup = time.perf_counter() - t0
        for r in range(args.repeats):
            for name, c in (("serial", None), (f"dask-{args.workers}", client)):
                t0 = time.perf_counter()
                analyse(store, tmp / f"{name}-{r}.json", client=c)
                times[name].append(time.perf_counter() - t0)
    serial, dask = (statistics.median(v) for v in times.values())
    same = all(
        json.loads((tmp / f"serial-{r}.json").read_text())
        == json.loads((tmp / f"dask-{args.workers}-{r}.json").read_text())
        for r in range(args.repeats)
    )
    print(
        f"serial {serial:.1f} s, dask {args.workers} workers {dask:.1f} s (median of {args.repeats})"
    )
    print(f"cluster start-up {startup:.1f} s (once per `analyse --workers` run)")
    print(
        f"speed-up {serial / dask:.2f}x ({serial / (dask + startup):.2f}x counting start-up); profiles identical: {same}"
    )


if __name__ == "__main__":
    main()
