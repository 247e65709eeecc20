"""Scale-out through torch.distributed: real `torchrun` ranks on gloo give a single process's bytes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from anti_i2v.cli import app
from anti_i2v.core.common import ToolkitError
from anti_i2v.core.distributed import Ranks
from anti_i2v.probe.store import open_store
from anti_i2v.world.dataset import render_dataset

BIN = Path(sys.executable).parent
# One thread per process in both runs: torchrun's default, and a float sum's order depends on it.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ANTI_I2V_OFFLINE": "1"}


def _anti_i2v(args: list[str], nproc: int = 1, env: dict | None = None, check: bool = True):
    """`anti-i2v ARGS`, alone or as `torchrun --standalone --nproc-per-node N anti-i2v ARGS`."""
    launch = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        + [f"--nproc-per-node={nproc}", "--no-python"]
        if nproc > 1
        else []
    )
    res = subprocess.run(
        [*launch, str(BIN / "anti-i2v"), *args],
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _files(root: Path) -> dict[str, str]:
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


def _same_store(a: Path, b: Path) -> None:
    """Every chunk, array and coordinate byte-identical; root attributes equal but for --out."""
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    assert {k: v for k, v in fa.items() if k != "zarr.json"} == {
        k: v for k, v in fb.items() if k != "zarr.json"
    }
    ja, jb = (json.loads((p / "zarr.json").read_text()) for p in (a, b))
    for j in (ja, jb):
        j["attributes"]["config"].pop("out")
        j.pop("consolidated_metadata", None)  # holds the same array metadata, compared above
    assert ja == jb


PROBE = ["tiny:cogvideox", "--timesteps", "200,500,800", "--seeds", "0,1"]


@pytest.fixture(scope="module")
def single_store(portraits, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "acts.zarr"
    _anti_i2v(["probe", *PROBE[:1], str(portraits), "--out", str(out), *PROBE[1:]])
    return out


def test_ranks_read_torchrun_environment_and_shard_alike(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    alone = Ranks.from_env()
    assert alone == Ranks() and not alone.distributed and alone.is_main
    assert alone.shard(list(range(5))) == [0, 1, 2, 3, 4] and alone.device("cuda") == "cuda"
    assert alone.gather(7) == [7] and alone.broadcast("x") == "x"
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    r = Ranks.from_env()
    assert (r.rank, r.world_size, r.local_rank) == (3, 4, 1) and not r.is_main
    assert r.device("cuda") == "cuda:1" and r.device("cpu") == "cpu"
    items = list(range(10))
    shards = [Ranks(k, 4).shard(items) for k in range(4)]
    assert sorted(sum(shards, [])) == items and r.shard(items) == [3, 7]
    for rank, world in (("4", "4"), ("x", "2")):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", world)
        with pytest.raises(ToolkitError, match="torchrun"):
            Ranks.from_env()


@pytest.mark.slow  # two torchrun launches of two ranks each (each rank imports torch)
def test_torchrun_probe_writes_the_single_process_store(portraits, single_store, tmp_path):
    out = tmp_path / "acts.zarr"
    _anti_i2v(["probe", *PROBE[:1], str(portraits), "--out", str(out), *PROBE[1:]], nproc=2)
    _same_store(single_store, out)
    assert open_store(out).is_complete()


@pytest.mark.slow  # a torchrun launch whose rank 1 dies, then a one-process resume
def test_a_dead_rank_leaves_a_store_that_any_world_size_finishes(portraits, single_store, tmp_path):
    # Rank 1 dies (os._exit, as a kill would end it) right after writing its first cell.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    from anti_i2v.probe import store\n"
        "    _write = store.CellWriter._write\n"
        "    def _dying(self, t, s, cells):\n"
        "        _write(self, t, s, cells)\n"
        "        os._exit(17)\n"
        "    store.CellWriter._write = _dying\n"
    )
    out = tmp_path / "acts.zarr"
    args = ["probe", *PROBE[:1], str(portraits), "--out", str(out), *PROBE[1:]]
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(hook), ENV.get("PYTHONPATH", "")])}
    res = _anti_i2v(args, nproc=2, env=env, check=False)
    assert res.returncode != 0  # torchrun reports the dead rank and stops the other
    done = open_store(out).completed()
    assert 0 < done.sum() < done.size
    _anti_i2v(args)  # the same command, one process
    _same_store(single_store, out)


@pytest.mark.slow  # protect and evaluate, each alone and as a torchrun launch of two ranks
def test_torchrun_protect_and_evaluate_write_the_single_process_outputs(
    portraits, tiny_profile, tmp_path
):
    common = ["tiny:cogvideox", str(portraits), "--profile", str(tiny_profile), "--steps", "2"]
    _anti_i2v(["protect", *common, "--out", str(tmp_path / "one")])
    _anti_i2v(["protect", *common, "--out", str(tmp_path / "two")], nproc=2)
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    pngs = sorted(k for k in one if k.endswith(".png") and not k.endswith(".loss.png"))
    assert pngs == ["p10.png", "p20.png", "p30.png"]
    assert {k: one[k] for k in pngs} == {k: two[k] for k in pngs}
    for name in pngs:
        a, b = (
            json.loads((tmp_path / d / name.replace(".png", ".json")).read_text())
            for d in ("one", "two")
        )
        assert a.pop("seconds") > 0 and b.pop("seconds") > 0
        assert a == b
    # every rank's photos, and no lock or temporary file left behind
    assert sorted(one) == sorted(two)
    assert not [k for k in two if ".tmp" in k or k.endswith(".lock")]
    assert np.all([(tmp_path / "two" / k).stat().st_size > 0 for k in two])
    # Batched: whole batches go to the ranks, so each photo is cloaked in the batch it has in
    # one process, and the bytes match (a batch's cloaks differ from lone ones in float error)
    batched = [*common, "--batch-size", "2"]
    _anti_i2v(["protect", *batched, "--out", str(tmp_path / "b-one")])
    _anti_i2v(["protect", *batched, "--out", str(tmp_path / "b-two")], nproc=2)
    b_one, b_two = _files(tmp_path / "b-one"), _files(tmp_path / "b-two")
    assert {k: b_one[k] for k in pngs} == {k: b_two[k] for k in pngs}
    # evaluate those cloaks: the same results.csv, written by rank 0 alone
    for name, nproc in (("eval-one", 1), ("eval-two", 2)):
        _anti_i2v(
            [
                "evaluate",
                "tiny:cogvideox",
                "--clean",
                str(portraits),
                "--protected",
                str(tmp_path / "one"),
                "--seeds",
                "2",
                "--steps",
                "2",
                "--distortions",
                "jpeg75",
                "--identity",
                "mini-identity",
                "--out",
                str(tmp_path / name),
            ],
            nproc=nproc,
        )
    csv_one, csv_two = (
        (tmp_path / n / "results.csv").read_text() for n in ("eval-one", "eval-two")
    )
    assert csv_one == csv_two and csv_one.count("\n") == 1 + 3 * 2 * (1 + 2)


def test_world_render_ranks_each_write_their_shard_and_together_the_whole(tmp_path, monkeypatch):
    # render needs no collective: each rank's part is run here in turn, as torchrun would run them
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    one = tmp_path / "one"
    render_dataset(one / "world", 3, seed=5, photos=one / "p")
    two = tmp_path / "two"
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        before = set(_files(two)) if two.exists() else set()
        paths = render_dataset(two / "world", 3, seed=5, photos=two / "p")
        assert [p.name for p in paths] == sorted(p.name for p in (one / "world").iterdir())
        mine = {k for k in set(_files(two)) - before if k.startswith("p/")}
        assert len(mine) == (2 if rank == "0" else 1)  # samples 0 and 2, then 1
    assert _files(one) == _files(two)


# --- analyses on Dask ------------------------------------------------------------------------------


def test_analyse_refuses_bad_cluster_options_in_one_line(tiny_profile, tmp_path):
    store = str(tiny_profile.parent / "activations.zarr")
    for args, why in (
        (["--workers", "0"], "--workers 0"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
    ):
        res = CliRunner().invoke(app, ["analyse", store, "--out", str(tmp_path / "p.json"), *args])
        assert res.exit_code == 2 and why in res.output, res.output
    assert not (tmp_path / "p.json").exists()


@pytest.mark.slow  # starts two 2-worker Dask clusters (about 10 s each)
def test_analyse_on_dask_gives_the_serial_profile(tiny_profile, tmp_path):
    from distributed import LocalCluster

    store = str(tiny_profile.parent / "activations.zarr")
    serial = tiny_profile.read_text()  # adapt scored it serially
    res = CliRunner().invoke(
        app, ["analyse", store, "--out", str(tmp_path / "local.json"), "--workers", "2"]
    )
    assert res.exit_code == 0, res.output
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        res = CliRunner().invoke(
            app,
            [
                "analyse",
                store,
                "--out",
                str(tmp_path / "remote.json"),
                "--scheduler",
                cluster.scheduler_address,
            ],
        )
        assert res.exit_code == 0, res.output
    assert (tmp_path / "local.json").read_text() == serial
    assert (tmp_path / "remote.json").read_text() == serial


@pytest.mark.slow  # a two-rank torchrun with one rank stopped
def test_a_stopped_rank_ends_the_run_with_one_line_naming_it(tmp_path, portraits):
    import signal
    import time

    import psutil

    out = tmp_path / "acts.zarr"
    log = tmp_path / "log.txt"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    args = [
        "probe",
        "tiny:cogvideox",
        str(portraits),
        "--out",
        str(out),
        "--timesteps",
        "100,300,500,700,900",
    ]
    with log.open("w") as f:
        run = subprocess.Popen(
            [*launch, "--no-python", str(BIN / "anti-i2v"), *args],
            env={**ENV, "ANTI_I2V_RANK_STALL": "6"},
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    stopped = None
    try:
        deadline = time.monotonic() + 120
        while stopped is None and time.monotonic() < deadline:  # rank 1, once the store exists
            if (out / "zarr.json").exists():
                for child in psutil.Process(run.pid).children(recursive=True):
                    if child.environ().get("RANK") == "1":
                        child.send_signal(signal.SIGSTOP)
                        stopped = child
            time.sleep(0.1)
        assert stopped is not None, log.read_text()[-2000:]
        while "has not answered" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "rank 1 has not answered for 6 s" in log.read_text(), log.read_text()[-3000:]
    finally:
        if stopped is not None and stopped.is_running():
            stopped.kill()
        code = run.wait(timeout=120)
    assert code != 0
    text = log.read_text()
    assert "Traceback" not in text.split("rank 1 has not answered")[0][-2000:]
