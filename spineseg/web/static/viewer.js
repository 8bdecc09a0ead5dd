// The result page's reading viewer (NiiVue): CT + prediction/truth/levels layers, read-outs,
// windowing, keyboard shortcuts, zoom/pan, distance measurement, the spine surface in 3D.
// All URLs come from data attributes on #result, so a page showing another run points here.
"use strict";
(function () {
  const root = document.getElementById("result");
  const box = document.getElementById("viewer-box");
  const canvas = document.getElementById("viewer");
  const status = document.getElementById("viewer-status");
  const bar = document.getElementById("viewer-progress");
  const readout = { slices: document.getElementById("readout-slices"), cursor: document.getElementById("readout-cursor"),
                    window: document.getElementById("readout-window"), label: document.getElementById("readout-label") };
  const d = root.dataset;
  // [center, width] in HU, as radiologists name them
  const PRESETS = { bone: [400, 1800], soft: [40, 400], lung: [-600, 1500], brain: [40, 80], mediastinum: [50, 350] };
  const LAYERS = [  // drawn bottom to top: truth under the prediction, as in the overlay image
    { key: "truth", url: d.truthUrl, outlineUrl: d.truthOutlineUrl, name: "Ground truth", rgb: [32, 160, 255], opacity: 1, outline: true, visible: true },
    // levels start hidden beside a truth: comparing prediction and truth comes first (V shows them)
    { key: "levels", url: d.levelsUrl, outlineUrl: d.levelsUrl && d.levelsUrl.endsWith("/viewer/levels.nii") ? d.levelsUrl.replace(/\.nii$/, "-outline.nii") : undefined,
      tableUrl: d.levelsColoursUrl || d.levelsTableUrl, name: "Vertebra levels", opacity: 0.45, outline: false, visible: !d.truthUrl },
    { key: "prediction", url: d.maskUrl, outlineUrl: d.maskOutlineUrl, name: "Prediction", rgb: [255, 64, 32], opacity: 0.45, outline: false, visible: true },
  ].filter((layer) => layer.url);
  // The uncertainty map (issue 29): a second NiiVue volume over the CT, not a drawing layer; hidden at first.
  const UNCERTAINTY = d.uncertaintyUrl ? { url: d.uncertaintyUrl, name: "Uncertainty", opacity: 0.7, visible: false } : null;
  const CROSSHAIR = [1, 0.85, 0.1, 1];  // yellow: neither the prediction's red nor the truth's blue
  const state = { crop: [0, 0, 0], shape: [0, 0, 0], view: "multi", hoverTile: "axial", measuring: false, ready: false,
                  hiddenLevels: new Set() };  // vertebrae hidden from the segment list (issue 28 item 9)

  if (typeof niivue === "undefined") { status.textContent = "the viewer script did not load"; return; }
  const { DRAG_MODE, SLICE_TYPE, SHOW_RENDER, MULTIPLANAR_TYPE } = niivue;
  const MOUSE = { leftButton: { primary: DRAG_MODE.crosshair, withShift: DRAG_MODE.pan, withCtrl: DRAG_MODE.measurement },
                  rightButton: DRAG_MODE.windowing, centerButton: DRAG_MODE.pan };
  const nv = new niivue.Niivue({
    backColor: [0, 0, 0, 1], crosshairColor: CROSSHAIR, crosshairWidth: 1, show3Dcrosshair: false, isColorbar: false,
    multiplanarShowRender: SHOW_RENDER.NEVER, multiplanarLayout: MULTIPLANAR_TYPE.AUTO, multiplanarEqualSize: false, is2DSliceShader: new URLSearchParams(location.search).has("slice2d"),
    dragAndDropEnabled: false, mouseEventConfig: MOUSE, isRadiologicalConvention: true, showLegend: false,
    viewModeHotKey: "None", clipPlaneHotKey: "None", cycleClipPlaneHotKey: "None", measureLineColor: [0, 1, 1, 1], rulerColor: [0, 1, 1, 1],  // the measured line: cyan, no layer's colour
   
    measureTextColor: [0, 1, 1, 1], loadingText: "", logLevel: "warn", isOrientationTextVisible: true,
    showAllOrientationMarkers: true, sagittalNoseLeft: true, tileMargin: 6,  // as PACS viewers show them: the face to the left
  });
  const VIEWS = { multi: SLICE_TYPE.MULTIPLANAR, axial: SLICE_TYPE.AXIAL, coronal: SLICE_TYPE.CORONAL,
                  sagittal: SLICE_TYPE.SAGITTAL, render: SLICE_TYPE.RENDER };

  function progress(fraction, text) {
    bar.hidden = fraction >= 1;
    bar.value = Math.round(fraction * 100);
    status.textContent = text;
    if (fraction >= 1) state.statusText = text;  // what the 2D views say again after the 3D view's hint
  }

  // Fetch every file with a byte count (the server sends the inflated size) -> blob URLs.
  async function fetchAll(files) {
    const got = files.map(() => 0);
    const totals = files.map(() => 0);
    const show = () => {
      const total = totals.reduce((a, b) => a + b, 0);
      const have = got.reduce((a, b) => a + b, 0);
      progress(total ? 0.85 * have / total : 0, "loading the images: " + (have / 1048576).toFixed(0) + " of "
               + (total / 1048576).toFixed(0) + " MB");
    };
    return Promise.all(files.map(async (file, n) => {
      const response = await fetch(file.url);
      if (!response.ok) throw new Error(file.name + ": " + response.status + " " + (await response.text()));
      totals[n] = Number(response.headers.get("X-Decoded-Length")) || 0;
      if (file.onHeaders) file.onHeaders(response.headers);
      const reader = response.body.getReader();
      const chunks = [];
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        got[n] += value.length;
        show();
      }
      return file.raw ? niftiVoxels(chunks, got[n]) : URL.createObjectURL(new Blob(chunks));
    }));
  }

  const withStep = (url) => url + (url.includes("?") ? "&" : "?") + "step=" + state.step;
  const READY_TEXT = "ready: left-drag moves the crosshair, right-drag sets the window, shift-drag pans, "
    + "ctrl-drag measures, wheel changes slice; press ? for all shortcuts";
  const FULL_VIEW_BUDGET_S = 8;  // refine by itself when the full copy should show within this

  // One pass: the CT and every visible layer at state.step (1: every voxel), then a frame drawn
  // and read back, so "ready" means the graphics work is done, not merely queued.
  async function load(tables) {
    const t0 = performance.now();
    const files = [{ url: withStep(d.ctUrl), name: "CT", onHeaders: (headers) => {
      state.crop = (headers.get("X-Crop-Start") || "0,0,0").split(",").map(Number);
      state.shape = (headers.get("X-Canonical-Shape") || "0,0,0").split(",").map(Number);
    } }].concat(LAYERS.map((layer) => ({ url: withStep(layer.outline && layer.outlineUrl ? layer.outlineUrl : layer.url), name: layer.name, raw: true })));
    if (UNCERTAINTY) files.push({ url: withStep(UNCERTAINTY.url), name: UNCERTAINTY.name });
    const urls = await fetchAll(files);
    const t1 = performance.now();
    mark("fetched step " + state.step);
    progress(0.9, state.step > 1 ? "drawing a quick first view (" + reducedText() + ")…" : "drawing the full-resolution view…");
    const keep = state.ready ? { pos: nv.scene.crosshairPos && nv.frac2mm(nv.scene.crosshairPos), window: windowOf() } : null;
    while (nv.volumes.length) nv.removeVolume(nv.volumes[0]);
    const [low, high] = keep ? range(keep.window) : range(PRESETS.bone);
    const volumes = [{ url: urls[0], name: "ct.nii", colormap: "gray", cal_min: low, cal_max: high }];
    if (UNCERTAINTY) {  // percent: 0 (sure) transparent, 1..100 viridis: purple to yellow, no layer's red or blue
      volumes.push({ url: urls[LAYERS.length + 1], name: "uncertainty.nii", colormap: "viridis", cal_min: 1, cal_max: 100,
                     opacity: UNCERTAINTY.visible ? UNCERTAINTY.opacity : 0 });
    }
    await nv.loadVolumes(volumes);
    URL.revokeObjectURL(urls[0]);
    if (UNCERTAINTY) URL.revokeObjectURL(urls[LAYERS.length + 1]);
    LAYERS.forEach((layer, n) => {
      layer.table = tables[layer.key];
      layer.data = { [layer.outline && layer.outlineUrl ? "outline" : "fill"]: urls[n + 1] };
    });
    nv.createEmptyDrawing();
    compose();
    if (!state.ready) { nv.setSliceType(SLICE_TYPE.MULTIPLANAR); layOut(); }
    if (keep && keep.pos) { nv.scene.crosshairPos = nv.mm2frac(keep.pos); nv.drawScene(); } else centreOnSpine();
    const pixel = new Uint8Array(4);
    nv.gl.readPixels(0, 0, 1, 1, nv.gl.RGBA, nv.gl.UNSIGNED_BYTE, pixel);  // waits for the GPU
    const t2 = performance.now();
    mark("drawn step " + state.step);
    return { fetch_s: (t1 - t0) / 1000, draw_s: (t2 - t1) / 1000 };
  }

  // The quick view keeps every axial slice and every step-th pixel across (imaging.viewer_copy.preview),
  // so the wheel and the arrows move one source slice; the badge stays on the image while it is reduced.
  const reducedText = () => "1 of " + state.step + " pixels across, every slice";
  function showReduced() {
    const badge = document.getElementById("reduced-view");
    badge.hidden = state.step === 1;
    badge.textContent = "Reduced view: " + reducedText();
    root.dataset.reducedView = String(state.step > 1);
  }
  function rendererName() {  // the WebGL renderer, recorded with the timings (software or a GPU)
    const info = nv.gl.getExtension("WEBGL_debug_renderer_info");
    return String(nv.gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : nv.gl.RENDERER));
  }

  async function start() {
    await nv.attachTo("viewer");
    nv.setMouseEventConfig?.(MOUSE);
    const tables = {};
    for (const layer of LAYERS.filter((l) => l.tableUrl)) {
      const response = await fetch(layer.tableUrl);
      if (response.ok) tables[layer.key] = await response.json();
    }
    state.tables = tables;
    const voxels = Number(d.voxels) || 0;
    const asked = Number(new URLSearchParams(location.search).get("viewstep"));  // ?viewstep=N: that first view
    const forced = asked >= 1 && asked <= 4 ? Math.floor(asked) : 0;
    state.step = forced || (voxels > 48e6 ? 3 : voxels > 12e6 ? 2 : 1);
    showReduced();
    const first = await load(tables);
    root.dataset.timings = JSON.stringify({ step: state.step, renderer: rendererName(), ...first });
    state.ready = true;
    updateReadouts();
    root.dataset.viewerReady = "true";
    if (state.step === 1) { progress(1, READY_TEXT); return; }
    const estimate = (first.draw_s + first.fetch_s) * state.step ** 2;  // in-plane only: step² times the voxels
    const button = document.getElementById("full-resolution");
    button.hidden = false;
    button.textContent = "Full resolution (about " + Math.ceil(estimate) + " s here)";
    button.addEventListener("click", refine, { once: true });
    if (estimate <= FULL_VIEW_BUDGET_S && !forced) refine();  // a forced step stays until the button
    else progress(1, "quick view (" + reducedText() + ") " + READY_TEXT.slice(6) + "; the full resolution takes about "
                  + Math.ceil(estimate) + " s on this computer's graphics: press the button when wanted");
  }

  async function refine() {
    document.getElementById("full-resolution").hidden = true;
    state.step = 1;
    const full = await load(state.tables);
    showReduced();
    root.dataset.timings = JSON.stringify({ ...JSON.parse(root.dataset.timings || "{}"), full });
    root.dataset.fullResolution = "true";
    updateReadouts();
    progress(1, READY_TEXT);
  }

  // A uint8 NIfTI (the server's viewer copies: little-endian, on the CT copy's grid) -> its voxels.
  function niftiVoxels(chunks, size) {
    const bytes = new Uint8Array(size);
    let at = 0;
    for (const chunk of chunks) { bytes.set(chunk, at); at += chunk.length; }
    const view = new DataView(bytes.buffer);
    if (view.getInt32(0, true) !== 348 || view.getInt16(70, true) !== 2) throw new Error("a label copy is not uint8 NIfTI-1");
    return bytes.subarray(Math.round(view.getFloat32(108, true)));
  }

  // The label layers are one drawing on the CT's grid (no per-layer resampling pass). Each voxel's
  // code says which layers it is in: bit 0 prediction, bit 1 truth, bits 2.. the vertebra level's
  // index (0: none). The colour of every code is the layers it holds stacked bottom to top
  // (truth, prediction, levels) with each layer's own opacity, so opacity and show/hide change only
  // the colour table, never the voxels; fill/outline swaps a layer's voxels.
  const PRED = 1, TRUTH = 2, LEVEL_SHIFT = 2, MAX_LEVELS = 63;
  const layerOf = (key) => LAYERS.find((l) => l.key === key);
  const voxelsOf = (layer) => layer && layer.data && (layer.outline && layer.outlineUrl ? layer.data.outline : layer.data.fill);
  function levelIndex() {  // level value -> 1..63, in the colour table's order, then as met
    if (state.levelIndex) return state.levelIndex;
    const index = new Uint8Array(256), values = [];
    const levels = layerOf("levels");
    for (const [value] of levels && levels.table ? tableEntries(levels.table) : []) {
      if (value > 0 && value < 256 && !index[value] && values.length < MAX_LEVELS) { values.push(value); index[value] = values.length; }
    }
    state.levelIndex = { index, values };
    return state.levelIndex;
  }
  function compose() {
    if (state.editing) return;  // the editor (editor.js) owns the drawing while it edits
    const bitmap = nv.drawBitmap;
    const pred = voxelsOf(layerOf("prediction")), truth = voxelsOf(layerOf("truth")), levels = voxelsOf(layerOf("levels"));
    const { index, values } = levelIndex();
    for (let n = 0; n < bitmap.length; n++) {
      let code = (pred && pred[n] ? PRED : 0) | (truth && truth[n] ? TRUTH : 0);
      const level = levels ? levels[n] : 0;
      if (level) {
        if (!index[level] && values.length < MAX_LEVELS) { values.push(level); index[level] = values.length; }
        code |= index[level] << LEVEL_SHIFT;
      }
      bitmap[n] = code;
    }
    mark("composed");
    nv.refreshDrawing(false);
    applyColours();
    mark("drawing uploaded");
  }
  function applyColours() {
    if (state.editing) return;
    nv.drawLut = niivue.cmapper.makeDrawLut(drawColours());
    nv.refreshColormaps();  // the drawing's colours are the last row of the colour-map texture
    nv.setDrawOpacity(state.view === "render" && nv.meshes.length ? 0 : 1);  // the alpha is in each code's colour; draws
    showLegendColours();
  }
  // "over": colour c at alpha a on top of acc; acc is [r, g, b, alpha]
  function over(acc, rgb, alpha) {
    const out = alpha + acc[3] * (1 - alpha);
    if (!out) return [0, 0, 0, 0];
    return [...rgb.map((c, i) => (c * alpha + acc[i] * acc[3] * (1 - alpha)) / out), out];
  }
  function levelRgb(value) {
    const entry = new Map(tableEntries(layerOf("levels").table || {})).get(value);
    return (entry && (entry.rgb || entry.color)) || [200, 200, 200];
  }
  // The colour of one code: the layers it holds, a filled truth under the prediction (as in the
  // overlay image), the truth's outline over it (a contour hides only its one-voxel line); a level
  // is the prediction's voxel named, so where levels are shown their colour takes the prediction's place.
  function codeColour(code) {
    const truth = layerOf("truth"), pred = layerOf("prediction"), levels = layerOf("levels");
    const levelValue = levelIndex().values[(code >> LEVEL_SHIFT) - 1];
    const levelHidden = levelValue && levels && levels.visible && state.hiddenLevels.has(levelValue);
    const levelShown = levelValue && levels && levels.visible && !levelHidden;
    let acc = [0, 0, 0, 0];
    const truthShown = code & TRUTH && truth && truth.visible;
    if (truthShown && !truth.outline) acc = over(acc, truth.rgb, truth.opacity);
    if (code & PRED && pred && pred.visible && !levelShown && !levelHidden) acc = over(acc, pred.rgb, pred.opacity);
    if (levelShown) acc = over(acc, levelRgb(levelValue), levels.opacity);
    if (truthShown && truth.outline) acc = over(acc, truth.rgb, truth.opacity);
    return acc;
  }
  function drawColours() {
    const size = 256;
    const map = { R: Array(size).fill(0), G: Array(size).fill(0), B: Array(size).fill(0), A: Array(size).fill(0), labels: Array(size).fill("") };
    const levelCount = levelIndex().values.length;
    for (let code = 1; code < Math.min(size, (levelCount + 1) << LEVEL_SHIFT); code++) {
      const [r, g, b, a] = codeColour(code);
      [map.R[code], map.G[code], map.B[code], map.A[code]] = [r, g, b, a * 255].map(Math.round);
    }
    return map;
  }
  const css = ([r, g, b, a = 1]) => `rgba(${Math.round(r)}, ${Math.round(g)}, ${Math.round(b)}, ${a.toFixed(2)})`;
  // The legend's swatches show the colours as drawn now (each layer's opacity over black).
  function showLegendColours() {
    const GREY = 80;  // soft tissue in the bone window: the swatch shows the colour as it lands on the CT
    const onGrey = ([r, g, b, a]) => css([r * a + GREY * (1 - a), g * a + GREY * (1 - a), b * a + GREY * (1 - a)]);
    const colour = (code) => onGrey(codeColour(code));
    for (const item of document.querySelectorAll("#legend [data-legend]")) {
      const layer = layerOf(item.dataset.legend);
      const swatch = item.querySelector(".swatch");
      if (item.dataset.legend === "both") {
        const truth = layerOf("truth");
        swatch.style.background = colour(PRED | TRUTH);
        item.querySelector(".what").textContent = truth.outline ? "Ground truth's outline where it crosses the prediction"
          : "Prediction over ground truth (their overlap)";
        item.classList.toggle("off", !(truth.visible && layerOf("prediction").visible));
        item.hidden = colour(PRED | TRUTH) === colour(TRUTH);  // an opaque outline: nothing of its own to explain
      } else if (layer && layer.key !== "levels") {
        swatch.style.background = colour(layer.key === "truth" ? TRUTH : PRED);
        if (layer.key === "truth") {
          item.querySelector(".what").textContent = "Ground truth (" + (layer.outline ? "outline, drawn over the prediction)" : "filled, drawn under the prediction)");
        }
        item.classList.toggle("off", !layer.visible);
      } else if (layer) {
        item.classList.toggle("off", !layer.visible);
        const chips = item.querySelector(".level-chips");
        const { values } = levelIndex();
        if (chips && chips.childElementCount !== values.length) {
          chips.innerHTML = values.map((v) => {
            const name = escapeHtml(layerName(layer, v));
            return `<li class="level-chip" data-level="${v}"><input type="checkbox" data-level-show checked aria-label="Show ${name}">`
              + `<span class="swatch"></span><button type="button" class="link" data-level-jump title="Go to ${name}">${name}</button></li>`;
          }).join("");
        }
        for (const chip of chips ? chips.children : []) {
          const value = Number(chip.dataset.level);
          chip.querySelector(".swatch").style.background = onGrey([...levelRgb(value), layer.opacity]);
          chip.querySelector("[data-level-show]").checked = !state.hiddenLevels.has(value);
          chip.classList.toggle("off", state.hiddenLevels.has(value));
        }
      }
    }
  }
  function escapeHtml(text) { return String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]); }

  const marks = [];
  function mark(what) { marks.push([what, Math.round(performance.now())]); root.dataset.marks = JSON.stringify(marks); }
  function range([center, width]) { return [center - width / 2, center + width / 2]; }
  function ct() { return nv.volumes[0]; }

  function setWindow(center, width) {
    const [low, high] = range([center, Math.max(width, 1)]);
    ct().cal_min = low;
    ct().cal_max = high;
    nv.updateGLVolume();
    updateReadouts();
  }
  function windowOf() { const v = ct(); return [(v.cal_min + v.cal_max) / 2, v.cal_max - v.cal_min]; }
  function preset(name) {
    setWindow(...PRESETS[name]);
    for (const button of document.querySelectorAll("[data-window]")) button.setAttribute("aria-pressed", String(button.dataset.window === name));
  }

  function setView(view) {
    state.view = view;
    const render = view === "render";
    if (render) show3D(); else { leave3D(); if (state.statusText) status.textContent = state.statusText; }
    nv.setSliceType(VIEWS[view]);
    layOut();
    for (const button of document.querySelectorAll("[data-view]")) button.setAttribute("aria-pressed", String(button.dataset.view === view));
    if (view !== "multi" && view !== "render") state.hoverTile = view;
    updateReadouts();
  }

  // The multi-plane layout: of a few arrangements (a row, a column, axial beside or above the other
  // two, at several splits) the one whose three planes, each fitted to its tile, have the largest
  // geometric mean of drawn area, the axial (the reading plane) counted twice. A 20-slice series gets wide strips for coronal and sagittal, a
  // tall one a row or a grid: each plane a fair share whatever the shape of the series.
  function bestLayout(width, height) {
    const v = ct();
    const [x, y, z] = [1, 2, 3].map((n) => v.hdr.dims[n] * v.hdr.pixDims[n]);
    const planes = [[x, y], [x, z], [y, z]];  // axial, coronal, sagittal: width x height in mm
    const gap = 0.006;
    const candidates = [];
    const row = (widths) => { let at = 0; return widths.map((w) => { const tile = [at, 0, w - gap, 1]; at += w; return tile; }); };
    const column = (heights) => { let at = 0; return heights.map((h) => { const tile = [0, at, 1, h - gap]; at += h; return tile; }); };
    candidates.push(row([x, x, y].map((w) => w / (2 * x + y))), column([y, z, z].map((h) => h / (y + 2 * z))));
    for (let f = 0.3; f <= 0.75; f += 0.05) {
      for (let g = 0.2; g <= 0.8; g += 0.1) {
        candidates.push([[0, 0, f - gap, 1], [f, 0, 1 - f, g - gap], [f, g, 1 - f, 1 - g]]);  // axial left
        candidates.push([[0, 0, 1, f - gap], [0, f, g - gap, 1 - f], [g, f, 1 - g, 1 - f]]);  // axial on top
      }
    }
    let best = null, bestScore = -Infinity;
    for (const tiles of candidates) {
      let score = 0;
      tiles.forEach(([, , w, h], n) => {
        const scale = Math.min(w * width / planes[n][0], h * height / planes[n][1]);
        score += (n === 0 ? 2 : 1) * Math.log(Math.max(scale, 1e-6) ** 2 * planes[n][0] * planes[n][1]);
      });
      if (score > bestScore) { bestScore = score; best = tiles; }
    }
    return best.map((position, n) => ({ sliceType: [SLICE_TYPE.AXIAL, SLICE_TYPE.CORONAL, SLICE_TYPE.SAGITTAL][n], position }));
  }
  function layOut() {
    if (!nv.volumes.length) return;
    if (state.view === "multi") nv.setCustomLayout(bestLayout(canvas.width, canvas.height)); else nv.clearCustomLayout();
  }
  window.addEventListener("resize", () => setTimeout(layOut, 50));  // after NiiVue has resized the canvas

  // 3D: the surfaces of the prediction (and truth) instead of a volume render of the whole CT.
  const meshes = { loaded: false, ctRender: false };
  async function show3D() {
    if (!meshes.loaded && d.surfaceUrl) {
      meshes.loaded = true;
      status.textContent = "loading the spine surface…";
      const list = [{ url: d.surfaceUrl, name: "prediction.stl", rgba255: [255, 64, 32, 255], layer: "prediction" }];
      if (d.truthSurfaceUrl) list.push({ url: d.truthSurfaceUrl, name: "truth.stl", rgba255: [32, 160, 255, 110], layer: "truth" });
      meshes.layers = list.map((m) => m.layer);
      try {
        await nv.loadMeshes(list);
        nv.setMeshThicknessOn2D(0);
      } catch (err) { meshes.error = "the surface could not be shown: " + err; }
    }
    if (state.view === "render") status.textContent = meshes.error || "3D: drag to rotate, wheel to zoom; the CT render is an option";
    applyVolumeVisibility();
  }
  function leave3D() { applyVolumeVisibility(); }
  function showMeshes() {  // each surface follows its layer's show/hide and opacity
    (meshes.layers || []).forEach((key, n) => {
      const layer = layerOf(key), mesh = nv.meshes[n];
      if (!layer || !mesh) return;
      nv.setMeshProperty(mesh.id, "visible", layer.visible);
      nv.setMeshProperty(mesh.id, "opacity", key === "truth" ? 0.45 * layer.opacity : Math.min(1, layer.opacity / 0.45));
    });
  }
  function applyVolumeVisibility() {
    const render = state.view === "render";
    ct().opacity = render && !meshes.ctRender ? 0 : 1;
    applyColours();
    showMeshes();
    nv.updateGLVolume();
  }

  // Slices on the canonical grid: axial from inferior, coronal from posterior, sagittal from the left.
  function sliceInfo() {
    const vox = nv.frac2vox(nv.scene.crosshairPos);
    const mm = nv.frac2mm(nv.scene.crosshairPos);
    const dims = ct().hdr.dims.slice(1, 4);
    const total = state.shape[0] ? state.shape : dims;
    const at = (axis) => state.crop[axis] + vox[axis] * (axis < 2 ? state.step : 1) + 1;  // every axial slice is kept
    return { vox, mm, dims, total, axial: at(2), coronal: at(1), sagittal: at(0) };
  }
  function updateReadouts() {
    if (!state.ready) return;
    const s = sliceInfo();
    readout.slices.textContent = "Axial " + s.axial + "/" + s.total[2] + " (z " + s.mm[2].toFixed(1) + " mm) · Coronal "
      + s.coronal + "/" + s.total[1] + " (y " + s.mm[1].toFixed(1) + " mm) · Sagittal " + s.sagittal + "/" + s.total[0]
      + " (x " + s.mm[0].toFixed(1) + " mm)";
    root.dataset.axialSlice = String(s.axial);
    const [center, width] = windowOf();
    readout.window.textContent = "W " + Math.round(width) + " / L " + Math.round(center);
    document.getElementById("custom-center").value = String(Math.round(center));
    document.getElementById("custom-width").value = String(Math.round(width));
  }

  function labelsAt(vox) {
    const dims = ct().hdr.dims;
    const n = vox[0] + dims[1] * (vox[1] + dims[2] * vox[2]);
    const names = [];
    for (const layer of LAYERS) {
      const data = layer.data && (layer.data.fill || layer.data.outline);
      if (!layer.visible || !data) continue;
      const value = data[n];
      if (value > 0) names.push(layer.table ? layerName(layer, value) : layer.name);
    }
    return names;
  }
  // The levels helper's levels_colours.json: {"labels": [{"label": 20, "name": "L1", "rgb": [r, g, b]}, ...]}
  function tableEntries(table) {
    const labels = table.labels || table;
    return Array.isArray(labels) ? labels.map((e) => [Number(e.label), e]) : Object.entries(labels).map(([v, e]) => [Number(v), e]);
  }
  function layerName(layer, value) {
    const entry = new Map(tableEntries(layer.table)).get(Math.round(value));
    return entry ? (entry.name || String(value)) : "label " + value;
  }

  // HU under the mouse pointer (not only at the crosshair).
  function hover(event) {
    if (!state.ready || state.view === "render") return;
    const rect = canvas.getBoundingClientRect();
    const scale = canvas.width / rect.width;
    const mm = nv.screenXY2mm((event.clientX - rect.left) * scale, (event.clientY - rect.top) * scale);
    if (!mm || !Number.isFinite(mm[0])) { readout.cursor.textContent = "outside the image"; readout.label.textContent = ""; return; }
    const vox = ct().mm2vox([mm[0], mm[1], mm[2]]).map(Math.round);
    const dims = ct().hdr.dims;
    if (vox.some((v, n) => v < 0 || v >= dims[n + 1])) { readout.cursor.textContent = "outside the image"; return; }
    const centre = ct().vox2mm(vox, ct().matRAS);
    const hu = ct().getValue(vox[0], vox[1], vox[2]);
    readout.cursor.textContent = "HU " + Math.round(hu) + " at (" + Array.from(centre.slice(0, 3), (v) => v.toFixed(1)).join(", ") + ") mm";
    readout.cursor.dataset.hu = String(hu);
    readout.cursor.dataset.mm = centre.slice(0, 3).join(",");
    const names = labelsAt(vox);
    readout.label.textContent = names.length ? names.join(" + ") : "";
  }

  function centreOnSpine() {  // the crosshair starts in the middle of the predicted spine, when there is one
    const layer = LAYERS.find((l) => l.key === "prediction");
    const img = layer && layer.data && (layer.data.fill || layer.data.outline);
    if (!img) return;
    const dims = ct().hdr.dims;
    let sum = [0, 0, 0], count = 0;
    const step = 4;
    for (let k = 0; k < dims[3]; k += step) for (let j = 0; j < dims[2]; j += step) for (let i = 0; i < dims[1]; i += step) {
      if (img[i + dims[1] * (j + dims[2] * k)] > 0) { sum[0] += i; sum[1] += j; sum[2] += k; count++; }
    }
    if (!count) return;
    const vox = sum.map((v) => Math.round(v / count));
    nv.scene.crosshairPos = nv.vox2frac(vox);
    nv.drawScene();
  }

  function moveSlice(steps) {
    const axis = { axial: 2, coronal: 1, sagittal: 0 }[state.view === "multi" ? state.hoverTile : state.view] ?? 2;
    const delta = [0, 0, 0];
    delta[axis] = steps;
    nv.moveCrosshairInVox(...delta);
    updateReadouts();
  }

  function zoom(factor) {
    const pan = nv.scene.pan2Dxyzmm;
    nv.setPan2Dxyzmm([pan[0], pan[1], pan[2], Math.min(Math.max(pan[3] * factor, 0.5), 20)]);
  }
  function reset() {
    nv.setPan2Dxyzmm([0, 0, 0, 1]);
    nv.clearAllMeasurements?.();
    preset("bone");
    centreOnSpine();
    updateReadouts();
  }
  function toggleMeasure(on = !state.measuring) {
    state.measuring = on;
    const config = structuredClone(MOUSE);
    if (on) config.leftButton.primary = DRAG_MODE.measurement;
    nv.setMouseEventConfig(config);
    document.getElementById("measure").setAttribute("aria-pressed", String(on));
  }
  function fullscreen() {
    if (document.fullscreenElement) document.exitFullscreen(); else box.requestFullscreen?.();
  }

  async function setLayer(layer, changes) {
    Object.assign(layer, changes);
    const wanted = layer.outline && layer.outlineUrl ? "outline" : "fill";
    if (!layer.data[wanted]) {  // outline and fill are two copies of the layer, fetched when first asked for
      status.textContent = "loading the " + (layer.outline ? "outline" : "filled") + " " + layer.name.toLowerCase() + "…";
      [layer.data[wanted]] = await fetchAll([{ url: withStep(layer.outline ? layer.outlineUrl : layer.url), name: layer.name, raw: true }]);
      progress(1, layer.name + " shown as " + (layer.outline ? "outline" : "fill"));
    }
    if ("outline" in changes) compose(); else applyColours();
    if (state.view === "render") showMeshes();
    syncLayerControls();
  }
  function syncLayerControls() {
    root.dataset.layers = JSON.stringify(LAYERS.map((l) => [l.key, l.visible, l.opacity, l.outline]));
    for (const layer of LAYERS) {
      const row = document.querySelector(`[data-layer="${layer.key}"]`);
      if (!row) continue;
      row.querySelector("[data-show]").checked = layer.visible;
      row.querySelector("[data-opacity]").value = String(layer.opacity);
      const outline = row.querySelector("[data-outline]");
      if (outline) outline.checked = layer.outline;
    }
  }

  function buildLayerControls() {
    const list = document.getElementById("layers");
    for (const layer of LAYERS) {
      const row = document.createElement("li");
      row.dataset.layer = layer.key;
      const swatch = `<span class="swatch swatch-${layer.key}"></span>`;
      row.innerHTML = `${swatch}<label><input type="checkbox" data-show checked> ${layer.name}</label>
        <label>opacity <input type="range" min="0" max="1" step="0.05" data-opacity aria-label="${layer.name} opacity"></label>`
        + (layer.outlineUrl ? `<label><input type="checkbox" data-outline aria-label="${layer.name} as outline"> outline</label>` : "");
      list.appendChild(row);
      row.querySelector("[data-show]").addEventListener("change", (e) => setLayer(layer, { visible: e.target.checked }));
      row.querySelector("[data-opacity]").addEventListener("input", (e) => setLayer(layer, { opacity: Number(e.target.value) }));
      row.querySelector("[data-outline]")?.addEventListener("change", (e) => setLayer(layer, { outline: e.target.checked }));
    }
    const legend = document.getElementById("legend");
    for (const layer of LAYERS) {
      const item = document.createElement("li");
      item.dataset.legend = layer.key;
      item.innerHTML = layer.key === "levels" ? `${layer.name} (the prediction per vertebra, in place of its colour; hover a voxel to name it; `
        + `tick to show, click a name to go to it): <ul class="level-chips" aria-label="Vertebrae"></ul>`
        : `<span class="swatch swatch-${layer.key}"></span> <span class="what">${layer.name}</span>`;
      legend.appendChild(item);
      if (layer.key === "truth" && layerOf("prediction")) {
        const both = document.createElement("li");
        both.dataset.legend = "both";
        both.innerHTML = `<span class="swatch swatch-both"></span> <span class="what">Prediction over ground truth (their overlap)</span>`;
        legend.appendChild(both);
      }
    }
    if (UNCERTAINTY) buildUncertaintyControls(list, legend);
    const cross = document.createElement("li");
    cross.innerHTML = `<span class="swatch swatch-crosshair"></span> <label>Crosshair <select id="crosshair-width" aria-label="Crosshair">`
      + `<option value="1">thin</option><option value="3">thick</option><option value="0">hidden</option></select></label>`
      + ` · <span class="swatch swatch-measure"></span> Measurement`;
    legend.appendChild(cross);
    document.getElementById("crosshair-width").addEventListener("change", (e) => setCrosshair(Number(e.target.value)));
    const chips = legend.querySelector(".level-chips");
    chips?.addEventListener("change", (e) => {
      const value = Number(e.target.closest("[data-level]").dataset.level);
      if (e.target.checked) state.hiddenLevels.delete(value); else state.hiddenLevels.add(value);
      applyColours();
      nv.drawScene();
    });
    chips?.addEventListener("click", (e) => {
      if (e.target.matches("[data-level-jump]")) goToLevel(Number(e.target.closest("[data-level]").dataset.level));
    });
    syncLayerControls();
  }
  // The uncertainty map's row (show, opacity) and its legend entry: what the colours mean.
  function buildUncertaintyControls(list, legend) {
    const row = document.createElement("li");
    row.dataset.layer = "uncertainty";
    const meaning = "where the network was unsure, its probability margin (docs/quality.md): purple at 1 %, "
      + "then blue and green, yellow at 100 % (a probability of 0.5); no colour where it was sure";
    row.title = meaning;
    row.innerHTML = `<span class="swatch swatch-uncertainty"></span><label><input type="checkbox" data-show> Uncertainty</label>
      <label>opacity <input type="range" min="0" max="1" step="0.05" data-opacity aria-label="Uncertainty opacity"></label>`;
    list.appendChild(row);
    const show = row.querySelector("[data-show]"), opacity = row.querySelector("[data-opacity]");
    show.checked = UNCERTAINTY.visible;
    opacity.value = String(UNCERTAINTY.opacity);
    show.addEventListener("change", (e) => setUncertainty({ visible: e.target.checked }));
    opacity.addEventListener("input", (e) => setUncertainty({ opacity: Number(e.target.value) }));
    const item = document.createElement("li");
    item.dataset.legend = "uncertainty";
    item.title = meaning;  // the short line below, in full
    item.innerHTML = `<span class="swatch swatch-uncertainty"></span> <span class="what">Uncertainty: 1 % purple → 100 % yellow</span>`;
    legend.appendChild(item);
    root.dataset.uncertainty = JSON.stringify([UNCERTAINTY.visible, UNCERTAINTY.opacity]);
  }
  function setUncertainty(changes) {
    Object.assign(UNCERTAINTY, changes);
    if (nv.volumes.length > 1) nv.setOpacity(1, UNCERTAINTY.visible ? UNCERTAINTY.opacity : 0);
    root.dataset.uncertainty = JSON.stringify([UNCERTAINTY.visible, UNCERTAINTY.opacity]);
  }
  // The crosshair thin (1 px, the default), thick or hidden; C cycles through them.
  function setCrosshair(width) {
    nv.setCrosshairWidth(width);
    document.getElementById("crosshair-width").value = String(width);
    root.dataset.crosshairWidth = String(width);
  }
  // The crosshair to the middle of one vertebra (the mean of its voxels on the levels copy).
  function goToLevel(value) {
    const layer = layerOf("levels");
    const img = layer && layer.data && (layer.data.fill || layer.data.outline);
    if (!img) return;
    const dims = ct().hdr.dims;
    const sum = [0, 0, 0];
    let count = 0;
    for (let n = 0; n < img.length; n++) {
      if (img[n] !== value) continue;
      sum[0] += n % dims[1]; sum[1] += Math.floor(n / dims[1]) % dims[2]; sum[2] += Math.floor(n / (dims[1] * dims[2]));
      count++;
    }
    if (!count) return;
    nv.scene.crosshairPos = nv.vox2frac(sum.map((v) => Math.round(v / count)));
    nv.drawScene();
    updateReadouts();
    root.dataset.wentTo = String(value);
  }

  const KEYS = {
    ArrowUp: () => moveSlice(1), ArrowRight: () => moveSlice(1), ArrowDown: () => moveSlice(-1), ArrowLeft: () => moveSlice(-1),
    PageUp: () => moveSlice(10), PageDown: () => moveSlice(-10),
    "1": () => setView("multi"), "2": () => setView("axial"), "3": () => setView("coronal"), "4": () => setView("sagittal"), "5": () => setView("render"),
    b: () => preset("bone"), t: () => preset("soft"), l: () => preset("lung"), n: () => preset("brain"), m: () => preset("mediastinum"),
    w: () => document.getElementById("custom-width").focus(),
    p: () => toggleLayer("prediction"), g: () => toggleLayer("truth"), v: () => toggleLayer("levels"),
    "+": () => zoom(1.25), "=": () => zoom(1.25), "-": () => zoom(0.8), r: reset, "0": reset,
    d: () => toggleMeasure(), f: fullscreen, c: () => setCrosshair({ 1: 3, 3: 0, 0: 1 }[nv.opts.crosshairWidth] ?? 1), "?": () => help(true), h: () => help(true), Escape: () => help(false),
  };
  function toggleLayer(key) { const layer = LAYERS.find((l) => l.key === key); if (layer) setLayer(layer, { visible: !layer.visible }); }
  function help(open) {
    const dialog = document.getElementById("viewer-help");
    dialog.hidden = !open;
    if (open) { dialog.scrollTop = 0; dialog.focus({ preventScroll: true }); } else box.focus();  // read from the top; Tab reaches Close
  }

  box.addEventListener("keydown", (event) => {
    if (!state.ready || event.target.closest("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
    const action = KEYS[event.key] || KEYS[event.key.toLowerCase()];
    if (!action) return;
    event.preventDefault();
    event.stopPropagation();
    action();
  }, true);
  canvas.addEventListener("pointermove", hover);
  canvas.addEventListener("pointerup", () => setTimeout(updateReadouts, 0));
  canvas.addEventListener("wheel", () => setTimeout(updateReadouts, 0), { passive: true });
  canvas.addEventListener("pointerdown", (event) => {  // the tile under the pointer is the one the arrows move
    const rect = canvas.getBoundingClientRect();
    const scale = canvas.width / rect.width;
    const frac = nv.canvasPos2frac([(event.clientX - rect.left) * scale, (event.clientY - rect.top) * scale]);
    if (frac && frac[0] >= 0 && state.view === "multi" && nv.screenSlices) {
      const x = (event.clientX - rect.left) * scale, y = (event.clientY - rect.top) * scale;
      const tile = nv.screenSlices.find((s) => x >= s.leftTopWidthHeight[0] && x <= s.leftTopWidthHeight[0] + s.leftTopWidthHeight[2]
        && y >= s.leftTopWidthHeight[1] && y <= s.leftTopWidthHeight[1] + s.leftTopWidthHeight[3]);
      if (tile) state.hoverTile = ["axial", "coronal", "sagittal"][tile.axCorSag] || state.hoverTile;
    }
  });
  nv.onLocationChange = () => updateReadouts();
  nv.onMeasurementCompleted = (m) => { document.getElementById("readout-measure").textContent = "distance " + m.distance.toFixed(1) + " mm"; };

  for (const button of document.querySelectorAll("[data-view]")) button.addEventListener("click", () => setView(button.dataset.view));
  for (const button of document.querySelectorAll("[data-window]")) button.addEventListener("click", () => preset(button.dataset.window));
  document.getElementById("custom-window").addEventListener("submit", (event) => {
    event.preventDefault();
    setWindow(Number(document.getElementById("custom-center").value), Number(document.getElementById("custom-width").value));
    for (const button of document.querySelectorAll("[data-window]")) button.setAttribute("aria-pressed", "false");
  });
  document.getElementById("measure").addEventListener("click", () => toggleMeasure());
  document.getElementById("zoom-in").addEventListener("click", () => zoom(1.25));
  document.getElementById("zoom-out").addEventListener("click", () => zoom(0.8));
  document.getElementById("reset").addEventListener("click", reset);
  document.getElementById("fullscreen").addEventListener("click", fullscreen);
  document.getElementById("help-open").addEventListener("click", () => help(true));
  document.getElementById("help-close").addEventListener("click", () => help(false));
  document.getElementById("ct-render")?.addEventListener("change", (event) => { meshes.ctRender = event.target.checked; applyVolumeVisibility(); });

  // The viewer takes the window's height below its top (at least 360 px), whatever the toolbar's rows.
  function fitHeight() {
    if (document.fullscreenElement) { box.style.height = ""; return; }
    const top = box.getBoundingClientRect().top + window.scrollY;
    const height = Math.max(360, Math.round(window.innerHeight - top - 16));
    box.style.height = height + "px";
    const side = document.querySelector(".viewer-side");  // beside the canvas it scrolls within its height
    side.style.maxHeight = Math.abs(side.getBoundingClientRect().top - box.getBoundingClientRect().top) < 40 ? height + "px" : "";
  }
  fitHeight();
  window.addEventListener("resize", fitHeight);
  document.addEventListener("fullscreenchange", fitHeight);

  buildLayerControls();
  window.spineViewer = { nv, state, setView, preset, moveSlice, layers: LAYERS, refine, compose, mouse: MOUSE,
                         sliceInfo: () => sliceInfo() };
  start().catch((err) => { progress(1, "the viewer failed: " + err.message); console.error(err); });
})();
