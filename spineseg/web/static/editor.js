// Corrections on the result page (issue 32): the study's truth and its versions, the corrected
// vertebrae beside the model's, and the label editor. The editor uses NiiVue's own drawing (its
// pen, pen size, filled pen and drawing bitmap, on the viewer CT's voxels at full resolution);
// what it adds: the label map as the drawing (VerSe ids), an undo/redo history of voxel changes
// (NiiVue's undo has no redo), per-vertebra rename / merge / remove on the whole volume, a split at
// a line drawn with NiiVue's pen, grow/shrink by bone in 3D, and saving the drawing as a NIfTI with the viewer copy's own header, so the server puts every voxel
// back where it was drawn.
"use strict";
(function () {
  const panel = document.getElementById("corrections");
  if (!panel) return;
  const d = panel.dataset;
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const $ = (id) => document.getElementById(id);
  const say = (text) => { const s = $("edit-status"); if (s) s.textContent = text; };
  const UNNAMED_BASE = 100;
  const HISTORY = 100;  // steps kept for undo
  const SPLIT_MARK = 255;  // the pen value of the line a split is drawn with (never a label)
  const ed = { on: false, labels: null, header: null, base: null, undo: [], redo: [], started: 0, tool: "brush", pen: 0,
               splitting: null };
  let info = { versions: [], levels: [], truth: null };

  const levelName = (value) => value > UNNAMED_BASE ? "unnamed " + (value - UNNAMED_BASE)
    : (info.levels.find((l) => l.label === value) || { name: "label " + value }).name;
  const levelRgb = (value) => value > UNNAMED_BASE ? [120, 130, 170]
    : (info.levels.find((l) => l.label === value) || { rgb: [200, 200, 200] }).rgb;
  const fmt = (v, digits = 1) => v === null || v === undefined ? "–" : Number(v).toFixed(digits);
  const esc = (text) => String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));

  async function loadInfo() {
    const response = await fetch(d.listUrl);
    if (!response.ok) { say("the corrections could not be read: " + response.status); return; }
    info = await response.json();
    $("truth-source").textContent = info.truth ? "Truth: " + info.truth.text + "." : "Truth: none yet.";
    $("truth-source").dataset.kind = info.truth ? info.truth.kind : "";
    const trained = (info.runs_in_training || {})[d.runId];
    $("training-note").hidden = !trained;  // item 4: say what this run's figures are measured on
    showVersions();
    showComparison();
  }

  function showVersions() {
    const box = $("correction-versions");
    if (!info.versions.length) { box.innerHTML = ""; return; }
    const rows = info.versions.slice().reverse().map((v) => {
      const e = v.effort || {};
      return `<tr data-version="${v.version}"><td>v${v.version}${v.latest ? " (truth now)" : ""}</td><td>${esc(v.created_by)}</td>
        <td>${esc(v.created_at.slice(0, 16).replace("T", " "))}</td><td><code>${esc(v.model_version || "")}</code></td>
        <td>${v.base_version ? "v" + v.base_version : "the run"}</td>
        <td>${(e.voxels_changed || 0).toLocaleString("en")} (${fmt(100 * (e.share_changed || 0))} %)</td>
        <td>${e.levels_renamed || 0}${(e.renamed || []).length ? " (" + e.renamed.map((r) => esc(r.from) + "→" + esc(r.to)).join(", ") + ")" : ""}</td>
        <td>${v.edit_seconds === null ? "–" : fmt(v.edit_seconds, 0) + " s"}</td><td><a href="${v.download}" download>labels</a></td></tr>`;
    }).join("");
    box.innerHTML = `<h3>Versions</h3><table class="list" id="versions-table"><thead><tr><th>Version</th><th>By</th><th>At (UTC)</th>
      <th>Edited on</th><th>Started from</th><th>Voxels changed</th><th>Levels renamed</th><th>Edit time</th><th></th></tr></thead>
      <tbody>${rows}</tbody></table>`;
  }

  // The corrected vertebrae beside the model's, level by level.
  function showComparison() {
    const box = $("correction-compare");
    const latest = info.versions[info.versions.length - 1];
    if (!latest) { box.innerHTML = ""; return; }
    const model = JSON.parse($("model-vertebrae").textContent || "[]");
    const names = [];
    for (const v of [...model, ...latest.vertebrae]) if (!names.includes(v.name)) names.push(v.name);
    const byName = (list, name) => list.find((v) => v.name === name);
    const heights = (v) => v ? [v.measures.height_anterior_mm, v.measures.height_middle_mm, v.measures.height_posterior_mm].map((h) => fmt(h)).join(" / ") : "–";
    const rows = names.map((name) => {
      const a = byName(model, name), b = byName(latest.vertebrae, name);
      return `<tr><th>${esc(name)}</th><td>${a ? fmt(a.volume_ml) : "–"}</td><td>${b ? fmt(b.volume_ml) : "–"}</td>
        <td>${a ? fmt(a.measures.hu_mean) : "–"}</td><td>${b ? fmt(b.measures.hu_mean) : "–"}</td>
        <td>${heights(a)}</td><td>${heights(b)}</td>
        <td>${a && a.measures.genant_grade !== null && a.measures.genant_grade !== undefined ? a.measures.genant_grade : "–"}</td>
        <td>${b && b.measures.genant_grade !== null && b.measures.genant_grade !== undefined ? b.measures.genant_grade : "–"}</td></tr>`;
    }).join("");
    box.innerHTML = `<h3>Vertebrae: the model's and correction v${latest.version}'s</h3>
      <table class="list" id="compare-table"><thead><tr><th>Level</th><th>Volume mL (model)</th><th>Volume mL (corrected)</th>
      <th>HU mean (model)</th><th>HU mean (corrected)</th><th>Heights A/M/P mm (model)</th><th>Heights A/M/P mm (corrected)</th>
      <th>Genant (model)</th><th>Genant (corrected)</th></tr></thead><tbody>${rows}</tbody></table>
      <p><small>Spine volume: model ${fmt(JSON.parse(panel.dataset.modelVolume || "null"))} mL, corrected ${fmt(latest.spine_volume_ml)} mL.</small></p>`;
  }

  // ---- the editor ----
  const viewer = () => window.spineViewer;

  function drawColours() {
    const map = { R: Array(256).fill(0), G: Array(256).fill(0), B: Array(256).fill(0), A: Array(256).fill(0), labels: Array(256).fill("") };
    for (let value = 1; value < 256; value++) {
      const [r, g, b] = levelRgb(value);
      [map.R[value], map.G[value], map.B[value], map.A[value]] = [r, g, b, 150];
      map.labels[value] = levelName(value);
    }
    return map;
  }

  function paint() {
    const { nv } = viewer();
    nv.refreshDrawing(true);
  }

  async function start() {
    const v = viewer();
    if (!v || !v.state.ready) { say("wait until the viewer has loaded"); return; }
    if (v.state.step > 1) { say("loading the full resolution first…"); await v.refine(); }
    const latest = info.versions[info.versions.length - 1];
    const url = latest ? `${d.listUrl}/${latest.version}/viewer/labels.nii?run=${d.runId}` : d.levelsUrl;
    say("loading the labels to edit…");
    const response = await fetch(url);
    if (!response.ok) { say("the labels could not be loaded: " + response.status + " " + await response.text()); return; }
    const bytes = new Uint8Array(await response.arrayBuffer());
    const view = new DataView(bytes.buffer);
    const offset = Math.round(view.getFloat32(108, true));
    const voxels = bytes.subarray(offset);
    const { nv } = v;
    if (view.getInt16(70, true) !== 2 || voxels.length !== nv.drawBitmap.length) {
      say("the labels do not match the viewer's grid (" + voxels.length + " voxels, the viewer has " + nv.drawBitmap.length + ")");
      return;
    }
    v.state.editing = true;
    ed.header = bytes.slice(0, offset);
    ed.labels = voxels.slice();
    ed.base = latest ? latest.version : null;
    ed.undo = []; ed.redo = [];
    ed.started = performance.now();
    ed.on = true;
    nv.drawBitmap.set(ed.labels);
    nv.drawLut = niivue.cmapper.makeDrawLut(drawColours());
    nv.refreshColormaps();
    nv.setDrawOpacity(1);
    nv.opts.drawFillOverwrites = true;
    nv.setDrawingEnabled(true);
    paint();
    $("edit-tools").hidden = false;
    $("edit-panel").hidden = false;
    $("edit-start").setAttribute("aria-pressed", "true");
    $("edit-start").disabled = true;
    const present = counts();
    ed.pen = [...present.keys()].find((value) => value <= UNNAMED_BASE) || (info.levels[0] || { label: 1 }).label;
    refreshList();
    setTool("brush");
    panel.dataset.editing = "true";
    say("editing " + (latest ? "correction v" + latest.version : "the run's vertebrae") + ": left-drag in a slice paints; "
        + "wheel or arrow keys change slice");
  }

  function stop() {
    const v = viewer();
    ed.on = false;
    v.state.editing = false;
    v.nv.setDrawingEnabled(false);
    v.compose();
    $("edit-tools").hidden = true;
    $("edit-panel").hidden = true;
    $("edit-start").setAttribute("aria-pressed", "false");
    $("edit-start").disabled = false;
    delete panel.dataset.editing;
    say("");
  }

  function setTool(tool) {
    ed.tool = tool;
    for (const button of document.querySelectorAll("[data-tool]")) button.setAttribute("aria-pressed", String(button.dataset.tool === tool));
    applyPen();
  }
  function applyPen() {
    const { nv } = viewer();
    nv.opts.penSize = Number($("edit-size").value);
    nv.setPenValue(ed.tool === "eraser" ? 0 : ed.pen, ed.tool === "fill");
  }

  function counts() {
    const found = new Map();
    const bitmap = viewer().nv.drawBitmap;
    for (let n = 0; n < bitmap.length; n++) if (bitmap[n]) found.set(bitmap[n], (found.get(bitmap[n]) || 0) + 1);
    return new Map([...found.entries()].sort((a, b) => order(a[0]) - order(b[0])));
  }
  const order = (value) => value > UNNAMED_BASE ? 1000 + value : info.levels.findIndex((l) => l.label === value);

  function refreshList() {
    const present = counts();
    const options = (chosen, blank) => (blank ? `<option value="">–</option>` : "")
      + info.levels.map((l) => `<option value="${l.label}"${l.label === chosen ? " selected" : ""}>${esc(l.name)}</option>`).join("");
    $("edit-pen").innerHTML = options(ed.pen, false);
    const body = $("edit-vertebrae").querySelector("tbody");
    body.innerHTML = [...present.entries()].map(([value, count]) => {
      const [r, g, b] = levelRgb(value);
      const others = [...present.keys()].filter((o) => o !== value)
        .map((o) => `<option value="${o}">${esc(levelName(o))}</option>`).join("");
      return `<tr data-value="${value}" data-rgb="${r},${g},${b}"><th><span class="swatch"></span> ${esc(levelName(value))}</th>
        <td>${count.toLocaleString("en")}</td>
        <td><select data-rename aria-label="Rename ${esc(levelName(value))}">${options(null, true)}</select></td>
        <td><select data-merge aria-label="Merge ${esc(levelName(value))} into"><option value="">–</option>${others}</select></td>
        <td><button type="button" data-remove>Not a vertebra</button>
          <button type="button" data-split title="Then draw a line across it in one slice">Split…</button></td></tr>`;
    }).join("");
    for (const row of body.querySelectorAll("tr[data-rgb]")) row.querySelector(".swatch").style.background = `rgb(${row.dataset.rgb})`;  // CSP: no inline styles
    panel.dataset.vertebrae = JSON.stringify([...present.entries()].map(([value, count]) => [levelName(value), count]));
  }

  // One step of history: the voxels that changed, with their values before and after.
  function record() {
    const bitmap = viewer().nv.drawBitmap, before = ed.labels;
    const index = [];
    for (let n = 0; n < bitmap.length; n++) if (bitmap[n] !== before[n]) index.push(n);
    if (!index.length) return 0;
    const at = Uint32Array.from(index);
    const step = { at, before: Uint8Array.from(at, (n) => before[n]), after: Uint8Array.from(at, (n) => bitmap[n]) };
    for (const n of at) before[n] = bitmap[n];
    ed.undo.push(step);
    if (ed.undo.length > HISTORY) ed.undo.shift();
    ed.redo = [];
    syncHistory();
    return at.length;
  }
  function applyStep(step, values) {
    const bitmap = viewer().nv.drawBitmap;
    step.at.forEach((n, i) => { bitmap[n] = values[i]; ed.labels[n] = values[i]; });
    paint();
    refreshList();
    syncHistory();
  }
  function undo() { const step = ed.undo.pop(); if (step) { ed.redo.push(step); applyStep(step, step.before); say("undone"); } }
  function redo() { const step = ed.redo.pop(); if (step) { ed.undo.push(step); applyStep(step, step.after); say("redone"); } }
  function syncHistory() {
    $("edit-undo").disabled = !ed.undo.length;
    $("edit-redo").disabled = !ed.redo.length;
    panel.dataset.history = ed.undo.length + "/" + ed.redo.length;
  }

  // Every voxel of one vertebra to another value (rename, merge, or 0: not a vertebra).
  function relabel(from, to, what) {
    const bitmap = viewer().nv.drawBitmap;
    for (let n = 0; n < bitmap.length; n++) if (bitmap[n] === from) bitmap[n] = to;
    const changed = record();
    paint();
    refreshList();
    say(what + ": " + changed.toLocaleString("en") + " voxels");
  }

  // Split: the vertebra's voxels on one side of a line drawn in one slice (the line extended
  // through every slice along that slice's normal) become a new, unnamed piece.
  function beginSplit(value) {
    ed.splitting = value;
    const { nv } = viewer();
    nv.opts.penSize = 1;
    nv.setPenValue(SPLIT_MARK, false);
    say("split " + levelName(value) + ": draw a line across it in one slice (a sagittal or coronal view shows its height)");
  }
  function splitAlong(value) {
    const { nv } = viewer();
    const bitmap = nv.drawBitmap, dims = nv.back.hdr.dims, nx = dims[1], nxy = dims[1] * dims[2];
    const points = [];
    for (let n = 0; n < bitmap.length; n++) {
      if (bitmap[n] !== SPLIT_MARK) continue;
      points.push([n % nx, Math.floor(n / nx) % dims[2], Math.floor(n / nxy)]);
      bitmap[n] = ed.labels[n];  // the line itself is no label
    }
    ed.splitting = null;
    applyPen();
    const axis = [0, 1, 2].find((a) => points.every((p) => p[a] === points[0][a]));
    if (points.length < 2 || axis === undefined) { paint(); say("no split: draw the line within one slice"); return; }
    const [a, b] = [0, 1, 2].filter((x) => x !== axis);
    const mean = [a, b].map((x) => points.reduce((sum, p) => sum + p[x], 0) / points.length);
    let saa = 0, sbb = 0, sab = 0;  // the line's direction: the points' principal axis
    for (const p of points) { const u = p[a] - mean[0], v = p[b] - mean[1]; saa += u * u; sbb += v * v; sab += u * v; }
    const angle = 0.5 * Math.atan2(2 * sab, saa - sbb);
    const normal = [-Math.sin(angle), Math.cos(angle)];
    const present = counts();
    const piece = Math.max(UNNAMED_BASE, ...[...present.keys()].filter((x) => x > UNNAMED_BASE)) + 1;
    const side = [];
    for (let n = 0; n < bitmap.length; n++) {
      if (bitmap[n] !== value) continue;
      const c = [n % nx, Math.floor(n / nx) % dims[2], Math.floor(n / nxy)];
      if ((c[a] - mean[0]) * normal[0] + (c[b] - mean[1]) * normal[1] > 0) side.push(n);
    }
    if (!side.length || side.length === present.get(value)) { paint(); say("no split: the line does not cross " + levelName(value)); return; }
    for (const n of side) bitmap[n] = piece;
    const changed = record();
    paint();
    refreshList();
    say("split " + levelName(value) + ": " + changed.toLocaleString("en") + " voxels became " + levelName(piece) + " (rename it)");
  }

  // Grow / shrink by bone (issue 32 item 1's 3D aid), on the vertebra chosen under *Paint*, one
  // voxel in 3D (the six face neighbours, on the viewer's grid; neighbours outside it are not
  // looked at): grow takes every background voxel touching the vertebra whose CT value is at least
  // the threshold; shrink drops every voxel of its edge (a face neighbour not the vertebra) whose
  // CT value is below it. All changes are found first, then made, as one undoable step.
  function boneStep(grow) {
    const { nv } = viewer();
    const bitmap = nv.drawBitmap, ct = nv.back, dims = ct.hdr.dims, img = ct.img;
    const threshold = Number($("edit-bone-hu").value);
    if (!Number.isFinite(threshold)) { say("the bone threshold must be a number of HU"); return; }
    if (img.length !== bitmap.length) { say("the CT is not on the drawing's grid: nothing changed"); return; }
    const slope = Number.isFinite(ct.hdr.scl_slope) && ct.hdr.scl_slope !== 0 ? ct.hdr.scl_slope : 1;
    const inter = Number.isFinite(ct.hdr.scl_inter) ? ct.hdr.scl_inter : 0;
    const value = ed.pen, nx = dims[1], ny = dims[2], nz = dims[3], nxy = nx * ny;
    const found = [];
    for (let n = 0; n < bitmap.length; n++) {
      const label = bitmap[n];
      if (grow ? label !== 0 : label !== value) continue;
      const bone = img[n] * slope + inter >= threshold;
      if (grow !== bone) continue;
      const x = n % nx, y = Math.floor(n / nx) % ny, z = Math.floor(n / nxy);
      const around = [x > 0 ? n - 1 : -1, x < nx - 1 ? n + 1 : -1, y > 0 ? n - nx : -1, y < ny - 1 ? n + nx : -1,
                      z > 0 ? n - nxy : -1, z < nz - 1 ? n + nxy : -1];
      if (around.some((m) => m >= 0 && (grow ? bitmap[m] === value : bitmap[m] !== value))) found.push(n);
    }
    for (const n of found) bitmap[n] = grow ? value : 0;
    const changed = record();
    paint();
    refreshList();
    say((grow ? "grew " : "shrank ") + levelName(value) + " by " + changed.toLocaleString("en") + " voxels ("
        + (grow ? "bone" : "not bone") + ": " + (grow ? "≥ " : "< ") + threshold + " HU)");
  }

  async function save() {
    const unnamed = [...counts().keys()].filter((value) => value > UNNAMED_BASE);
    if (unnamed.length) { say("name or remove every vertebra before saving: " + unnamed.map(levelName).join(", ")); return; }
    const bitmap = viewer().nv.drawBitmap;
    const file = new Uint8Array(ed.header.length + bitmap.length);
    file.set(ed.header, 0);
    file.set(bitmap, ed.header.length);
    const zipped = await new Response(new Blob([file]).stream().pipeThrough(new CompressionStream("gzip"))).arrayBuffer();
    const seconds = (performance.now() - ed.started) / 1000;
    const query = new URLSearchParams({ run: d.runId, edit_seconds: seconds.toFixed(1) });
    if (ed.base !== null) query.set("base", String(ed.base));
    say("saving…");
    $("edit-save").disabled = true;
    try {
      const response = await fetch(d.listUrl + "?" + query, { method: "POST", body: zipped,
        headers: { "Content-Type": "application/octet-stream", "X-CSRF-Token": csrf } });
      const body = await response.json().catch(() => ({ detail: response.statusText }));
      if (!response.ok) { say("not saved: " + body.detail); return; }
      ed.base = body.version;
      ed.started = performance.now();
      panel.dataset.savedVersion = String(body.version);
      panel.dataset.savedSeconds = seconds.toFixed(1);
      say("saved as version " + body.version + " (" + body.effort.voxels_changed.toLocaleString("en") + " voxels changed, "
          + body.effort.levels_renamed + " level(s) renamed)");
      await loadInfo();
    } finally { $("edit-save").disabled = false; }
  }

  if (d.mayCorrect === "true") {
    $("edit-start").addEventListener("click", () => start().catch((err) => say("the editor failed: " + err.message)));
    $("edit-stop").addEventListener("click", stop);
    $("edit-save").addEventListener("click", () => save().catch((err) => say("not saved: " + err.message)));
    $("edit-undo").addEventListener("click", undo);
    $("edit-grow").addEventListener("click", () => boneStep(true));
    $("edit-shrink").addEventListener("click", () => boneStep(false));
    $("edit-redo").addEventListener("click", redo);
    for (const button of document.querySelectorAll("[data-tool]")) button.addEventListener("click", () => setTool(button.dataset.tool));
    $("edit-size").addEventListener("input", () => { $("edit-size-value").textContent = $("edit-size").value; applyPen(); });
    $("edit-pen").addEventListener("change", () => { ed.pen = Number($("edit-pen").value); if (ed.tool === "eraser") setTool("brush"); else applyPen(); });
    $("edit-vertebrae").addEventListener("change", (event) => {
      const row = event.target.closest("tr[data-value]");
      const value = Number(row.dataset.value), to = Number(event.target.value);
      if (!to) return;
      const merging = counts().has(to);
      relabel(value, to, (event.target.matches("[data-merge]") || merging ? "merged " : "renamed ") + levelName(value) + " into " + levelName(to));
    });
    $("edit-vertebrae").addEventListener("click", (event) => {
      if (event.target.matches("[data-split]")) { beginSplit(Number(event.target.closest("tr[data-value]").dataset.value)); return; }
      if (!event.target.matches("[data-remove]")) return;
      const value = Number(event.target.closest("tr[data-value]").dataset.value);
      relabel(value, 0, levelName(value) + " marked not a vertebra");
    });
    document.addEventListener("keydown", (event) => {
      if (!ed.on || !(event.ctrlKey || event.metaKey)) return;
      if (event.key.toLowerCase() === "z" && !event.shiftKey) { event.preventDefault(); undo(); }
      else if (event.key.toLowerCase() === "y" || (event.key.toLowerCase() === "z" && event.shiftKey)) { event.preventDefault(); redo(); }
    });
    const hook = () => {  // the viewer makes its NiiVue instance first
      const v = viewer();
      if (!v) { setTimeout(hook, 100); return; }
      v.nv.onDrawingChanged = (action) => {
        if (!ed.on || action !== "draw") return;
        if (ed.splitting) { splitAlong(ed.splitting); return; }
        const changed = record();
        refreshList();
        say((ed.tool === "eraser" ? "erased " : ed.tool === "fill" ? "filled " : "painted ") + changed.toLocaleString("en") + " voxels");
      };
    };
    hook();
  }
  window.spineEditor = { state: ed, reload: loadInfo };
  loadInfo().catch((err) => say("the corrections could not be read: " + err.message));
})();
