// The anti-i2v layer explorer: vanilla JS, no build step. Data: window.EXPLORER (data/manifest.js)
// and one data/layer-NNN.js per block, loaded as scripts when shown (file:// pages may not fetch).
"use strict";

(function () {
  const M = window.EXPLORER;
  const $ = (id) => document.getElementById(id);
  // Every name on the page comes from an input (photo and store names, a profile's fields), so
  // the page is built from nodes whose text is set as text: no markup is ever made from data.
  const SVG_NS = "http://www.w3.org/2000/svg";
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    node.append(...children.map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
    return node;
  }
  function svgEl(tag, attrs = {}, text = null) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== null) node.textContent = String(text);
    return node;
  }
  const fill = (node, ...children) => node.replaceChildren(...children.map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
  const VIEW = 320; // canvas width in CSS pixels; heights follow each layer's token grid
  const KEEP_LAYERS = 8; // decoded layers held at once: memory stays bounded on deep models

  // --- layer files -----------------------------------------------------------------------------
  const cache = new Map(); // layer index -> Promise of the decoded layer
  const waiting = {}; // layer index -> resolve, until its script calls explorerLayer

  function halfToFloat(h) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const f = h & 0x3ff;
    if (e === 0) return s * Math.pow(2, -14) * (f / 1024);
    if (e === 31) return f ? NaN : s * Infinity;
    return s * Math.pow(2, e - 15) * (1 + f / 1024);
  }

  function decodeFloat16(b64) {
    const bin = atob(b64);
    const out = new Float32Array(bin.length / 2);
    for (let i = 0; i < out.length; i++) {
      out[i] = halfToFloat(bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8)); // little-endian
    }
    return out;
  }

  async function decodeImage(url) {
    const img = new Image();
    img.src = url;
    await img.decode();
    return img;
  }

  window.explorerLayer = function (index, payload) {
    const done = waiting[index];
    delete waiting[index];
    // null: the block did not run at that timestep (a model of experts runs one expert per band)
    const timesteps = payload.timesteps.map((t) => t && { features: decodeFloat16(t.features), sprite: t.sprite });
    Promise.all(timesteps.map((t) => t && decodeImage(t.sprite))).then((imgs) => {
      imgs.forEach((img, i) => { if (timesteps[i]) timesteps[i].image = img; });
      done({ ...payload, timesteps });
    });
  };

  function loadLayer(index) {
    if (cache.has(index)) {
      const p = cache.get(index);
      cache.delete(index); // re-insert: the Map's order is the eviction order
      cache.set(index, p);
      return p;
    }
    const p = new Promise((resolve, reject) => {
      waiting[index] = resolve;
      const script = document.createElement("script");
      script.src = `data/layer-${String(index).padStart(3, "0")}.js`;
      script.onerror = () => reject(new Error(`cannot load ${script.src}`));
      script.onload = () => script.remove();
      document.head.appendChild(script);
    });
    cache.set(index, p);
    while (cache.size > KEEP_LAYERS) cache.delete(cache.keys().next().value);
    return p;
  }

  // --- state -----------------------------------------------------------------------------------
  const state = {
    layer: M.profile.anchor_layers.length ? M.layers.indexOf(M.profile.anchor_layers[0]) : 0,
    layer2: M.profile.collapse_layers.length ? M.layers.indexOf(M.profile.collapse_layers[0]) : 0,
    timestep: Math.max(0, M.timesteps.indexOf(M.profile.timesteps[0])),
    sample: 0,
    sample2: M.samples.length > 1 ? 1 : 0,
    frame: 0,
    opacity: 0.85,
    mask: false,
    clicked: null, // {u, v}: the clicked point as fractions of the map, so it survives a layer change
  };

  // --- drawing ---------------------------------------------------------------------------------
  const VIRIDIS = [
    [68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37],
  ];
  function colour(x) {
    const t = Math.min(1, Math.max(0, x)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(t));
    const a = VIRIDIS[i], b = VIRIDIS[i + 1], f = t - i;
    return [0, 1, 2].map((k) => Math.round(a[k] + (b[k] - a[k]) * f));
  }

  function sizeCanvas(canvas, grid) {
    canvas.width = VIEW;
    canvas.height = Math.round((VIEW * grid[0]) / grid[1]);
  }

  function drawPhoto(ctx, canvas, sample) {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const url = M.photos[M.samples[sample]];
    if (!url) return Promise.resolve();
    return decodeImage(url).then((img) => ctx.drawImage(img, 0, 0, canvas.width, canvas.height));
  }

  // Whether `layer` ran at the current timestep (each expert of a model of experts owns a band).
  const runs = (layer) => layer.timesteps[state.timestep] !== null;

  async function drawMap(canvas, layer, sample) {
    if (!runs(layer)) {
      clearCanvas(canvas, `${layer.layer} does not run at t=${M.timesteps[state.timestep]}`);
      return;
    }
    const ctx = canvas.getContext("2d");
    const [h, w] = layer.grid;
    sizeCanvas(canvas, layer.grid);
    await drawPhoto(ctx, canvas, sample);
    ctx.imageSmoothingEnabled = false;
    ctx.globalAlpha = M.photos[M.samples[sample]] ? state.opacity : 1;
    const img = layer.timesteps[state.timestep].image;
    ctx.drawImage(img, state.frame * w, sample * h, w, h, 0, 0, canvas.width, canvas.height);
    ctx.globalAlpha = 1;
    const mask = M.masks[M.samples[sample]];
    if (state.mask && mask) {
      ctx.globalAlpha = 0.45;
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(await decodeImage(mask), 0, 0, canvas.width, canvas.height);
      ctx.globalAlpha = 1;
    }
  }

  function tokenOf(layer, point) {
    const [h, w] = layer.grid;
    return Math.min(h - 1, Math.floor(point.v * h)) * w + Math.min(w - 1, Math.floor(point.u * w));
  }

  function vector(layer, sample, token) {
    const [h, w] = layer.grid;
    const d = layer.dims;
    const feats = layer.timesteps[state.timestep].features;
    const start = ((sample * M.frames.length + state.frame) * h * w + token) * d;
    return feats.subarray(start, start + d);
  }

  // Cosine similarity of `query` to every token of (layer, sample) at the current timestep and frame.
  function similarity(query, layer, sample) {
    const [h, w] = layer.grid;
    const values = new Float32Array(h * w);
    let qn = 0;
    for (let k = 0; k < query.length; k++) qn += query[k] * query[k];
    let argmax = 0;
    for (let i = 0; i < h * w; i++) {
      const v = vector(layer, sample, i);
      let dot = 0, vn = 0;
      for (let k = 0; k < v.length; k++) { dot += query[k] * v[k]; vn += v[k] * v[k]; }
      values[i] = dot / Math.sqrt(qn * vn + 1e-12);
      if (values[i] > values[argmax]) argmax = i;
    }
    return { values, argmax, grid: [h, w] };
  }

  // `range`: [lo, hi] of the colour scale (default: the values' own)
  function drawHeat(canvas, sim, marks, range = null) {
    const [h, w] = sim.grid;
    sizeCanvas(canvas, sim.grid);
    let lo = Infinity, hi = -Infinity;
    for (const v of sim.values) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (range) [lo, hi] = range;
    const small = document.createElement("canvas");
    small.width = w;
    small.height = h;
    const sctx = small.getContext("2d");
    const data = sctx.createImageData(w, h);
    sim.values.forEach((v, i) => {
      const [r, g, b] = colour((v - lo) / Math.max(hi - lo, 1e-6));
      data.data.set([r, g, b, 255], 4 * i);
    });
    sctx.putImageData(data, 0, 0);
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
    for (const [token, style] of marks) markToken(ctx, canvas, sim.grid, token, style);
  }

  function markToken(ctx, canvas, grid, token, style) {
    const [h, w] = grid;
    const cw = canvas.width / w, ch = canvas.height / h;
    ctx.strokeStyle = style;
    ctx.lineWidth = 2;
    ctx.strokeRect((token % w) * cw + 1, Math.floor(token / w) * ch + 1, cw - 2, ch - 2);
  }

  function clearCanvas(canvas, text) {
    const ctx = canvas.getContext("2d");
    canvas.width = VIEW;
    canvas.height = VIEW;
    ctx.fillStyle = "#f4f4f4";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = "#777";
    ctx.font = "13px sans-serif";
    ctx.fillText(text, 12, 24);
  }

  // --- the lens strip and the attention view (embedded from their own jobs) ----------------------
  const lastAttention = {}; // what the attention view shows, for tests and notebooks
  let lensImages = {}; // timestep -> decoded mosaic

  async function drawLens() {
    const canvas = $("lens"), layer = M.layers[state.layer], t = String(M.timesteps[state.timestep]);
    const L = M.lens;
    if (!L) {
      clearCanvas(canvas, "no lens here: anti-i2v lens MODEL PHOTO --out DIR, then explore --lens DIR");
      $("lens-caption").textContent = "";
      return;
    }
    const strip = L.strips[t];
    const row = strip ? strip.rows.indexOf(layer) : -1;
    if (row < 0) {
      clearCanvas(canvas, strip ? `${layer} does not run at t=${t}` : `no lens at t=${t}`);
      $("lens-caption").textContent = `Lens on ${L.photo} at t=${Object.keys(L.strips).join(", ")}.`;
      return;
    }
    lensImages[t] = lensImages[t] || (await decodeImage(strip.url));
    const img = lensImages[t];
    const rowH = img.height / strip.rows.length;
    canvas.width = Math.min(5 * VIEW, Math.max(img.width, 3 * VIEW)); // small frames drawn larger
    canvas.height = Math.round((rowH * canvas.width) / img.width);
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(img, 0, row * rowH, img.width, rowH, 0, 0, canvas.width, canvas.height);
    $("lens-caption").textContent = `${layer} at t=${t} on ${L.photo}: decoded frames ${L.shown.join(", ")} of the clean video ` +
      "this block predicts when read through the model's own output head (the last block's is the model's).";
  }

  function nearestQuery(tokens, grid, frame, point) {
    const [, h, w] = grid;
    let best = null, bestD = Infinity;
    tokens.forEach((q, k) => {
      const f = Math.floor(q / (h * w)), y = Math.floor((q % (h * w)) / w), x = q % w;
      const d = (f === frame ? 0 : 1e6 * (1 + Math.abs(f - frame))) + ((x + 0.5) / w - point.u) ** 2 + ((y + 0.5) / h - point.v) ** 2;
      if (d < bestD) { bestD = d; best = { k, token: q, frame: f, y, x }; }
    });
    return best;
  }

  function drawAttention() {
    const box = $("attention-frames"), A = M.attention;
    const layer = M.layers[state.layer], t = M.timesteps[state.timestep];
    for (const key of Object.keys(lastAttention)) delete lastAttention[key];
    if (!A) {
      fill(box);
      $("attention-caption").textContent = "No attention maps here: anti-i2v attention MODEL PHOTOS --maps 8 --out DIR, then explore --attention DIR.";
      return;
    }
    const entry = A.maps[`${layer}@${t}`];
    if (!entry || !A.grid) {
      fill(box);
      $("attention-caption").textContent = `${layer} has no attention over the whole video at t=${t} (cross- or temporal attention, or it does not run then).`;
      return;
    }
    if (!state.clicked) {
      fill(box);
      $("attention-caption").textContent = `Click a token on the left map: the page shows the nearest of the ${entry.tokens.length} recorded queries of ${A.photo}.`;
      return;
    }
    const [F, h, w] = A.grid;
    const frame = Math.min(F - 1, M.frames[state.frame]);
    const q = nearestQuery(entry.tokens, A.grid, frame, state.clicked);
    const all = decodeFloat16(entry.maps);
    const n = F * h * w, row = all.subarray(q.k * n, (q.k + 1) * n);
    let hi = 0;
    for (const v of row) hi = Math.max(hi, v);
    const sums = [];
    const canvases = [];
    for (let f = 0; f < F; f++) {
      const values = Array.from(row.subarray(f * h * w, (f + 1) * h * w));
      sums.push(values.reduce((a, b) => a + b, 0));
      const canvas = el("canvas", { "data-frame": f });
      // one colour scale over every frame, so frames compare
      drawHeat(canvas, { grid: [h, w], values }, f === q.frame ? [[q.y * w + q.x, "#f33"]] : [], [0, hi]);
      canvases.push(el("figure", {}, canvas, el("figcaption", {}, `frame ${f}: ${(100 * sums[f]).toFixed(1)}%`)));
    }
    fill(box, ...canvases);
    Object.assign(lastAttention, { layer, timestep: t, query: q, shares: sums });
    $("attention-caption").textContent = `${layer} (${entry.module}) at t=${t} on ${A.photo}: query token at frame ${q.frame}, ` +
      `row ${q.y}, column ${q.x} (outlined; the recorded query nearest the click). Each frame's share of its attention is under it; ` +
      "one colour scale for all frames, so a frame that draws more attention is brighter.";
  }

  // --- the rule, recomputed from the stored scores (a port of analyses/choose.py) ------------------
  function normalise(matrix) {
    let lo = Infinity, hi = -Infinity;
    for (const row of matrix) for (const v of row) if (!Number.isNaN(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    return matrix.map((row) => row.map((v) => (hi - lo < 1e-12 ? 0 : (v - lo) / (hi - lo))));
  }
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const byKey = (key) => (a, b) => { const ka = key(a), kb = key(b); for (let i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return ka[i] < kb[i] ? -1 : 1; return 0; };

  function semanticMatrix(scores, layers, measures) {
    const used = measures.filter((m) => m in scores);
    if (!used.length) return null;
    const mats = used.map((m) => normalise(layers.map((l) => scores[m][l])));
    return layers.map((_, i) => mats[0][i].map((_, t) => mean(mats.map((mat) => mat[i][t]))));
  }

  // Scores are null where a block did not run (one expert's blocks, the other expert's band).
  const num = (v) => (v === null ? NaN : v);
  const ranAt = (layer) => M.profile.scores.cka_first[layer].map((v, t) => (v === null ? -1 : t)).filter((t) => t >= 0);

  // As choose.py: the rule on each band of blocks that ran at the same timesteps (one band, but
  // one per expert for a model of experts), blocks in execution order band after band.
  function recompute(measures) {
    const bands = new Map();
    for (const l of M.layers) {
      const key = ranAt(l).join(",");
      if (!bands.has(key)) bands.set(key, { layers: [], steps: ranAt(l) });
      bands.get(key).layers.push(l);
    }
    const semantic = M.layers.map(() => M.timesteps.map(() => NaN));
    const out = { collapse_layers: [], anchor_layers: [], timesteps: [], semantic };
    for (const { layers, steps } of bands.values()) {
      const part = recomputeBand(measures, layers, steps);
      if (!part) return null;
      out.collapse_layers.push(...part.collapse_layers);
      out.anchor_layers.push(...part.anchor_layers);
      out.timesteps.push(...part.timesteps);
      layers.forEach((l, i) => steps.forEach((t, k) => (semantic[M.layers.indexOf(l)][t] = part.semantic[i][k])));
    }
    out.timesteps.sort((a, b) => a - b);
    return out;
  }

  function recomputeBand(measures, layers, steps) {
    const P = M.profile, rule = P.rule, n = layers.length;
    const scores = {};
    for (const m of Object.keys(P.scores)) {
      scores[m] = {};
      for (const l of layers) scores[m][l] = steps.map((t) => num(P.scores[m][l][t]));
    }
    const times = steps.map((t) => M.timesteps[t]);
    const semT = semanticMatrix(scores, layers, measures);
    if (!semT) return null;
    const semantic = semT.map(mean);
    const low = normalise([layers.map((l) => mean(scores.cka_first[l]))])[0];
    const depth = layers.map((_, i) => i / Math.max(n - 1, 1));
    const idx = layers.map((_, i) => i);
    let pool = idx.filter((i) => depth[i] <= rule.collapse_max_depth);
    if (!pool.length) pool = [0];
    const collapse = pool.sort(byKey((i) => [-(low[i] - semantic[i]), i])).slice(0, rule.n_collapse);
    let anchorPool = idx.filter((i) => rule.anchor_min_depth <= depth[i] && depth[i] <= rule.anchor_max_depth && !collapse.includes(i));
    if (!anchorPool.length) anchorPool = idx.filter((i) => !collapse.includes(i));
    const anchors = anchorPool.sort(byKey((i) => [-semantic[i], i])).slice(0, rule.n_anchors);
    const perT = times.map((_, t) => mean(anchors.map((i) => semT[i][t])));
    let noisy = times.map((_, t) => t).filter((t) => times[t] >= rule.min_timestep);
    if (!noisy.length) noisy = times.map((_, t) => t);
    const bestT = noisy.sort(byKey((t) => [-perT[t], t])).slice(0, rule.n_timesteps);
    return {
      collapse_layers: collapse.sort((a, b) => a - b).map((i) => layers[i]),
      anchor_layers: anchors.sort((a, b) => a - b).map((i) => layers[i]),
      timesteps: bestT.map((t) => times[t]).sort((a, b) => a - b),
      semantic: semT,
    };
  }

  function chosenMeasures() {
    return [...document.querySelectorAll("#measures input:checked")].map((x) => x.value);
  }

  // --- the score chart -------------------------------------------------------------------------
  const PALETTE = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d"];

  function drawChart(picks) {
    const svg = $("chart");
    const W = +svg.getAttribute("width"), H = +svg.getAttribute("height");
    const pad = { l: 40, r: 10, t: 10, b: 30 };
    const n = M.layers.length, t = state.timestep;
    const x = (i) => pad.l + ((W - pad.l - pad.r) * i) / Math.max(n - 1, 1);
    const series = Object.keys(M.profile.scores).sort().map((m) => [m, M.layers.map((l) => num(M.profile.scores[m][l][t]))]);
    if (picks) series.push(["semantic (rule, this timestep)", picks.semantic.map((row) => row[t])]);
    const all = series.flatMap(([, v]) => v).filter((v) => Number.isFinite(v));
    const lo = Math.min(0, ...all), hi = Math.max(1, ...all);
    const y = (v) => pad.t + (H - pad.t - pad.b) * (1 - (v - lo) / (hi - lo));
    const parts = [];
    const band = (layer, colour) => {
      const i = M.layers.indexOf(layer);
      parts.push(svgEl("rect", { x: x(i) - 6, y: pad.t, width: 12, height: H - pad.t - pad.b, fill: colour }));
    };
    (picks || M.profile).collapse_layers.forEach((l) => band(l, "rgba(31,95,191,0.25)"));
    (picks || M.profile).anchor_layers.forEach((l) => band(l, "rgba(192,57,43,0.25)"));
    parts.push(svgEl("line", { x1: x(state.layer), x2: x(state.layer), y1: pad.t, y2: H - pad.b, stroke: "#333", "stroke-width": 1.5 }));
    parts.push(svgEl("line", { x1: x(state.layer2), x2: x(state.layer2), y1: pad.t, y2: H - pad.b, stroke: "#333", "stroke-dasharray": "4 3" }));
    parts.push(svgEl("line", { x1: pad.l, x2: W - pad.r, y1: H - pad.b, y2: H - pad.b, stroke: "#999" }));
    for (const v of [lo, (lo + hi) / 2, hi]) {
      parts.push(svgEl("text", { x: 4, y: y(v) + 4, "font-size": 10 }, v.toFixed(2)));
    }
    const legend = [];
    const key = (colourOf, name) => el("span", {}, swatch(colourOf), name);
    series.forEach(([name, values], k) => {
      const colourOf = name.startsWith("semantic") ? "#000" : PALETTE[k % PALETTE.length];
      // one polyline per run of finite values: a block that did not run leaves a gap
      const runsOf = [[]];
      values.forEach((v, i) => (Number.isFinite(v) ? runsOf[runsOf.length - 1].push(`${x(i)},${y(v)}`) : runsOf.push([])));
      for (const pts of runsOf.filter((r) => r.length)) {
        const line = svgEl("polyline", { points: pts.join(" "), fill: "none", stroke: colourOf, "stroke-width": 2 });
        if (name.startsWith("semantic")) line.setAttribute("stroke-dasharray", "6 3");
        parts.push(line);
      }
      legend.push(key(colourOf, name));
    });
    parts.push(svgEl("text", { x: pad.l, y: H - 8, "font-size": 10 }, `depth: ${M.layers[0]} ... ${M.layers[n - 1]} (click to pick a layer)`));
    fill(svg, ...parts);
    fill($("legend"), ...legend, key("rgba(31,95,191,0.5)", "collapse"), key("rgba(192,57,43,0.5)", "anchors"));
  }

  function swatch(colour) {
    const i = el("i");
    i.style.background = colour;
    return i;
  }

  function showRule() {
    const measures = chosenMeasures();
    const picks = recompute(measures);
    const P = M.profile;
    if (!picks) {
      $("recomputed").textContent = "Tick at least one score family: the rule needs a semantic score.";
      drawChart(null);
      return null;
    }
    const cell = (key) => {
      const same = JSON.stringify(picks[key]) === JSON.stringify(P[key]);
      return el("span", same ? {} : { class: "changed" }, picks[key].join(", "));
    };
    fill($("recomputed"), `With ${measures.join(", ")}: collapse `, cell("collapse_layers"), "; anchors ",
      cell("anchor_layers"), "; timesteps ", cell("timesteps"), " (highlighted where it differs from the profile).");
    drawChart(picks);
    return picks;
  }

  // --- the views -------------------------------------------------------------------------------
  let drawing = Promise.resolve();
  const lastSimilarity = {};

  async function render() {
    const [a, b] = await Promise.all([loadLayer(state.layer), loadLayer(state.layer2)]);
    $("layer-name").textContent = `${M.layers[state.layer]} (${state.layer + 1}/${M.layers.length}, ${roleOf(M.layers[state.layer])})`;
    $("timestep-value").textContent = M.timesteps[state.timestep];
    $("sample-name").textContent = M.samples[state.sample];
    $("frame-value").textContent = `latent frame ${M.frames[state.frame]}`;
    $("map-caption").textContent = `${a.layer}: ${a.grid[0]}x${a.grid[1]} tokens, PCA ${a.dims}-d keeps ${(100 * a.explained).toFixed(1)}% of the variance`;
    $("map2-caption").textContent = `${b.layer} (${roleOf(b.layer)})`;
    $("corr-caption").textContent = `${a.layer} on ${M.samples[state.sample2]}: the clicked token's best match is outlined`;
    await drawMap($("map"), a, state.sample);
    await drawMap($("map2"), b, state.sample);
    if (state.clicked && runs(a) && runs(b)) {
      const token = tokenOf(a, state.clicked);
      const q = vector(a, state.sample, token);
      const same = similarity(q, a, state.sample);
      const token2 = tokenOf(b, state.clicked);
      const other = similarity(vector(b, state.sample, token2), b, state.sample);
      const corr = similarity(q, a, state.sample2);
      Object.assign(lastSimilarity, {
        token, same: { argmax: same.argmax, values: Array.from(same.values) },
        token2, second: { argmax: other.argmax },
        correspondence: { argmax: corr.argmax },
      });
      markToken($("map").getContext("2d"), $("map"), a.grid, token, "#fff");
      drawHeat($("sim"), same, [[token, "#fff"]]);
      drawHeat($("sim2"), other, [[token2, "#fff"]]);
      drawHeat($("corr"), corr, [[corr.argmax, "#f33"]]);
    } else {
      const why = runs(a) && runs(b) ? "click a token on the left map" : "a block does not run at this timestep";
      for (const id of ["sim", "sim2", "corr"]) clearCanvas($(id), why);
    }
    drawChart(recompute(chosenMeasures()));
    await drawLens();
    drawAttention();
  }

  function show() {
    drawing = drawing.then(render, render);
    return drawing;
  }

  function roleOf(layer) {
    if (M.profile.collapse_layers.includes(layer)) return "collapse";
    if (M.profile.anchor_layers.includes(layer)) return "anchor";
    return "not picked";
  }

  // --- controls --------------------------------------------------------------------------------
  function setup() {
    const P = M.profile;
    $("title").textContent = `Layer explorer: ${M.model} (${M.family})`;
    fill($("picks"), "Profile: ", el("span", { class: "collapse" }, `collapse ${P.collapse_layers.join(", ")}`), "; ",
      el("span", { class: "anchor" }, `anchors ${P.anchor_layers.join(", ")}`), `; timesteps ${P.timesteps.join(", ")}. Store `,
      el("code", {}, M.store), `, ${M.samples.length} samples shown.`);
    const ranges = { layer: M.layers.length, timestep: M.timesteps.length, sample: M.samples.length, frame: M.frames.length };
    for (const [id, n] of Object.entries(ranges)) {
      const input = $(id);
      input.max = n - 1;
      input.value = state[id];
      input.addEventListener("input", () => { state[id] = +input.value; show(); });
    }
    $("opacity").addEventListener("input", () => { state.opacity = $("opacity").value / 100; show(); });
    $("mask").disabled = !Object.keys(M.masks).length;
    $("mask").addEventListener("change", () => { state.mask = $("mask").checked; show(); });
    for (const [id, names] of [["layer2", M.layers], ["sample2", M.samples]]) {
      fill($(id), ...names.map((name, i) => el("option", { value: i }, name)));
      $(id).value = state[id];
      $(id).addEventListener("change", () => { state[id] = +$(id).value; show(); });
    }
    $("map").addEventListener("click", (ev) => {
      const r = $("map").getBoundingClientRect();
      state.clicked = { u: (ev.clientX - r.left) / r.width, v: (ev.clientY - r.top) / r.height };
      show();
    });
    $("chart").addEventListener("click", (ev) => {
      const r = $("chart").getBoundingClientRect();
      const n = M.layers.length, frac = (ev.clientX - r.left - 40) / (r.width - 50);
      set("layer", Math.round(frac * (n - 1)));
    });
    document.addEventListener("keydown", (ev) => {
      if (["INPUT", "SELECT", "TEXTAREA"].includes(ev.target.tagName)) return;
      const step = { ArrowRight: ["layer", 1], ArrowLeft: ["layer", -1], ArrowUp: ["timestep", 1], ArrowDown: ["timestep", -1],
        "]": ["frame", 1], "[": ["frame", -1], "=": ["sample", 1], "-": ["sample", -1] }[ev.key];
      if (!step) return;
      ev.preventDefault();
      set(step[0], state[step[0]] + step[1]);
    });
    const r = P.rule;
    $("rule").textContent = `${r.n_collapse} collapse layer(s) in the first ${r.collapse_max_depth} of the depth (most low-level, least semantic); ` +
      `${r.n_anchors} anchor layer(s), the most semantic between depths ${r.anchor_min_depth} and ${r.anchor_max_depth}; ` +
      `${r.n_timesteps} timestep(s) at or above ${r.min_timestep} where the anchors are most semantic.`;
    fill($("measures"), ...(P.measures || r.measures).filter((m) => m in P.scores).flatMap((m) => {
      const box = el("input", { type: "checkbox", value: m });
      box.checked = r.measures.includes(m);
      return [el("label", {}, box, ` ${m}`), " "];
    }));
    for (const box of document.querySelectorAll("#measures input")) box.addEventListener("change", showRule);
    $("export").addEventListener("click", exportPng);
  }

  function set(key, value) {
    const n = { layer: M.layers.length, timestep: M.timesteps.length, sample: M.samples.length, frame: M.frames.length }[key];
    state[key] = Math.max(0, Math.min(n - 1, value));
    $(key).value = state[key];
    show();
  }

  // --- export ----------------------------------------------------------------------------------
  function composite() {
    const views = ["map", "map2", "sim", "sim2", "corr"].map((id) => $(id));
    const gap = 10, head = 28;
    const out = document.createElement("canvas");
    out.width = views.reduce((s, c) => s + c.width + gap, gap);
    out.height = head + Math.max(...views.map((c) => c.height)) + gap;
    const ctx = out.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.fillStyle = "#222";
    ctx.font = "14px sans-serif";
    ctx.fillText(`${M.model}  ${M.layers[state.layer]} vs ${M.layers[state.layer2]}  t=${M.timesteps[state.timestep]}  ` +
      `${M.samples[state.sample]}  frame ${M.frames[state.frame]}`, gap, 19);
    let x = gap;
    for (const c of views) { ctx.drawImage(c, x, head); x += c.width + gap; }
    return out;
  }

  async function exportPng() {
    await drawing;
    const blob = await new Promise((resolve) => composite().toBlob(resolve, "image/png"));
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `explorer-${M.layers[state.layer]}-t${M.timesteps[state.timestep]}-${M.samples[state.sample]}-f${M.frames[state.frame]}.png`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }

  setup();
  window.explorer = { state, show, set, recompute, lastSimilarity, lastAttention, composite, ready: (showRule(), show()) };
})();
