"""The layer explorer: its data (bounded, deterministic, faithful to the store) and its page in Chromium."""

from __future__ import annotations

import base64
import io
import json
import shutil
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from anti_i2v.analyses.analyse import AnalysisConfig, clamped_cell
from anti_i2v.analyses.choose import ChoiceRule, choose
from anti_i2v.analyses.explore import ExploreConfig, explorer_bytes, kept_frames, serve_folder
from anti_i2v.analyses.profile import load_profile
from anti_i2v.analyses.run import explore
from anti_i2v.cli import app
from anti_i2v.models.capture import pooled_size
from anti_i2v.probe.store import open_store
from anti_i2v.world.render import render_video, sample_identity, sample_motion

MB = 1 << 20


def _layer_file(folder: Path, i: int) -> dict:
    text = (folder / "data" / f"layer-{i:03d}.js").read_text()
    prefix = f"explorerLayer({i}, "
    assert text.startswith(prefix) and text.endswith(");\n")
    return json.loads(text[len(prefix) : -3])


def _manifest(folder: Path) -> dict:
    text = (folder / "data" / "manifest.js").read_text()
    return json.loads(text[len("window.EXPLORER = ") : -2])


def _decode_png(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def test_stated_size_limits_hold_for_the_mini_model_and_cogvideox_5b():
    cfg = ExploreConfig()
    # mini-cogvideox as `make demo` probes it: 8 blocks, 5 timesteps, 3 latent frames of 8x8 tokens
    assert explorer_bytes(8, 5, 4, 3, 8 * 8, cfg) <= 6 * MB
    # CogVideoX-5B at 480x720 with --pool 3: 42 blocks, 13 latent frames of 30x45 tokens
    # (60x90 latents, patch 2), pooled to 10x15; 5 timesteps; any number of samples
    tokens = pooled_size(30, 3) * pooled_size(45, 3)
    assert tokens == 150
    total = explorer_bytes(42, 5, 1000, 13, tokens, cfg)
    assert total <= 48 * MB
    assert (total - explorer_bytes(0, 5, 1000, 13, tokens, cfg)) / 42 <= 1.2 * MB  # one layer file


def test_adapt_writes_a_self_contained_bounded_deterministic_explorer(tiny_profile, tmp_path):
    adapted = tiny_profile.parent
    folder = adapted / "explorer"
    store = open_store(adapted / "activations.zarr")
    m = _manifest(folder)
    assert m["layers"] == store.layers and m["timesteps"] == store.attrs.timesteps
    assert sorted(p.name for p in (folder / "data").iterdir()) == sorted(
        ["manifest.js"] + [f"layer-{i:03d}.js" for i in range(len(store.layers))]
    )
    assert load_profile(folder / "profile.json") == load_profile(tiny_profile)
    # the page's own files are relative: it opens from file:// anywhere
    html = (folder / "index.html").read_text()
    assert 'src="data/manifest.js"' in html and "http" not in html
    # bounded by the stated formula
    _, n_s, f, h, w, _ = store.array(store.layers[0]).shape
    data = sum(p.stat().st_size for p in (folder / "data").iterdir())
    assert data <= explorer_bytes(len(store.layers), 2, n_s, f, h * w)
    # the same command gives the same bytes, and no user path is in a shared file
    again = explore(adapted / "activations.zarr", tmp_path / "again", tiny_profile)
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            twin = again.parent / p.relative_to(folder)
            assert p.read_bytes() == twin.read_bytes(), p.name
            text = p.read_text()
            assert str(adapted) not in text and str(tmp_path) not in text, p.name


def test_reduced_features_keep_each_layers_token_similarities(tiny_profile):
    adapted = tiny_profile.parent
    store = open_store(adapted / "activations.zarr")
    m = _manifest(adapted / "explorer")
    frames = kept_frames(store.array(store.layers[0]).shape[2], ExploreConfig().frames)
    assert m["frames"] == frames
    for i, layer in enumerate(store.layers):
        payload = _layer_file(adapted / "explorer", i)
        h, w = payload["grid"]
        cells = [
            [
                clamped_cell(store, layer, t, s, AnalysisConfig().massive_ratio)[frames].numpy()
                for s in range(len(m["samples"]))
            ]
            for t in range(len(m["timesteps"]))
        ]
        c = cells[0][0].shape[-1]
        assert payload["dims"] == min(ExploreConfig().dims, c)
        mean = np.concatenate([x.reshape(-1, c) for per_t in cells for x in per_t]).mean(0)
        for t, per_t in enumerate(payload["timesteps"]):
            sprite = _decode_png(per_t["sprite"])
            assert sprite.shape == (len(m["samples"]) * h, len(frames) * w, 3)
            z = np.frombuffer(base64.b64decode(per_t["features"]), dtype="<f2").astype(np.float32)
            z = z.reshape(len(m["samples"]), len(frames), h * w, payload["dims"])
            full = cells[t][0].reshape(len(frames), h * w, c) - mean

            def cos(a):
                a = a / np.linalg.norm(a, axis=-1, keepdims=True)
                return a @ a.T

            # all components kept (tiny: C <= 64): a rotation of the centred features
            np.testing.assert_allclose(cos(z[0, 0]), cos(full[0]), atol=2e-2)


def test_explore_refuses_bad_inputs_in_one_line_and_writes_nothing(tiny_profile, tmp_path):
    store = str(tiny_profile.parent / "activations.zarr")
    other = json.loads(tiny_profile.read_text())
    other["layers"] = other["layers"][:-1]
    other["collapse_layers"], other["anchor_layers"] = other["layers"][:1], other["layers"][-1:]
    (tmp_path / "other.json").write_text(json.dumps(other))
    out = tmp_path / "explorer"
    for args, why in (
        (["--dims", "2"], "--dims 2"),
        (["--serve", "70000"], "--serve 70000"),
        (["--profile", str(tmp_path / "other.json")], "was made for"),
        (["--profile", str(tmp_path / "none.json")], "no profile at"),
        (["--masks", str(tmp_path)], "no masks for any sample"),
    ):
        res = CliRunner().invoke(app, ["explore", store, "--out", str(out), *args])
        assert res.exit_code == 2 and why in res.output, res.output
        assert len(res.output.strip().splitlines()) <= 2  # one line (rich may wrap it)
        assert not out.exists()


@pytest.mark.slow  # starts an HTTP server
def test_serve_folder_serves_the_page_on_localhost(tiny_profile):
    started = threading.Event()
    servers = []

    def ready(server):
        servers.append(server)
        started.set()

    thread = threading.Thread(
        target=serve_folder, args=(tiny_profile.parent / "explorer", 0, ready), daemon=True
    )
    thread.start()
    assert started.wait(10)
    port = servers[0].server_address[1]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/manifest.js") as r:
            assert r.status == 200 and r.read().startswith(b"window.EXPLORER = ")
    finally:
        servers[0].shutdown()
        thread.join(10)
    assert not thread.is_alive()


# --- the page in a real browser ------------------------------------------------------------------

CHROMIUM = shutil.which("chromium")
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None
browser_only = pytest.mark.skipif(
    CHROMIUM is None or sync_playwright is None,
    reason="needs Debian's chromium and playwright (make test installs both where apt-get works)",
)


@pytest.fixture(scope="module")
def masked_explorer(tiny_profile, tmp_path_factory) -> Path:
    """The explorer of the tiny store with part masks and no --profile (scored here), via the CLI."""
    root = tmp_path_factory.mktemp("explore")
    masks = root / "masks"
    masks.mkdir()
    for s in (10, 20, 30):  # the conftest portraits' identities
        _, labels = render_video(sample_identity(s), sample_motion(s), frames=1)
        Image.fromarray(labels[0]).save(masks / f"p{s}.png")
    store = tiny_profile.parent / "activations.zarr"
    res = CliRunner().invoke(
        app, ["explore", str(store), "--masks", str(masks), "--out", str(root / "explorer")]
    )
    assert res.exit_code == 0, res.output
    return root / "explorer"


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


@pytest.fixture
def page(browser, masked_explorer):
    """The explorer opened from file://, with every console error and page error collected."""
    pg = browser.new_page(accept_downloads=True)
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto((masked_explorer / "index.html").as_uri())
    pg.wait_for_function("window.explorer !== undefined")
    pg.evaluate("window.explorer.ready")
    yield pg
    pg.close()


def _pixels(page, canvas: str) -> str:
    page.evaluate("window.explorer.show()")
    return page.evaluate(f"document.getElementById('{canvas}').toDataURL()")


@pytest.mark.slow  # a real browser
@browser_only
def test_page_loads_without_errors_and_changing_the_layer_or_mask_changes_the_map(page):
    assert page.title() == "anti-i2v layer explorer"
    first = page.evaluate("window.explorer.state.layer")
    before = _pixels(page, "map")
    page.keyboard.press("ArrowRight" if first == 0 else "ArrowLeft")
    assert page.evaluate("window.explorer.state.layer") != first
    after = _pixels(page, "map")
    assert after != before
    page.check("#mask")
    assert _pixels(page, "map") != after
    assert page.errors == []


@pytest.mark.slow  # a real browser
@browser_only
def test_clicked_token_is_the_maximum_of_its_similarity_map(page):
    box = page.locator("#map").bounding_box()
    layer = page.evaluate("window.explorer.state.layer")
    for u, v in ((0.1, 0.1), (0.6, 0.3), (0.9, 0.85)):
        page.mouse.click(box["x"] + box["width"] * u, box["y"] + box["height"] * v)
        page.evaluate("window.explorer.show()")
        sim = page.evaluate("window.explorer.lastSimilarity")
        h, w = page.evaluate(f"window.EXPLORER.grids[{layer}]")
        assert sim["token"] == int(v * h) * w + int(u * w)
        assert sim["same"]["argmax"] == sim["token"]
        assert max(sim["same"]["values"]) == pytest.approx(1.0, abs=1e-3)
        assert sim["second"]["argmax"] == sim["token2"]
    assert page.errors == []


@pytest.mark.slow  # a real browser
@browser_only
def test_rule_recomputed_in_the_page_matches_the_profile_and_python(page, masked_explorer):
    profile = load_profile(masked_explorer / "profile.json")
    measures = [m for m in profile.rule["measures"] if m in profile.scores]
    assert len(measures) >= 2  # masks give mask_probe beside spatial_coherence
    keys = ("collapse_layers", "anchor_layers", "timesteps")
    picked = page.evaluate(f"window.explorer.recompute({json.dumps(measures)})")
    assert {k: picked[k] for k in keys} == {k: getattr(profile, k) for k in keys}
    rule = {k: v for k, v in profile.rule.items() if k != "measures"}
    for dropped in measures:
        kept = [m for m in measures if m != dropped]
        python = choose(
            profile.scores,
            profile.layers,
            profile.timesteps_probed,
            ChoiceRule(**rule, measures=tuple(kept)),
        )
        page.uncheck(f"#measures input[value={dropped}]")
        shown = page.evaluate(f"window.explorer.recompute({json.dumps(kept)})")
        assert {k: shown[k] for k in keys} == {k: python[k] for k in keys}, dropped
        page.check(f"#measures input[value={dropped}]")
    assert page.errors == []


@pytest.mark.slow  # a real browser
@browser_only
def test_export_downloads_the_current_view_as_png(page):
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + 5, box["y"] + 5)
    page.evaluate("window.explorer.show()")
    with page.expect_download() as download:
        page.click("#export")
    name = download.value.suggested_filename
    state = page.evaluate("window.explorer.state")
    m = page.evaluate("window.EXPLORER")
    assert name == (
        f"explorer-{m['layers'][state['layer']]}-t{m['timesteps'][state['timestep']]}"
        f"-{m['samples'][state['sample']]}-f{m['frames'][state['frame']]}.png"
    )
    image = Image.open(download.value.path())
    assert image.format == "PNG" and image.width > 5 * 320 and image.height > 320
    assert page.errors == []


# --- hostile names: the page shows them as text and runs nothing -----------------------------

HOSTILE = "\"><svg onload=document.title='Y'><img src=x onerror=document.title='Z'>"


@pytest.fixture(scope="module")
def hostile_explorer(tmp_path_factory, portraits) -> Path:
    """An explorer whose photo, store folder and profile layer names all carry markup."""
    from anti_i2v.analyses.run import analyse
    from anti_i2v.probe.config import ProbeConfig
    from anti_i2v.probe.run import run_probe

    root = tmp_path_factory.mktemp("hostile")
    photos = root / "photos"
    photos.mkdir()
    name = HOSTILE.replace("/", "")  # a file name holds no slash
    shutil.copy(portraits / "p10.png", photos / f"{name}.png")
    shutil.copy(portraits / "p20.png", photos / "<img src=x onerror=alert(1)>.png")
    store = root / f"{name}.zarr"
    run_probe(
        ProbeConfig(
            model="tiny:cogvideox", images=(str(photos),), out=str(store), timesteps=(300, 700)
        )
    )
    profile = analyse(store, root / "profile.json")
    assert any("svg" in s for s in [store.name])
    # the lens and attention views name their photo too
    for args in (
        ["lens", "tiny:cogvideox", str(photos / f"{name}.png"), "--timesteps", "300,700"],
        ["attention", "tiny:cogvideox", str(photos), "--timesteps", "300,700", "--maps", "4"],
    ):
        res = CliRunner().invoke(app, [*args, "--out", str(root / args[0])])
        assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        app,
        [
            "explore",
            str(store),
            "--profile",
            str(root / "profile.json"),
            "--lens",
            str(root / "lens"),
            "--attention",
            str(root / "attention"),
            "--out",
            str(root / "explorer"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert profile.store == store.name
    return root / "explorer"


@pytest.mark.slow  # a real browser
@browser_only
def test_hostile_names_are_shown_as_text_and_inject_nothing(browser, hostile_explorer):
    pg = browser.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("dialog", lambda d: (errors.append(f"dialog {d.message}"), d.dismiss()))
    pg.goto((hostile_explorer / "index.html").as_uri())
    pg.wait_for_function("window.explorer !== undefined")
    pg.evaluate("window.explorer.ready")
    for key in ("=", "-"):  # show both samples' names
        pg.keyboard.press(key)
    pg.evaluate("window.explorer.show()")
    pg.wait_for_timeout(300)  # an injected onload/onerror fires on insertion
    assert pg.title() == "anti-i2v layer explorer"
    assert pg.locator("svg[onload], img[onerror], img[src=x]").count() == 0
    # the names are on the page, as text
    assert "<img src=x onerror=alert(1)>" in pg.locator("#sample2").inner_text()
    assert "onload" in pg.locator("#picks code").inner_text()
    assert "onload" in pg.locator("#lens-caption").inner_text()
    box = pg.locator("#map").bounding_box()
    pg.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    pg.evaluate("window.explorer.show()")
    assert "onload" in pg.locator("#attention-caption").inner_text()
    pg.wait_for_timeout(300)
    assert pg.locator("svg[onload], img[onerror], img[src=x]").count() == 0
    assert errors == []
    pg.close()


def test_a_profile_whose_rule_holds_markup_is_refused(tiny_profile, tmp_path):
    data = json.loads(tiny_profile.read_text())
    for field, value in (
        (("rule", "n_anchors"), "<img src=x onerror=alert(1)>"),
        (("rule", "measures"), ["<b>x</b>"]),
        (("rule", "<script>"), 1),
        (("scores",), {"<svg onload=x>": {}}),
    ):
        bad = json.loads(json.dumps(data))
        target = bad
        for key in field[:-1]:
            target = target[key]
        target[field[-1]] = value
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        store = str(tiny_profile.parent / "activations.zarr")
        res = CliRunner().invoke(
            app,
            [
                "explore",
                store,
                "--profile",
                str(tmp_path / "bad.json"),
                "--out",
                str(tmp_path / "x"),
            ],
        )
        assert res.exit_code == 2 and "must be" in res.output, (field, res.output)
        assert not (tmp_path / "x").exists()


def test_explore_never_replaces_a_folder_it_did_not_write(tiny_profile, tmp_path):
    adapted = tmp_path / "adapted"
    shutil.copytree(tiny_profile.parent, adapted)
    before = (adapted / "profile.json").read_bytes(), (adapted / "index.html").read_bytes()
    store = str(adapted / "activations.zarr")
    res = CliRunner().invoke(app, ["explore", store, "--out", str(adapted)])
    assert res.exit_code == 2 and "holds files the explorer did not write" in res.output, res.output
    assert (
        (adapted / "profile.json").read_bytes(),
        (adapted / "index.html").read_bytes(),
    ) == before
    # its own folder is replaced as before
    res = CliRunner().invoke(app, ["explore", store, "--out", str(adapted / "explorer")])
    assert res.exit_code == 0, res.output


def test_analyse_refuses_figures_at_a_file_before_writing_the_profile(tiny_profile, tmp_path):
    (tmp_path / "figs").write_text("mine")
    store = str(tiny_profile.parent / "activations.zarr")
    res = CliRunner().invoke(
        app,
        ["analyse", store, "--out", str(tmp_path / "p.json"), "--figures", str(tmp_path / "figs")],
    )
    assert res.exit_code == 2 and "--figures" in res.output and "is a file" in res.output, (
        res.output
    )
    assert not (tmp_path / "p.json").exists() and (tmp_path / "figs").read_text() == "mine"


@pytest.fixture(scope="module")
def experts_explorer(portraits, tmp_path_factory) -> Path:
    """`adapt` on a model of experts (tiny Wan 2.2 A14B), at a timestep of each expert's band."""
    out = tmp_path_factory.mktemp("experts") / "adapt"
    res = CliRunner().invoke(
        app, ["adapt", "tiny:wan22-a14b", str(portraits), "--timesteps", "500,700,950",
              "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return out / "explorer"


@pytest.mark.slow  # a real browser
@browser_only
def test_a_model_of_experts_shows_each_block_at_its_own_timesteps(browser, experts_explorer):
    profile = load_profile(experts_explorer / "profile.json")
    # each expert gets its collapse and anchor blocks, and its own timesteps
    assert {layer.split(".")[0] for layer in profile.collapse_layers} == {"high", "low"}
    assert {layer.split(".")[0] for layer in profile.anchor_layers} == {"high", "low"}
    assert 950 in profile.timesteps and min(profile.timesteps) < 900
    pg = browser.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.goto((experts_explorer / "index.html").as_uri())
    pg.wait_for_function("window.explorer !== undefined")
    pg.evaluate("window.explorer.ready")
    keys = ("collapse_layers", "anchor_layers", "timesteps")
    picked = pg.evaluate(f"window.explorer.recompute({json.dumps(list(profile.rule['measures']))})")
    assert {k: picked[k] for k in keys} == {k: getattr(profile, k) for k in keys}
    layers = pg.evaluate("window.EXPLORER.layers")
    corner = (
        "Array.from(document.getElementById('map').getContext('2d').getImageData(2, 2, 1, 1).data)"
    )
    for layer, timestep, runs in (("high.blocks.0", 2, True), ("high.blocks.0", 0, False),
                                  ("low.blocks.1", 0, True)):  # fmt: skip
        pg.evaluate(
            f"Object.assign(window.explorer.state, {{layer: {layers.index(layer)}, timestep: {timestep}}})"
        )
        pg.evaluate("window.explorer.show()")
        # a block that did not run shows the placeholder's grey, one that ran its PCA map
        assert (pg.evaluate(corner)[:3] == [244, 244, 244]) is not runs, (layer, timestep)
    assert errors == []
    pg.close()


# --- the lens strip and the attention view ----------------------------------------------------


@pytest.fixture(scope="module")
def views_explorer(tmp_path_factory, portraits) -> Path:
    """adapt with --attention and --lens on tiny:cogvideox: the explorer embeds both views."""
    out = tmp_path_factory.mktemp("views") / "adapt"
    res = CliRunner().invoke(
        app, ["adapt", "tiny:cogvideox", str(portraits), "--out", str(out), "--timesteps", "300,700",
              "--attention", "--lens"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.slow  # adapt, attention and the lens from the CLI
def test_the_explorer_embeds_the_lens_strips_and_attention_maps_within_their_files_size(
    views_explorer,
):
    m = _manifest(views_explorer / "explorer")
    lens = json.loads((views_explorer / "lens" / "lens.json").read_text())
    assert sorted(m["lens"]["strips"]) == ["300", "700"] and m["lens"]["photo"] == lens["photo"]
    for t, strip in m["lens"]["strips"].items():
        assert strip["rows"] == lens["rows"][t]["rows"] and set(strip["rows"]) == set(m["layers"])
        mosaic = _decode_png(strip["url"])
        on_disk = np.asarray(Image.open(views_explorer / "lens" / f"frames-t{t}.png"))
        assert np.array_equal(mosaic, on_disk) and mosaic.shape[0] % len(strip["rows"]) == 0
    maps = json.loads((views_explorer / "attention" / "attention-maps.json").read_text())
    assert m["attention"]["maps"] == maps["maps"]
    assert set(maps["maps"]) == {f"{layer}@{t}" for layer in m["layers"] for t in (300, 700)}
    f, h, w = maps["grid"]
    for entry in maps["maps"].values():
        rows = np.frombuffer(base64.b64decode(entry["maps"]), "<f2").reshape(-1, f * h * w)
        assert len(rows) == len(entry["tokens"]) <= 8
        assert (rows >= 0).all() and (rows.astype(np.float32).sum(1) <= 1 + 1e-2).all()
    # the attention share is a score the page offers beside the rule's (unticked: not the rule's)
    assert (
        "attention_frame0" in m["profile"]["scores"]
        and "attention_frame0" in m["profile"]["measures"]
    )


def _distance(token: int, h: int, w: int, u: float, v: float) -> float:
    """A video token's squared distance, in map fractions, to the click (u, v) on its frame."""
    y, x = (token % (h * w)) // w, token % w
    return ((x + 0.5) / w - u) ** 2 + ((y + 0.5) / h - v) ** 2


@pytest.mark.slow  # a real browser
@browser_only
def test_the_lens_strip_and_the_attention_of_a_clicked_token_are_drawn(browser, views_explorer):
    pg = browser.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.goto((views_explorer / "explorer" / "index.html").as_uri())
    pg.wait_for_function("window.explorer !== undefined")
    pg.evaluate("window.explorer.ready")
    lens = "document.getElementById('lens').toDataURL()"
    first = pg.evaluate(lens)
    pg.keyboard.press(
        "ArrowRight" if pg.evaluate("window.explorer.state.layer") == 0 else "ArrowLeft"
    )
    pg.evaluate("window.explorer.show()")
    assert pg.evaluate(lens) != first  # another block, another row of the strip
    assert "decoded frames" in pg.locator("#lens-caption").inner_text()
    box = pg.locator("#map").bounding_box()
    for u, v in ((0.2, 0.2), (0.8, 0.7)):
        pg.mouse.click(box["x"] + box["width"] * u, box["y"] + box["height"] * v)
        pg.evaluate("window.explorer.show()")
        shown = pg.evaluate("window.explorer.lastAttention")
        state = pg.evaluate("window.explorer.state")
        m = pg.evaluate("window.EXPLORER")
        layer, t = m["layers"][state["layer"]], m["timesteps"][state["timestep"]]
        entry = m["attention"]["maps"][f"{layer}@{t}"]
        f, h, w = m["attention"]["grid"]
        frame = m["frames"][state["frame"]]
        # the recorded query nearest the click, among those on the shown frame
        on_frame = [q for q in entry["tokens"] if q // (h * w) == frame]
        assert shown["query"]["token"] == min(on_frame, key=lambda q: _distance(q, h, w, u, v))
        rows = np.frombuffer(base64.b64decode(entry["maps"]), "<f2").reshape(-1, f * h * w)
        row = rows[entry["tokens"].index(shown["query"]["token"])].astype(np.float64)
        want = [row[i * h * w : (i + 1) * h * w].sum() for i in range(f)]
        assert shown["shares"] == pytest.approx(want, abs=1e-3)
        assert pg.locator("#attention-frames canvas").count() == f
    assert errors == []
    pg.close()
