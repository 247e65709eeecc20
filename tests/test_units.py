"""Unit tests of the pieces under the stages: the attack loop, the cell writer, summaries, safe writes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from anti_i2v.core.common import ToolkitError, atomic_write, to_uint8
from anti_i2v.evaluate.results import EvalRow, paired_differences, summarise
from anti_i2v.probe.store import CellWriter, StoreAttrs, create_or_resume
from anti_i2v.protect.config import EvaluateConfig
from anti_i2v.protect.loop import DivergedError, perturb_iterative
from anti_i2v.protect.spaces import Space

# --- the attack loop on a toy quadratic objective -----------------------------------------------


def _toward(target: torch.Tensor):
    """Objective maximised at `target`: -(x - target)^2 summed."""

    def objective(x: torch.Tensor):
        value = -((x - target) ** 2).sum()
        return value, {"distance": float(-value)}

    return objective


def test_one_step_is_alpha_times_the_gradient_sign():
    image = torch.full((1, 3, 4, 4), 0.5)
    target = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    result = perturb_iterative(image, _toward(target), Space("rgb", eps=0.1), steps=1, alpha=0.01)
    torch.testing.assert_close(result.params["rgb"], 0.01 * torch.sign(target - image))


def test_loop_reaches_the_target_inside_the_budget_and_stops_at_its_edge():
    image = torch.full((1, 3, 4, 4), 0.5)
    target = image + torch.linspace(-0.3, 0.3, 48).view(1, 3, 4, 4)
    eps = 0.1
    result = perturb_iterative(image, _toward(target), Space("rgb", eps=eps), steps=40, alpha=0.01)
    change = result.adv - image
    assert change.abs().max() <= eps + 1e-6  # projected every step
    inside = (target - image).abs() < eps - 0.02
    torch.testing.assert_close(
        change[inside], (target - image)[inside], atol=0.011, rtol=0
    )  # within one step
    outside = (target - image).abs() > eps
    torch.testing.assert_close(change[outside].abs(), torch.full_like(change[outside], eps))
    assert [h["step"] for h in result.history] == list(range(40))
    assert result.history[-1]["distance"] < result.history[0]["distance"]
    assert image.eq(0.5).all()  # the input is never modified


def _scripted(weights: list[torch.Tensor]):
    """Objective `sum(x * w_t)` whose gradient at call t is `weights[t]` (each call the next)."""
    calls = iter(weights)

    def objective(x: torch.Tensor):
        return (x * next(calls)).sum(), {}

    return objective


def test_momentum_steps_by_the_sign_of_the_normalised_running_gradient():
    image = torch.full((2, 3, 2, 2), 0.5)
    # photo 0: gradient +1 then -0.5 (momentum: 1 + (-0.5 / 0.5) = 0, no second step);
    # photo 1: gradient +3 then -1 (momentum: 1 + (-1 / 1) = 0): the same, whatever the scale
    first = torch.cat([torch.full((1, 3, 2, 2), 1.0), torch.full((1, 3, 2, 2), 3.0)])
    second = torch.cat([torch.full((1, 3, 2, 2), -0.5), torch.full((1, 3, 2, 2), -1.0)])
    space = Space("rgb", eps=0.1)
    sign = perturb_iterative(image, _scripted([first, second]), space, steps=2, alpha=0.01)
    torch.testing.assert_close(sign.params["rgb"], torch.zeros_like(image))  # up, then down
    mom = perturb_iterative(
        image, _scripted([first, second]), space, steps=2, alpha=0.01, optimizer="momentum"
    )
    torch.testing.assert_close(mom.params["rgb"], torch.full_like(image, 0.01))  # up, then stays


def test_cosine_decay_halves_the_step_size_halfway_and_starts_at_alpha():
    from anti_i2v.protect.loop import step_size

    assert step_size(0.02, 0, 10, "cosine") == pytest.approx(0.02)
    assert step_size(0.02, 5, 10, "cosine") == pytest.approx(0.01)
    assert step_size(0.02, 9, 10, "cosine") < 0.001
    assert step_size(0.02, 9, 10, "constant") == 0.02
    image = torch.full((1, 3, 2, 2), 0.5)
    ones = [torch.ones_like(image)] * 4
    out = perturb_iterative(
        image, _scripted(ones), Space("rgb", eps=1.0), steps=4, alpha=0.04, alpha_decay="cosine"
    )
    expected = sum(step_size(0.04, t, 4, "cosine") for t in range(4))
    torch.testing.assert_close(out.params["rgb"], torch.full_like(image, expected))


def test_loop_keeps_the_image_in_range():
    image = torch.ones(1, 3, 4, 4) * 0.98
    result = perturb_iterative(
        image, _toward(torch.full_like(image, 2.0)), Space("rgb", eps=0.2), 5, 0.05
    )
    assert result.adv.max() <= 1.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e9])
def test_loop_abandons_a_diverging_objective(bad):
    def objective(x):
        return x.sum() * 0 + bad, {}

    with pytest.raises(DivergedError, match="objective became"):
        perturb_iterative(torch.zeros(1, 3, 2, 2), objective, Space("rgb"), 3, 0.01)


# --- CellWriter -----------------------------------------------------------------------------------


def _attrs(n_t: int, n_s: int) -> StoreAttrs:
    return StoreAttrs.from_json(
        {
            "model": "m",
            "family": "cogvideox",
            "config_sha256": "x",
            "layers": ["a.0", "b.1"],
            "timesteps": list(range(0, 100 * n_t, 100)),
            "seeds": [0],
            "frames": None,
            "pool": 1,
            "dtype": "float32",
            "samples": [{"name": f"s{i}"} for i in range(n_s)],
        }
    )


def test_cell_writer_writes_every_layer_then_marks_the_cell(tmp_path):
    store = create_or_resume(tmp_path / "s.zarr", _attrs(2, 3))
    cells = {
        (t, s): {
            n: np.full((1, 2, 2, 4), 10 * t + s + k, np.float32)
            for k, n in enumerate(["a.0", "b.1"])
        }
        for t in range(2)
        for s in range(3)
    }
    with CellWriter(store, "float32", depth=2) as writer:
        for (t, s), cell in cells.items():
            if (t, s) != (1, 2):  # one cell left unwritten
                writer.put(t, s, cell)
    done = store.completed()
    assert done.sum() == 5 and not done[1, 2]
    for (t, s), cell in cells.items():
        if (t, s) != (1, 2):
            for name, value in cell.items():
                np.testing.assert_array_equal(store.read_cell(name, t, s), value)
    with pytest.raises(ToolkitError, match="chunk is missing"):
        store.read_cell("a.0", 1, 2)


def test_cell_writer_reraises_a_write_error_and_leaves_the_cell_undone(tmp_path, monkeypatch):
    store = create_or_resume(tmp_path / "s.zarr", _attrs(1, 1))
    writer = CellWriter(store, "float32")
    monkeypatch.setattr(writer, "_write", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    writer.put(0, 0, {"a.0": np.zeros((1, 2, 2, 4), np.float32)})
    with pytest.raises(OSError, match="disk full"):
        writer.close()
    assert not store.completed()[0, 0]


# --- summary and paired differences ---------------------------------------------------------------


def _row(
    photo: str,
    method: str,
    ism: float,
    psnr: float = 30.0,
    dist: str = "none",
    budget: float = 16.0,
    delta_e: float = 2.0,
    ism_clean: float = 0.8,
) -> EvalRow:
    return EvalRow(
        **{
            "photo": photo,
            "method": method,
            "made_on": "",
            "budget": budget,
            "distortion": dist,
            "eval_model": "m",
            "seed": 0,
            "judge": "j",
            "ism_clean": ism_clean,
            "ism_protected": ism,
            "psnr_video": psnr,
            "ssim_video": 0.9,
            "temporal": 0.9,
            "cloak_psnr": 35.0,
            "cloak_ssim": 0.95,
            "cloak_delta_e": delta_e,
            "cloak_ism": 0.9,
            "cloak_lpips": math.nan,
            "ref_clean": math.nan,
            "ref_protected": math.nan,
        }
    )


def test_summary_means_and_paired_differences_have_known_values():
    rows = [_row(p, "a", ism) for p, ism in (("x", 0.4), ("y", 0.6))]
    rows += [_row(p, "b", ism) for p, ism in (("x", 0.6), ("y", 0.7))]
    rows += [_row("x", "a", 0.8, dist="jpeg75"), _row("y", "a", 0.8, dist="jpeg75")]
    summary = summarise(rows, EvaluateConfig(model="m", clean="c", protected=("p",), out="o"))
    by = {(e["method"], e["distortion"]): e for e in summary["table"]}
    assert by["a", "none"]["ism_drop"] == pytest.approx(((0.8 - 0.4) / 0.8 + (0.8 - 0.6) / 0.8) / 2)
    assert (
        by["a", "none"]["n"] == 2 and by["a", "none"]["cloak_lpips"] is None
    )  # no LPIPS model: null
    assert by["a", "jpeg75"]["ism_drop_surviving"] == pytest.approx(
        0.0
    )  # the distortion undid it all
    [pair] = paired_differences(rows)
    assert (pair["a"], pair["b"], pair["n"]) == ("a", "b", 2)
    assert pair["ism_drop_diff"] == pytest.approx(((0.6 - 0.4) + (0.7 - 0.6)) / 0.8 / 2)
    lo, hi = pair["ism_drop_diff_ci95"]
    assert lo <= pair["ism_drop_diff"] <= hi


def test_frontier_reads_drops_off_each_curve_at_equal_visibility():
    from anti_i2v.evaluate.frontier import frontier_summary

    # a: visibility budget/4, drop 0.1 per ΔE unit; b: budget/2, 0.05 per unit (photo scales
    # average to 1, so the mean curves are exactly these lines).
    rows = []
    for photo, k in (("x", 0.8), ("y", 1.0), ("z", 1.2)):
        for budget in (4.0, 8.0, 16.0, 24.0):
            for method, de, slope in (("a", budget / 4, 0.1), ("b", budget / 2, 0.05)):
                drop = slope * de * k
                rows.append(_row(photo, method, 1 - drop, budget=budget, delta_e=de, ism_clean=1))
    f = frontier_summary(rows, (4, 8, 16, 24))
    j = f["judges"]["j"]
    assert j["at_delta_e"]["a"]["3"]["ism_drop"] == pytest.approx(0.3)
    assert j["at_delta_e"]["b"]["3"]["ism_drop"] == pytest.approx(0.15)
    lo, hi = j["at_delta_e"]["a"]["3"]["ci95"]
    assert lo < 0.3 < hi
    [pair] = [p for p in j["paired"] if p["delta_e"] == 3]
    assert (pair["a"], pair["b"]) == ("a", "b") and pair["diff"] == pytest.approx(0.15)
    assert pair["ci95"][0] > 0  # a wins on every photo
    # Never extrapolated: b's cloaks start at ΔE 2, a's end at 6; both reach 5, neither reaches 13.
    assert j["at_delta_e"]["a"]["5"]["ism_drop"] == pytest.approx(0.5)
    assert [c["budget"] for c in j["curves"]["a"]] == [4, 8, 16, 24]
    g = frontier_summary([r for r in rows if r.budget >= 16], (16, 24))
    assert g["judges"]["j"]["at_delta_e"]["a"]["2"]["ism_drop"] is None  # below a's range (4..6)


# --- shared helpers -------------------------------------------------------------------------------


def test_atomic_write_leaves_the_old_file_on_error(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(path) as f:
        f.write("new, half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_to_uint8_rounds_and_moves_channels_last():
    x = torch.tensor([0.0, 0.5 / 255, 0.51 / 255, 1.2]).view(1, 1, 4).expand(3, 1, 4)
    out = to_uint8(x)
    assert out.shape == (1, 4, 3) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [0, 0, 1, 255]


def test_atomic_writes_get_an_ordinary_files_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "new.txt") as f:
            f.write("x")
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
        (tmp_path / "kept.txt").write_text("y")
        (tmp_path / "kept.txt").chmod(0o640)
        with atomic_write(tmp_path / "kept.txt") as f:
            f.write("z")
        assert (
            tmp_path / "kept.txt"
        ).stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode
    finally:
        os.umask(old)


def test_summary_records_folder_names_not_user_paths(tmp_path):
    from anti_i2v.evaluate.results import shareable_config

    cfg = EvaluateConfig(
        model="m",
        clean=str(tmp_path / "photos"),
        protected=(str(tmp_path / "cloaks"), f"mine={tmp_path / 'other'}"),
        out=str(tmp_path / "report"),
        identity=("mini-identity", str(tmp_path / "my-judge")),
        profiles=(str(tmp_path / "profile.json"), str(tmp_path / "svd" / "profile.json")),
        budgets=(4, 8),
    )
    d = shareable_config(cfg)
    assert str(tmp_path) not in json.dumps(d)
    assert d["protected"] == ["cloaks", "mine=other"] and d["clean"] == "photos"
    assert d["identity"] == ["mini-identity", "my-judge"] and d["profiles"] == [
        f"{tmp_path.name}/profile.json",
        "svd/profile.json",
    ]


def test_output_folder_uploads_in_order_and_reads_done_from_the_url(tmp_path):
    import fsspec

    from anti_i2v.protect.output import OutputFolder

    dest = OutputFolder("memory://units/cloaks")
    staging = dest.local
    assert dest.url and staging.is_dir()
    for name in ("p.png", "p.json", ".reference/x.safetensors", "strips/a.png"):
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_text(name)
    assert dest.shared_files() == ["p.json", "p.png", "strips/a.png"]  # hidden caches stay
    assert dest.done_sidecar("p") is None  # nothing at the URL yet
    dest.publish(["p.png"])
    assert dest.done_sidecar("p") is None  # a cloak without its sidecar is not done
    dest.publish(["p.json"])
    (staging / "p.json").unlink()
    side = dest.done_sidecar("p")  # fetched back from the URL
    assert side == staging / "p.json" and side.read_text() == "p.json"
    assert fsspec.filesystem("memory").cat("/units/cloaks/p.png") == b"p.png"
    dest.close()
    assert not staging.exists()
    local = OutputFolder(tmp_path)
    (tmp_path / "q.png").write_text("q")
    assert not local.url and local.done_sidecar("q") == tmp_path / "q.json"
    local.publish(["q.png"])  # nothing to upload
    local.close()
    assert (tmp_path / "q.png").exists()  # a local folder is never removed
