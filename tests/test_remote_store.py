"""Stores at fsspec URLs: a real S3-protocol server (moto, in server mode) on 127.0.0.1."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import anti_i2v.probe.store as probe_store
from anti_i2v.analyses.run import analyse
from anti_i2v.cli import app
from anti_i2v.probe.config import ProbeConfig
from anti_i2v.probe.run import run_probe
from anti_i2v.probe.store import open_store

moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")
s3fs = pytest.importorskip("s3fs", reason="s3fs is a dependency")

PROBE = dict(model="tiny:cogvideox", timesteps=(200, 500, 800), seeds=(0, 1))


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 (a free port) with bucket `acts`, reached as AWS clients are."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            mp.setenv(key, value)
        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem().mkdir("acts")
        yield s3fs.S3FileSystem()
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


@pytest.mark.slow  # two probes and two analyses, one pair through the S3 server
def test_probe_to_s3_then_analyse_from_s3_gives_the_local_profile(s3, portraits, tmp_path):
    url = "s3://acts/run1/acts.zarr"
    local = run_probe(
        ProbeConfig(images=(str(portraits),), out=str(tmp_path / "acts.zarr"), **PROBE)
    )
    remote = run_probe(ProbeConfig(images=(str(portraits),), out=url, **PROBE))
    assert remote.store.path == url and remote.store.name == "acts.zarr"
    assert s3.exists("acts/run1/acts.zarr/zarr.json")
    for name in local.store.layers:
        np.testing.assert_array_equal(local.store.array(name)[:], open_store(url).array(name)[:])
    a = analyse(tmp_path / "acts.zarr", tmp_path / "local.json")
    b = analyse(url, tmp_path / "remote.json")
    assert (tmp_path / "local.json").read_bytes() == (tmp_path / "remote.json").read_bytes()
    assert a == b and b.store == "acts.zarr"  # the store's name, not the bucket or a user path


@pytest.mark.slow  # three probes, two of them through the S3 server
def test_interrupted_probe_to_s3_resumes_to_the_same_store(s3, portraits, monkeypatch, tmp_path):
    url = "s3://acts/run2/acts.zarr"
    whole = run_probe(ProbeConfig(images=(str(portraits),), out=str(tmp_path / "w.zarr"), **PROBE))
    real, calls = probe_store.mark_done, {"n": 0}

    def flaky(store, t, s, done=True):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # Ctrl-C after four cells reached the bucket
        real(store, t, s, done)

    monkeypatch.setattr(probe_store, "mark_done", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_probe(ProbeConfig(images=(str(portraits),), out=url, **PROBE))
    partial = open_store(url).completed()
    assert 0 < partial.sum() < partial.size
    monkeypatch.setattr(probe_store, "mark_done", real)
    resumed = run_probe(ProbeConfig(images=(str(portraits),), out=url, **PROBE))
    assert resumed.cells_written == partial.size - partial.sum()
    for name in whole.store.layers:
        np.testing.assert_array_equal(whole.store.array(name)[:], resumed.store.array(name)[:])


@pytest.mark.slow  # a whole probe run
def test_memory_url_works_like_a_folder(portraits):
    r = run_probe(ProbeConfig(images=(str(portraits),), out="memory://m/acts.zarr", **PROBE))
    assert open_store("memory://m/acts.zarr").is_complete() and r.cells_written == 18


@pytest.mark.slow  # starts the S3 server
def test_missing_bucket_or_protocol_is_one_line_before_the_model_loads(s3, portraits):
    for url, why in (
        ("s3://no-such-bucket/acts.zarr", "bucket no-such-bucket does not exist"),
        ("nosuchproto://x/acts.zarr", "nosuchproto"),
    ):
        res = CliRunner().invoke(app, ["probe", "no-such-model", str(portraits), "--out", url])
        # the model name is bad too: the location is refused first, before the model is looked up
        assert res.exit_code == 2 and why in res.output, res.output
        assert len(res.output.strip().splitlines()) <= 2


@pytest.mark.slow  # three small protect runs, two of them through the S3 server
def test_protect_to_s3_writes_the_local_bytes_and_resumes_from_the_bucket(s3, portraits, tmp_path):
    args = ["protect", "tiny:cogvideox", str(portraits), "--method", "rgb-pgd", "--steps", "2"]
    local = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    url = "s3://acts/cloaks"
    first = CliRunner().invoke(app, [*args, "--out", url])
    assert first.exit_code == 0, first.output
    names = sorted(p.name for p in (tmp_path / "local").iterdir() if not p.name.startswith("."))
    assert sorted(p.rsplit("/", 1)[1] for p in s3.ls("acts/cloaks")) == names
    for png in (tmp_path / "local").glob("*.png"):
        assert (
            s3.cat(f"acts/cloaks/{png.name}") == png.read_bytes()
        )  # the same cloak, byte for byte
    # An interrupted run leaves a cloak without its sidecar: only that photo is done again.
    s3.rm("acts/cloaks/p20.json")
    again = CliRunner().invoke(app, [*args, "--out", url])
    assert again.exit_code == 0, again.output
    assert again.output.count("already cloaked") == 2 and s3.exists("acts/cloaks/p20.json")
    assert s3.cat("acts/cloaks/p20.png") == (tmp_path / "local" / "p20.png").read_bytes()


def test_protect_to_a_url_is_checked_before_any_model_work(s3, portraits, no_model):
    for extra, why in (
        (["--out", "s3://no-such-bucket/cloaks"], "bucket no-such-bucket does not exist"),
        (["--out", "s3://acts/c", "--in-place"], "give a local --out"),
    ):
        res = CliRunner().invoke(app, ["protect", "tiny:cogvideox", str(portraits), *extra])
        assert res.exit_code == 2 and why in res.output, res.output


@pytest.mark.slow  # a protect run and two small evaluations, one from and to the S3 server
def test_evaluate_from_and_to_s3_gives_the_local_report(s3, portraits, tmp_path, monkeypatch):
    monkeypatch.setenv("ANTI_I2V_CACHE", str(tmp_path / "cache"))
    cloaks = CliRunner().invoke(
        app,
        ["protect", "tiny:cogvideox", str(portraits), "--method", "random-noise",
         "--out", str(tmp_path / "noise")],
    )  # fmt: skip
    assert cloaks.exit_code == 0, cloaks.output
    s3.put(str(tmp_path / "noise"), "acts/noise", recursive=True)  # the cloaks, in a bucket
    args = ["evaluate", "tiny:cogvideox", "--clean", str(portraits), "--steps", "2",
            "--distortions", "jpeg75"]  # fmt: skip
    local = CliRunner().invoke(
        app, [*args, "--protected", str(tmp_path / "noise"), "--out", str(tmp_path / "report")]
    )
    assert local.exit_code == 0, local.output
    remote = CliRunner().invoke(
        app, [*args, "--protected", "s3://acts/noise", "--out", "s3://acts/report"]
    )
    assert remote.exit_code == 0 and "s3://acts/report/index.html" in remote.output, remote.output
    shared = sorted(
        p.relative_to(tmp_path / "report").as_posix()
        for p in (tmp_path / "report").rglob("*")
        if p.is_file() and ".videos" not in p.parts
    )
    assert "results.csv" in shared and "summary.json" in shared
    uploaded = sorted(p.removeprefix("acts/report/") for p in s3.find("acts/report"))
    assert uploaded == shared  # the report, without the video cache
    for name in ("results.csv", "summary.json"):  # the same rows, and the folder named alike
        assert s3.cat(f"acts/report/{name}") == (tmp_path / "report" / name).read_bytes()
    res = CliRunner().invoke(
        app, [*args, "--protected", "s3://acts/nothing-here", "--out", str(tmp_path / "r2")]
    )
    assert res.exit_code == 2 and "no files there" in res.output, res.output
    assert any((tmp_path / "cache" / "evaluate").iterdir())  # the videos stay cached here


def test_evaluate_to_a_bad_url_is_one_line_before_any_model_work(s3, portraits, no_model):
    for url, why in (
        ("s3://no-such-bucket/report", "bucket no-such-bucket does not exist"),
        ("nosuchproto://x/report", "nosuchproto"),
    ):
        res = CliRunner().invoke(
            app,
            ["evaluate", "tiny:cogvideox", "--clean", str(portraits), "--protected",
             str(portraits), "--out", url],
        )  # fmt: skip
        assert res.exit_code == 2 and why in res.output, res.output
        assert len(res.output.strip().splitlines()) <= 2
